import type { Audience } from '../backplane/backplane.js';

/** Sends one invocation to a set of connections. */
export interface ClientProxy {
  /**
   * Invokes `target` on every connection of this proxy, without waiting for an answer.
   *
   * Delivery: **at most once**, no acknowledgement. It resolves when the message has been written to the
   * local connections and handed to the backplane, not when a client has processed it. A connection that
   * is not connected at that moment (or, with a Redis backplane, an instance that cannot be reached)
   * misses it. Messages from one sender reach each connection in the order they were sent. Use the
   * reliable lane for messages that must arrive.
   */
  send(target: string, ...args: unknown[]): Promise<void>;
}

/** A proxy for exactly one connection, which can also ask the client for a result. */
export interface SingleClientProxy extends ClientProxy {
  /**
   * Invokes `target` on the connection and resolves with the value its handler returned (a "client
   * result"). Rejects with `ERR_CLIENT_RESULT` when the handler throws or is missing,
   * `ERR_INVOCATION_TIMEOUT` after `clientResultTimeoutMs`, `ERR_CONNECTION_CLOSED` when the connection
   * ends first, and `ERR_CONNECTION_NOT_FOUND` when no instance holds it. Exactly one answer per call.
   */
  invoke<T = unknown>(target: string, ...args: unknown[]): Promise<T>;
}

export interface HubClients {
  /** Every connection of the hub. */
  readonly all: ClientProxy;
  /** Every connection but the ones listed. */
  allExcept(connectionIds: readonly string[]): ClientProxy;
  client(connectionId: string): SingleClientProxy;
  clients(connectionIds: readonly string[]): ClientProxy;
  /** Every connection in the group. */
  group(name: string): ClientProxy;
  groupExcept(name: string, connectionIds: readonly string[]): ClientProxy;
  /** Every connection in any of the groups, once each. */
  groups(names: readonly string[]): ClientProxy;
  /** Every connection of the user, on every instance. */
  user(userId: string): ClientProxy;
  users(userIds: readonly string[]): ClientProxy;
}

/** {@link HubClients} as seen from inside a hub method, relative to the calling connection. */
export interface CallerClients extends HubClients {
  readonly caller: SingleClientProxy;
  /** Every connection but the caller. */
  readonly others: ClientProxy;
  /** Every connection in the group but the caller. */
  othersInGroup(name: string): ClientProxy;
}

export interface GroupManager {
  /**
   * Adds a connection (held by any instance) to a group. Resolves once the owning instance has added it;
   * rejects with `ERR_CONNECTION_NOT_FOUND` when no instance holds it, `ERR_FORBIDDEN` when the hub's
   * `authorizeGroupJoin` refuses. Membership ends with the connection.
   */
  add(connectionId: string, group: string): Promise<void>;
  /** Removes a connection from a group; same rules as {@link add}. */
  remove(connectionId: string, group: string): Promise<void>;
}

/** What the proxies need from the hub: a way to send to an audience and to invoke one client. */
export interface ClientSink {
  publish(audience: Audience, target: string, args: unknown[]): Promise<void>;
  invokeClient(connectionId: string, target: string, args: unknown[]): Promise<unknown>;
}

const proxy = (sink: ClientSink, audience: Audience): ClientProxy => ({
  send: (target, ...args) => sink.publish(audience, target, args),
});

const singleProxy = (sink: ClientSink, connectionId: string): SingleClientProxy => ({
  ...proxy(sink, { kind: 'connections', ids: [connectionId] }),
  invoke: (target, ...args) => sink.invokeClient(connectionId, target, args) as Promise<never>,
});

export function hubClients(sink: ClientSink): HubClients {
  return {
    all: proxy(sink, { kind: 'all' }),
    allExcept: (ids) => proxy(sink, { kind: 'all', except: [...ids] }),
    client: (id) => singleProxy(sink, id),
    clients: (ids) => proxy(sink, { kind: 'connections', ids: [...ids] }),
    group: (name) => proxy(sink, { kind: 'groups', names: [name] }),
    groupExcept: (name, ids) => proxy(sink, { kind: 'groups', names: [name], except: [...ids] }),
    groups: (names) => proxy(sink, { kind: 'groups', names: [...names] }),
    user: (id) => proxy(sink, { kind: 'users', ids: [id] }),
    users: (ids) => proxy(sink, { kind: 'users', ids: [...ids] }),
  };
}

export function callerClients(sink: ClientSink, all: HubClients, connectionId: string): CallerClients {
  return {
    ...all,
    caller: singleProxy(sink, connectionId),
    others: proxy(sink, { kind: 'all', except: [connectionId] }),
    othersInGroup: (name) => proxy(sink, { kind: 'groups', names: [name], except: [connectionId] }),
  };
}
