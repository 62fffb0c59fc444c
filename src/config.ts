import type { Logger } from 'pino';
import { RelayhubError } from './errors.js';

/** Options of a hub server. Every option is optional; the defaults are in {@link DEFAULT_HUB_OPTIONS}. */
export interface HubOptions {
  /**
   * How often the server sends a Ping when it has sent nothing else, so that the client's server timeout
   * (30 s in the official clients) does not fire.
   * @default 15_000
   */
  keepAliveIntervalMs: number;
  /**
   * A client that sends nothing (not even a Ping) for this long is disconnected. Keep it at least twice
   * the clients' keep-alive interval (15 s in the official clients).
   * @default 30_000
   */
  clientTimeoutMs: number;
  /**
   * A WebSocket that has not completed the handshake within this time is closed.
   * @default 15_000
   */
  handshakeTimeoutMs: number;
  /**
   * A token from negotiate that no WebSocket has bound to within this time is forgotten.
   * @default 15_000
   */
  negotiateTimeoutMs: number;
  /**
   * The largest message (one record) the server accepts from a client, in bytes. A bigger one closes the
   * connection with an error.
   * @default 32_768
   */
  maximumReceiveMessageSize: number;
  /**
   * How many hub method invocations of one client run at the same time; further ones wait in order.
   * @default 1
   */
  maximumParallelInvocationsPerClient: number;
  /**
   * How many invocations of one client may wait for a free slot before the server stops reading from its
   * socket (TCP backpressure) until the queue drains.
   * @default 128
   */
  maxQueuedInvocationsPerClient: number;
  /**
   * How many items of one client-to-server stream may wait for the hub method to take them before the
   * server stops reading from the client's socket until it does.
   * @default 10
   */
  streamBufferCapacity: number;
  /**
   * How many streaming invocations of one client may run at once: stream invocations (server-to-client)
   * and invocations with upload streams (client-to-server). They take no invocation slot (as in SignalR,
   * so that a long stream does not block the client's other calls); past this cap a further one is
   * refused with a completion error (or, without an invocation id, the connection is closed).
   * @default 32
   */
  maxStreamsPerClient: number;
  /**
   * How many groups one connection may be in. A further `groups.add` rejects with a `HubError` (its text
   * reaches the hub method's caller); each group a connection is in is a Redis subscription on `pubsub`.
   * @default 1_000
   */
  maxGroupsPerConnection: number;
  /**
   * Bytes a client may leave unread (queued in the server for its socket) before it is disconnected as a
   * slow consumer, so that one client that never reads cannot grow the server's memory without limit.
   * @default 1_048_576
   */
  maxBufferedBytesPerClient: number;
  /**
   * Send hub method exceptions' messages to clients. When false, clients get a generic error unless the
   * method threw a `HubError`, whose message is always sent.
   * @default false
   */
  enableDetailedErrors: boolean;
  /**
   * How long `clients.client(id).invoke(...)` waits for the client's answer before it rejects.
   * @default 30_000
   */
  clientResultTimeoutMs: number;
  /**
   * Allow stateful reconnect (hub protocol version 2) when a client asks for it.
   * @default true
   */
  allowStatefulReconnects: boolean;
  /**
   * Bytes of unacknowledged messages kept per connection for stateful reconnect. Past it the connection
   * stops being resumable (a dropped socket then ends the connection, and the client reconnects afresh).
   * @default 100_000
   */
  statefulReconnectBufferSize: number;
  /**
   * How long a connection whose socket dropped waits for a stateful reconnect before it ends.
   * @default 30_000
   */
  statefulReconnectTimeoutMs: number;
}

export const DEFAULT_HUB_OPTIONS: Readonly<HubOptions> = Object.freeze({
  keepAliveIntervalMs: 15_000,
  clientTimeoutMs: 30_000,
  handshakeTimeoutMs: 15_000,
  negotiateTimeoutMs: 15_000,
  maximumReceiveMessageSize: 32_768,
  maximumParallelInvocationsPerClient: 1,
  maxQueuedInvocationsPerClient: 128,
  streamBufferCapacity: 10,
  maxStreamsPerClient: 32,
  maxGroupsPerConnection: 1_000,
  maxBufferedBytesPerClient: 1_048_576,
  enableDetailedErrors: false,
  clientResultTimeoutMs: 30_000,
  allowStatefulReconnects: true,
  statefulReconnectBufferSize: 100_000,
  statefulReconnectTimeoutMs: 30_000,
});

const positiveIntegers: (keyof HubOptions)[] = [
  'keepAliveIntervalMs',
  'clientTimeoutMs',
  'handshakeTimeoutMs',
  'negotiateTimeoutMs',
  'maximumReceiveMessageSize',
  'maximumParallelInvocationsPerClient',
  'maxQueuedInvocationsPerClient',
  'streamBufferCapacity',
  'maxStreamsPerClient',
  'maxGroupsPerConnection',
  'maxBufferedBytesPerClient',
  'clientResultTimeoutMs',
  'statefulReconnectBufferSize',
  'statefulReconnectTimeoutMs',
];

/** Merges `options` over the defaults once and checks the result, throwing `ERR_CONFIG` with a sentence. */
export function resolveHubOptions(options: Partial<HubOptions> = {}): HubOptions {
  const merged: HubOptions = { ...DEFAULT_HUB_OPTIONS, ...stripUndefined(options) };
  for (const key of positiveIntegers) {
    const value = merged[key];
    if (!Number.isSafeInteger(value) || (value as number) <= 0) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `Option '${key}' must be a positive integer, got ${String(value)}.`,
      );
    }
  }
  if (merged.clientTimeoutMs <= merged.keepAliveIntervalMs) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `Option 'clientTimeoutMs' (${merged.clientTimeoutMs}) must be greater than 'keepAliveIntervalMs' (${merged.keepAliveIntervalMs}).`,
      { remedy: 'Set clientTimeoutMs to about twice keepAliveIntervalMs.' },
    );
  }
  return merged;
}

export function stripUndefined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export type { Logger };
