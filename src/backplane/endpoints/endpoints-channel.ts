/**
 * One hub on several endpoints: an inner channel per endpoint (PUB/SUB on that endpoint's Redis), the
 * router's choice of endpoints for each send, and the message id that makes each connection receive a
 * send once however many endpoints carried it.
 */
import { RelayhubError } from '../../errors.js';
import type { Audience, HubChannel, Interest, LocalHub } from '../backplane.js';
import { DedupWindow, type DedupWindowOptions, idOf, newMessageId, tag, untag } from './dedup-window.js';
import type { EndpointRouter, EndpointView } from './endpoint-router.js';

/** What the channel needs from the backplane: the endpoints as seen now, and their inner channels. */
export interface EndpointsHost {
  readonly router: EndpointRouter;
  views(): EndpointView[];
}

const interestKey = (kind: Interest, name: string) => `${kind}\n${name}`;

/** The key under which a delivery of message `id` to `audience` is remembered. */
function deliveryKey(id: string, audience: Audience): string {
  switch (audience.kind) {
    case 'all':
      return `${id}|a`;
    case 'connections':
      return `${id}|c|${audience.ids.join(',')}`;
    case 'users':
      return `${id}|u|${audience.ids.join(',')}`;
    case 'groups':
      return `${id}|g|${audience.names.join(',')}`;
  }
}

/**
 * The LocalHub the inner channels see: it drops a delivery (or a request) it has already handled under
 * the same message id, and strips the id before handing it to the hub.
 */
export class DedupLocal implements LocalHub {
  readonly #deliveries: DedupWindow;
  readonly #requests: DedupWindow<Promise<unknown>>;

  constructor(
    private readonly hub: LocalHub,
    options: DedupWindowOptions,
  ) {
    this.#deliveries = new DedupWindow(options);
    this.#requests = new DedupWindow(options);
  }

  /**
   * A send of this instance's: the channel delivered it locally itself, so the inner channels' own local
   * delivery of it (each delivers what it publishes locally first) is dropped.
   */
  markOwn(id: string): void {
    this.#deliveries.add(`${id}|own`, true);
  }

  deliver(audience: Audience, frame: string): void {
    // note: the id first, so that a copy that is dropped is never copied out of the frame.
    const id = idOf(frame);
    if (id === undefined) return this.hub.deliver(audience, frame);
    if (this.#deliveries.get(`${id}|own`)) return;
    if (!this.#deliveries.add(deliveryKey(id, audience), true)) return;
    this.hub.deliver(audience, untag(frame).value);
  }

  addToGroup(connectionId: string, group: string): Promise<boolean> {
    return this.#once('ga', group, (g) => this.hub.addToGroup(connectionId, g));
  }

  removeFromGroup(connectionId: string, group: string): Promise<boolean> {
    return this.#once('gr', group, (g) => this.hub.removeFromGroup(connectionId, g));
  }

  invokeLocal(
    connectionId: string,
    target: string,
    args: unknown[],
    timeoutMs: number,
  ): Promise<unknown> | undefined {
    const first = args[0];
    const id = typeof first === 'string' ? untag(first).id : undefined;
    if (id === undefined) return this.hub.invokeLocal(connectionId, target, args, timeoutMs);
    const key = `inv|${id}`;
    const known = this.#requests.get(key);
    if (known) return known;
    const pending = this.hub.invokeLocal(connectionId, target, args.slice(1), timeoutMs);
    if (pending) this.#requests.add(key, pending);
    return pending;
  }

  /** Runs a tagged group request once; a copy from another endpoint gets the first one's outcome. */
  #once(kind: string, tagged: string, act: (group: string) => Promise<boolean>): Promise<boolean> {
    const { id, value } = untag(tagged);
    if (id === undefined) return act(value);
    const key = `${kind}|${id}`;
    const known = this.#requests.get(key) as Promise<boolean> | undefined;
    if (known) return known;
    const pending = act(value);
    this.#requests.add(key, pending);
    // note: "not local" (false) is forgotten: the sender's own local attempt must not stop the owner's.
    void pending.then(
      (done) => done || this.#requests.delete(key),
      () => undefined,
    );
    return pending;
  }
}

export class EndpointsChannel implements HubChannel {
  /** What this instance holds, to follow on an endpoint it starts listening on. */
  readonly #interests = new Map<string, readonly [Interest, string]>();
  readonly #inner: Map<string, HubChannel>;
  /** The endpoints whose inner channel follows the interests. */
  #listening = new Set<string>();
  #closed = false;

