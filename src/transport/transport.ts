import type { Frame } from '../protocol/hub-protocol.js';

/** The transports of the SignalR transport protocol, by their negotiate names. */
export type TransportKind = 'WebSockets' | 'ServerSentEvents' | 'LongPolling';

/** Every transport relayhub serves, in the order negotiate lists them (the clients' preference order). */
export const TRANSPORT_KINDS: readonly TransportKind[] = Object.freeze([
  'WebSockets',
  'ServerSentEvents',
  'LongPolling',
]);

/** What a transport tells the session that owns it. */
export interface TransportEvents {
  /** A payload from the client: a string for a WebSocket text frame, bytes for anything else. */
  data(payload: Frame): void;
  /**
   * The transport is gone. `clean` when the client ended it on purpose (WebSocket close 1000, DELETE, the
   * event stream closed); `reason` says what happened, for logs and `onDisconnected`. After the session's
   * own close() or terminate() it may or may not come; the session ignores it then.
   */
  closed(clean: boolean, reason: string): void;
}

/**
 * How one connection's bytes move between the server and its client (dotnet/aspnetcore
 * `src/SignalR/docs/specs/TransportProtocols.md`). A transport knows nothing of hub messages: the session
 * (`src/hub/connection.ts`) hands it payloads and reads its backlog to bound slow clients.
 */
export interface Transport {
  readonly kind: TransportKind;
  /** True while {@link send} reaches the client (or, for long polling, waits for its next poll). */
  readonly writable: boolean;
  /**
   * Bytes given to {@link send} that the client has not taken yet: the socket's buffer, or the data
   * waiting for a poll. The session disconnects a client whose backlog passes `maxBufferedBytesPerClient`.
   */
  readonly bufferedAmount: number;
  /** Subscribes the session; called once, before anything else. */
  bind(events: TransportEvents): void;
  send(payload: Frame): void;
  /**
   * {@link send} for a payload that never changes (the keep-alive ping), which a transport may encode
   * once and write as is. Optional: without it the session calls {@link send}.
   */
  sendConstant?(payload: Frame): void;
  /** Stops taking input from the client (TCP backpressure, or holding its next send) until {@link resume}. */
  pause(): void;
  resume(): void;
  /** Ends after what was sent reaches the client. Idempotent. */
  close(): void;
  /** Ends at once, dropping anything buffered. Idempotent. */
  terminate(): void;
  /**
   * Long polling only: settles once the data buffered at {@link close} was picked up by a poll (or after
   * a short grace period), so that the hub keeps routing polls to it until then.
   */
  readonly drained?: Promise<void>;
}
