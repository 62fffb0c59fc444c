/**
 * The backplane carries a hub's sends between the hub instances (processes) that serve it. Each hub
 * instance opens one {@link HubChannel} per hub and hands the backplane its {@link LocalHub}: the
 * connections this instance holds. The backplane decides which instances hear a send; each instance
 * resolves the audience against its own connections.
 *
 * Implementations: `MemoryBackplane` (one process), the Redis PUB/SUB backplane and the Redis Streams
 * backplane (later). They all pass the shared contract suite in `test/contract/`.
 */
export type Audience =
  | { kind: 'all'; except?: readonly string[] }
  | { kind: 'connections'; ids: readonly string[] }
  /**
   * Connections in any of the groups, each once. `notIn` skips connections that are also in those
   * groups: a backplane that carries a multi-group send once per group uses it to deliver it once.
   */
  | { kind: 'groups'; names: readonly string[]; except?: readonly string[]; notIn?: readonly string[] }
  | { kind: 'users'; ids: readonly string[] };

/** The connections of one hub on this instance, as the backplane sees them. */
export interface LocalHub {
  /** Writes `frame` (one formatted Invocation record) to every local connection in `audience`. */
  deliver(audience: Audience, frame: string): void;
  /**
   * Adds a local connection to a group; false when the connection is not on this instance. Rejects with
   * `ERR_FORBIDDEN` when the hub's `authorizeGroupJoin` hook refuses.
   */
  addToGroup(connectionId: string, group: string): Promise<boolean>;
  /** Removes a local connection from a group; false when the connection is not on this instance. */
  removeFromGroup(connectionId: string, group: string): Promise<boolean>;
  /**
   * Invokes `target` on a local connection and resolves with the client's result; `undefined` when the
   * connection is not on this instance.
   */
  invokeLocal(
    connectionId: string,
    target: string,
    args: unknown[],
    timeoutMs: number,
  ): Promise<unknown> | undefined;
}

/** What a backplane that routes by subscription needs to follow: the members this instance holds. */
export type Interest = 'connection' | 'user' | 'group';

/** How a backplane is doing, for health checks. */
export interface BackplaneHealth {
  /** `ready`: sends reach other instances; `degraded`: reconnecting, sends may fail; `down`: closed. */
  status: 'ready' | 'degraded' | 'down';
  /** Times the backplane lost its subscriptions: anything published meanwhile may have been missed. */
  possibleGaps: number;
  /** Sends that failed because the backplane was unreachable. */
  failedSends: number;
}

/** One hub's view of the backplane. */
export interface HubChannel {
  /**
   * This instance now holds a connection, the first connection of a user, or the first member of a group:
   * resolves once sends to it reach this instance (a subscription is in place).
   */
  follow(kind: Interest, name: string): Promise<void>;
  /** This instance no longer holds that connection, or any member of that user or group. */
  unfollow(kind: Interest, name: string): Promise<void>;
  /**
   * Delivers `frame` to every connection in `audience` on every instance, local ones first and without a
   * round trip. **At most once**: a connection or instance that is unreachable at that moment misses it.
   * Frames from one sender reach each connection in the order they were published.
   * Rejects with `ERR_BACKPLANE_UNAVAILABLE` when the send cannot be handed to the backplane.
   */
  publish(audience: Audience, frame: string): Promise<void>;
  /**
   * Adds a connection held by any instance to a group, resolving once the owning instance has done it.
   * Rejects with `ERR_CONNECTION_NOT_FOUND` when no instance holds the connection.
   */
  addToGroup(connectionId: string, group: string): Promise<void>;
  /** Like {@link addToGroup}, for removal. */
  removeFromGroup(connectionId: string, group: string): Promise<void>;
  /**
   * Invokes a client method on a connection held by any instance and resolves with the client's result.
   * Rejects with `ERR_CONNECTION_NOT_FOUND`, `ERR_INVOCATION_TIMEOUT`, `ERR_CONNECTION_CLOSED` or
   * `ERR_CLIENT_RESULT` (the client's handler threw).
   */
  invokeClient(connectionId: string, target: string, args: unknown[], timeoutMs: number): Promise<unknown>;
  /** Stops delivering to this hub's local connections. Idempotent. */
  close(): Promise<void>;
}

export interface Backplane {
  readonly kind: 'memory' | 'pubsub' | 'streams';
  /** Registers this instance's side of the hub named `hub` and returns its channel. */
  open(hub: string, local: LocalHub): Promise<HubChannel>;
  health(): BackplaneHealth;
  /** Closes every channel and connection of the backplane. Idempotent. */
  close(): Promise<void>;
}
