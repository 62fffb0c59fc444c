/**
 * Which Redis endpoints a send, a user's reliable inbox and a negotiating client go to. The hub's
 * endpoints backplane asks an {@link EndpointRouter} at every send; {@link DefaultEndpointRouter} is the
 * policy described on each method, and an app extends it (override one method, call `super` for the
 * rest) or decorates it (wrap an instance) to shard, pin or route by region.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { inboxEndpointOf, type EndpointType } from '../../redis/endpoints.js';

/** One endpoint as this instance sees it now. */
export interface EndpointView {
  readonly name: string;
  /** Its type on this instance (the same endpoint can be primary for some instances, secondary for others). */
  readonly type: EndpointType;
  /** Connected and answering (see the endpoints backplane for how fast an outage is noticed). */
  readonly online: boolean;
  /** This instance receives sends through it: its online primaries, else its online secondaries. */
  readonly listening: boolean;
  /** The public base URL of the instances whose primary this endpoint is, when configured. */
  readonly publicUrl?: string;
}

/** A negotiate request, as `negotiateEndpoint` sees it. */
export interface NegotiateRequest {
  readonly req: IncomingMessage;
  /**
   * The response: a router that answers the request itself (e.g. `400` when a query parameter it
   * requires is missing) ends it and returns `undefined`; the server then does nothing more.
   */
  readonly res: ServerResponse;
  /** The request URL, parsed (`url.searchParams` for the query). */
  readonly url: URL;
  /** The hub's path, e.g. `/hubs/chat`. */
  readonly hub: string;
}

export interface EndpointRouter {
  /**
   * The endpoints a broadcast (`clients.all`, `allExcept`, `others`) is published to.
   * Default: every online endpoint (each instance hears it on the one it listens on).
   */
  endpointsForBroadcast(endpoints: readonly EndpointView[]): readonly EndpointView[];
  /**
   * The endpoints a send to group `group` is published to (once per group of a multi-group send).
   * Default: every online endpoint.
   */
  endpointsForGroup(group: string, endpoints: readonly EndpointView[]): readonly EndpointView[];
  /**
   * The endpoints a send to user `userId` (at most once, `clients.user`) is published to.
   * Default: every online endpoint.
   */
  endpointsForUser(userId: string, endpoints: readonly EndpointView[]): readonly EndpointView[];
  /**
   * The endpoints a send (or a group add/remove, or a client-result invocation) to connection
   * `connectionId` goes to. `owner` is the endpoint this instance serves it through when the connection is
   * on this instance, `undefined` when it is on another one.
   * Default: the owning endpoint for a local connection; every online endpoint for any other.
   */
  endpointsForConnection(
    connectionId: string,
    endpoints: readonly EndpointView[],
    owner: EndpointView | undefined,
  ): readonly EndpointView[];
  /**
   * The endpoint holding user `userId`'s reliable inbox. Every instance and outbox worker must answer
   * the same for the same user, whatever is online: `endpoints` lists every endpoint, online or not.
   * Default: `inboxEndpointOf(userId, endpoints)`, a rendezvous hash over every endpoint's name.
   */
  inboxEndpoint(userId: string, endpoints: readonly EndpointView[]): EndpointView;
  /**
   * The endpoint a negotiating client is served through; `undefined` when none can serve it (the server
   * answers 503) or when the router answered the request itself (`request.res` ended). When the endpoint
   * has a `publicUrl` that is not this instance's own, the server answers with a SignalR redirect.
   * Default: a random online primary; else a random online secondary; else `undefined`.
   */
  negotiateEndpoint(
    request: NegotiateRequest,
    endpoints: readonly EndpointView[],
  ): EndpointView | undefined | Promise<EndpointView | undefined>;
}

const online = (endpoints: readonly EndpointView[]) => endpoints.filter((e) => e.online);

const pick = <T>(items: readonly T[]): T | undefined => items[Math.floor(Math.random() * items.length)];

/** The default policy; see each method of {@link EndpointRouter}. Extend it to change one decision. */
export class DefaultEndpointRouter implements EndpointRouter {
  endpointsForBroadcast(endpoints: readonly EndpointView[]): readonly EndpointView[] {
    return online(endpoints);
  }

  endpointsForGroup(_group: string, endpoints: readonly EndpointView[]): readonly EndpointView[] {
    return online(endpoints);
  }

  endpointsForUser(_userId: string, endpoints: readonly EndpointView[]): readonly EndpointView[] {
    return online(endpoints);
  }

  endpointsForConnection(
    _connectionId: string,
    endpoints: readonly EndpointView[],
    owner: EndpointView | undefined,
  ): readonly EndpointView[] {
    return owner ? [owner] : online(endpoints);
  }

  inboxEndpoint(userId: string, endpoints: readonly EndpointView[]): EndpointView {
    return inboxEndpointOf(userId, endpoints);
  }

  negotiateEndpoint(
    _request: NegotiateRequest,
    endpoints: readonly EndpointView[],
  ): EndpointView | undefined | Promise<EndpointView | undefined> {
    const up = online(endpoints);
    return pick(up.filter((e) => e.type === 'primary')) ?? pick(up);
  }
}