  /**
   * `local` is the hub's own LocalHub; `dedup` wraps it for the inner channels, which were opened with
   * it; `inner` maps each endpoint's name to its channel.
   */
  constructor(
    private readonly host: EndpointsHost,
    private readonly local: LocalHub,
    private readonly dedup: DedupLocal,
    inner: ReadonlyMap<string, HubChannel>,
  ) {
    this.#inner = new Map(inner);
  }

  /**
   * The hub is open on endpoint `name` now (an endpoint that was unreachable, attached late): its inner
   * channel replaces any earlier one, and follows the interests at once if the endpoint is listened on.
   */
  attach(name: string, channel: HubChannel): void {
    if (this.#closed) {
      void channel.close();
      return;
    }
    this.#inner.set(name, channel);
    if (!this.#listening.has(name)) return;
    for (const [kind, n] of this.#interests.values()) {
      channel.follow(kind, n).catch(() => undefined);
    }
  }

  // ---- following: on the endpoints this instance listens on ----

  async follow(kind: Interest, name: string): Promise<void> {
    if (this.#closed) return;
    this.#interests.set(interestKey(kind, name), [kind, name]);
    await Promise.all(this.#listeningChannels().map((c) => c.follow(kind, name)));
  }

  unfollow(kind: Interest, name: string): Promise<void> {
    return this.unfollowMany([[kind, name]]);
  }

  async unfollowMany(interests: readonly (readonly [Interest, string])[]): Promise<void> {
    if (this.#closed) return;
    for (const [kind, name] of interests) this.#interests.delete(interestKey(kind, name));
    await Promise.all(this.#listeningChannels().map((c) => c.unfollowMany(interests)));
  }

  /**
   * Moves the interests to the endpoints in `next`: follows everything on the new ones first, then
   * unfollows the old ones, so that nothing is missed meanwhile (copies heard on both are dropped).
   */
  async listenOn(next: ReadonlySet<string>): Promise<void> {
    if (this.#closed) return;
    const previous = this.#listening;
    this.#listening = new Set(next);
    const added = [...next].filter((name) => !previous.has(name));
    const removed = [...previous].filter((name) => !next.has(name));
    const interests = [...this.#interests.values()];
    await Promise.allSettled(
      added.map((name) =>
        Promise.all(
          interests
            .filter(([kind, n]) => this.#interests.has(interestKey(kind, n)))
            .map(([kind, n]) => this.#inner.get(name)?.follow(kind, n)),
        ),
      ),
    );
    if (interests.length === 0) return;
    await Promise.allSettled(removed.map((name) => this.#inner.get(name)?.unfollowMany(interests)));
  }

  #listeningChannels(): HubChannel[] {
    return [...this.#listening].flatMap((name) => {
      const channel = this.#inner.get(name);
      return channel ? [channel] : [];
    });
  }

  // ---- sends: to the endpoints the router picks, each connection once ----

  async publish(audience: Audience, frame: string): Promise<void> {
    if (this.#closed) throw closedError();
    const id = newMessageId();
    const tagged = tag(id, frame);
    // note: local recipients first, once; the inner channels' own local delivery is then dropped.
    this.dedup.markOwn(id);
    this.local.deliver(audience, frame);
    const routes = this.#routes(audience);
    if (routes.size === 0) throw noEndpoint();
    const outcomes = await Promise.allSettled(
      [...routes].map(([name, part]) => (this.#inner.get(name) as HubChannel).publish(part, tagged)),
    );
    // note: at most once, as on one Redis: the send fails only when no endpoint took it.
    const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed.length === outcomes.length) throw failed[0]?.reason;
  }

  /** Endpoint name → the part of `audience` the router sends through it. */
  #routes(audience: Audience): Map<string, Audience> {
    const views = this.host.views();
    const router = this.host.router;
    const routes = new Map<string, Audience>();
    const known = (picked: readonly EndpointView[]) =>
      picked.filter((e) => this.#inner.has(e.name)).map((e) => e.name);
    if (audience.kind === 'all') {
      for (const name of known(router.endpointsForBroadcast(views))) routes.set(name, audience);
      return routes;
    }
    // note: per endpoint, the members routed through it (a group, user or connection may go to several).
    const byEndpoint = new Map<string, string[]>();
    const add = (member: string, picked: readonly EndpointView[]) => {
      for (const name of known(picked)) {
        const members = byEndpoint.get(name);
        if (members) members.push(member);
        else byEndpoint.set(name, [member]);
      }
    };
    const owner = views.find((e) => e.listening);
    switch (audience.kind) {
      case 'groups':
        for (const group of new Set(audience.names)) add(group, router.endpointsForGroup(group, views));
        for (const [name, names] of byEndpoint) routes.set(name, { ...audience, names });
        return routes;
      case 'users':
        for (const user of new Set(audience.ids)) add(user, router.endpointsForUser(user, views));
        for (const [name, ids] of byEndpoint) routes.set(name, { kind: 'users', ids });
        return routes;
      case 'connections':
        for (const id of new Set(audience.ids)) {
          const local = this.#interests.has(interestKey('connection', id));
          add(id, router.endpointsForConnection(id, views, local ? owner : undefined));
        }
        for (const [name, ids] of byEndpoint) routes.set(name, { kind: 'connections', ids });
        return routes;
    }
  }

  // ---- requests to the instance holding a connection ----

  async addToGroup(connectionId: string, group: string): Promise<void> {
    if (await this.local.addToGroup(connectionId, group)) return;
    const id = newMessageId();
    await this.#request(connectionId, (c) => c.addToGroup(connectionId, tag(id, group)));
  }

  async removeFromGroup(connectionId: string, group: string): Promise<void> {
    if (await this.local.removeFromGroup(connectionId, group)) return;
    const id = newMessageId();
    await this.#request(connectionId, (c) => c.removeFromGroup(connectionId, tag(id, group)));
  }

  invokeClient(connectionId: string, target: string, args: unknown[], timeoutMs: number): Promise<unknown> {
    const local = this.local.invokeLocal(connectionId, target, args, timeoutMs);
    if (local) return local;
    const id = newMessageId();
    return this.#request(connectionId, (c) =>
      c.invokeClient(connectionId, target, [tag(id, ''), ...args], timeoutMs),
    );
  }

  /**
   * Sends a request through every endpoint the router picks for the connection (the owner acts once,
   * by message id) and takes the first answer; fails with the most telling error when none succeeds.
   */
  async #request<T>(connectionId: string, send: (channel: HubChannel) => Promise<T>): Promise<T> {
    if (this.#closed) throw closedError();
    const names = this.#routes({ kind: 'connections', ids: [connectionId] }).keys();
    const channels = [...names].map((name) => this.#inner.get(name) as HubChannel);
    if (channels.length === 0) throw noEndpoint();
    try {
      return await Promise.any(channels.map(send));
    } catch (error) {
      const errors = error instanceof AggregateError ? (error.errors as unknown[]) : [error];
      throw (
        errors.find((e) => !(e instanceof RelayhubError && e.code === 'ERR_CONNECTION_NOT_FOUND')) ??
        errors[0]
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inner.values()].map((c) => c.close()));
  }
}

const closedError = () => new RelayhubError('ERR_CLOSED', 'The backplane is closed.');

export const noEndpoint = () =>
  new RelayhubError('ERR_BACKPLANE_UNAVAILABLE', 'No Redis endpoint is online.', {
    remedy: 'The send reached this instance’s connections only; retry once an endpoint is back (health()).',
  });
