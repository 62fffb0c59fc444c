/**
 * The backplane carries a hub's sends between the hub instances (processes) that serve it. Each hub
 * instance opens one {@link HubChannel} per hub and hands the backplane its {@link LocalHub}: the
 * connections this instance holds. The backplane decides which instances hear a send; each instance
 * resolves the audience against its own connections.
 *
 * Implementations: `MemoryBackplane` (one process), the Redis PUB/SUB backplane and the Redis Streams
 * backplane (later). They all pass the shared contract suite in `test/contract/`.
 */
import type { EncodedArguments } from '../protocol/encoded-arguments.js';

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

/** What a backplane reports to the metrics collector at scrape time. */
export interface BackplaneSample {
  /** Each Redis endpoint (password redacted) and whether this instance is connected to it. */
  endpoints: { endpoint: string; up: boolean }[];
  /** Channels this instance is subscribed to. */
  subscriptions: number;
  /** Per hub: subscribers of its broadcast channel (`PUBSUB NUMSUB`), i.e. the instances serving it. */
  channelSubscribers: Record<string, number>;
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
  /** Several {@link unfollow}s at once, in one round trip (one UNSUBSCRIBE on a Redis backplane). */
  unfollowMany(interests: readonly (readonly [Interest, string])[]): Promise<void>;
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

/** A connection as the reliable lane sees it. */
export interface ReliableRecipient {
  /**
   * Invokes a client method with an invocation id and resolves with the client's answer (its ack). The
   * lane passes the arguments as {@link EncodedArguments} (JSON text, parsed only for a protocol that needs
   * the values).
   */
  invoke(target: string, args: unknown[] | EncodedArguments, timeoutMs: number): Promise<unknown>;
  /** Writes a formatted record without waiting for an answer. */
  write(frame: string): void;
}

/** The users this instance holds connections of, for the reliable lane. */
export interface LocalUsers {
  connectionsOf(userId: string): ReliableRecipient[];
}

export interface ReliableMessage {
  userId: string;
  /** The client method to invoke. */
  target: string;
  args: unknown[];
  /**
   * Idempotency key (e.g. an outbox row id): a second send with the same key within the retention window
   * is dropped and resolves with the first one's offset and message id.
   */
  key?: string;
}

export interface ReliableSendResult {
  /** Stable id of the message: the key when one was given, else a random UUID. */
  messageId: string;
  /** The message's position in the user's inbox: gapless, from 1. */
  offset: number;
  /** True when the key had been sent before and this send was dropped. */
  duplicate: boolean;
}

export interface ReliableMetrics {
  /** Delivery wake-ups routed to this instance and not read yet. */
  lag: number;
  /** Wake-ups read and not acknowledged yet. */
  pending: number;
  delivered: number;
  acked: number;
  redeliveries: number;
  deadLetters: number;
  /** Times a user was told that messages fell out of the retention window before being acked. */
  gaps: number;
  /** Age of the oldest message being delivered to a local user and not acknowledged yet (0: none). */
  oldestUnackedAgeMs: number;
}

/** Point-to-point messages to a user: at least once, in order, acknowledged by the client application. */
export interface ReliableLane {
  /**
   * Appends a message to the user's inbox. Resolves once Redis holds it (with its offset), rejects with
   * `ERR_BACKPLANE_UNAVAILABLE` when Redis cannot be reached (then retry with the same `key`).
   */
  send(message: ReliableMessage): Promise<ReliableSendResult>;
  /** This instance now holds a connection of the user: register presence, then replay what is unacked. */
  userArrived(userId: string): Promise<void>;
  /** This instance no longer holds any connection of the user. */
  userLeft(userId: string): void;
  metrics(): Promise<ReliableMetrics>;
  close(): Promise<void>;
}

export interface Backplane {
  readonly kind: 'memory' | 'pubsub' | 'streams';
  /** Registers this instance's side of the hub named `hub` and returns its channel. */
  open(hub: string, local: LocalHub): Promise<HubChannel>;
  /** The reliable lane of the hub; only backplanes that have one (`streams`) implement it. */
  openReliable?(hub: string, users: LocalUsers): Promise<ReliableLane>;
  health(): BackplaneHealth;
  /** Samples endpoints and subscriptions for metrics (one round trip); `hubs` are the hub names. */
  sample?(hubs: readonly string[]): Promise<BackplaneSample>;
  /** Closes every channel and connection of the backplane. Idempotent. */
  close(): Promise<void>;
}
