import type { Authenticate, Principal } from './auth.js';
import type { HubStats } from './client-errors.js';
import type { CallerClients, GroupManager, HubClients } from './clients.js';
import type { HubRequest } from './hub-request.js';
import type { ReliableClients } from './reliable-clients.js';

/** What every hub callback knows about the connection it runs for. */
export interface ConnectionContext {
  /** The public connection id (safe to share with other users; the connection token is not). */
  readonly connectionId: string;
  /** The authenticated user, when there is one. */
  readonly userId: string | undefined;
  /** Every claim the authenticator vouched for. */
  readonly claims: Principal['claims'];
  /**
   * The HTTP request that bound the connection's transport (the WebSocket upgrade): headers, cookies,
   * query, remote address. Like `Context.GetHttpContext()`; an immutable snapshot.
   */
  readonly request: HubRequest;
  /** Per-connection state for the app; lives as long as the connection. */
  readonly items: Map<string, unknown>;
  /** Senders relative to this connection (`caller`, `others`, `othersInGroup`) and to everyone. */
  readonly clients: CallerClients;
  readonly groups: GroupManager;
  /** Aborts when the connection ends (or, in a streaming method, when the client cancels the stream). */
  readonly signal: AbortSignal;
  /** Ends the connection with a Close message. */
  abort(error?: string): void;
}

/**
 * A hub method. Its arguments are the client's arguments, then one `AsyncIterable` per client-to-server
 * stream (in the order of the invocation's `streamIds`). Return a value (or a promise) to complete the
 * invocation; return an `AsyncIterable` from a method called with `connection.stream(...)` to stream items.
 * Throw a `HubError` to send its message to the caller.
 */
// biome-ignore lint/suspicious/noExplicitAny: hub methods take whatever JSON the client sends.
export type HubMethod = (ctx: ConnectionContext, ...args: any[]) => unknown;

/**
 * Decides whether an authenticated principal may connect to a hub (at negotiate and at the WebSocket
 * upgrade). Resolve false (or throw) to refuse with `403` (empty body).
 */
export type Authorize = (principal: Principal, request: HubRequest) => boolean | Promise<boolean>;

export interface HubDefinition {
  /** Hub methods by the name clients invoke (case-sensitive). */
  methods: Record<string, HubMethod>;
  /**
   * Who may connect to this hub: replaces the server's `authenticate` for this hub only (like
   * `[Authorize]` on one hub and `[AllowAnonymous]` on another). `null` refuses with `401` (empty body).
   * @default the server's `authenticate`
   */
  authenticate?: Authenticate;
  /**
   * Runs after `authenticate` accepted the request; false refuses with `403` (roles, scopes, tenants).
   * @default everyone authenticated may connect
   */
  authorize?: Authorize;
  /**
   * The methods that return a stream (to be called with `connection.stream(...)`) without being async
   * generator functions, which are detected. As in SignalR the hub knows before calling a method whether
   * it streams: a streaming method called with `invoke`/`send`, or another one with `stream`, is refused
   * with SignalR's error and does not run.
   */
  streams?: readonly string[];
  /** Runs once the connection has completed its handshake, before its first invocation. */
  onConnected?(ctx: ConnectionContext): void | Promise<void>;
  /** Runs once the connection has ended; `error` says why when it did not end cleanly. */
  onDisconnected?(ctx: ConnectionContext, error?: Error): void | Promise<void>;
  /** Return false to refuse an invocation; the caller gets an "unauthorized" completion error. */
  authorizeInvocation?(ctx: ConnectionContext, method: string, args: unknown[]): boolean | Promise<boolean>;
  /** Return false to refuse `groups.add(connectionId, group)`; it then rejects with `ERR_FORBIDDEN`. */
  authorizeGroupJoin?(ctx: ConnectionContext, group: string): boolean | Promise<boolean>;
}

/** Sending to a hub from outside a hub method (an HTTP handler, a job). */
export interface HubContext {
  readonly clients: HubClients;
  readonly groups: GroupManager;
  /** The reliable lane (needs the `streams` backplane). */
  readonly reliable: ReliableClients;
  /** Plain counters of this hub on this instance (client-caused errors by kind), for metrics. */
  readonly stats: HubStats;
}

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor as unknown;

/** True when `target` of `definition` returns a stream: an async generator function, or listed in `streams`. */
export function isStreamingMethod(definition: HubDefinition, target: string, method: HubMethod): boolean {
  return (
    method instanceof (AsyncGeneratorFunction as typeof Function) ||
    definition.streams?.includes(target) === true
  );
}
