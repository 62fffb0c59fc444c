import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { stripUndefined } from '../config.js';
import { RelayhubError } from '../errors.js';

/**
 * Bounds of the HTTP edge: how long a client may take to send a request, and how many sockets one remote
 * address may hold. The timeouts apply to the server {@link HubServer.listen} creates; with
 * {@link HubServer.attach} set `headersTimeout`, `requestTimeout` and `keepAliveTimeout` on your own server
 * (the per-address cap applies to both).
 */
export interface HttpEdgeOptions {
  /**
   * A client must have sent its complete request headers (of any request, upgrades included) within this
   * time of opening the socket or starting the request, or the socket is answered `408` and closed
   * (Node's `headersTimeout`; Node's default is 60 s, which lets slow-header clients hold sockets).
   * @default 10_000
   */
  headersTimeoutMs: number;
  /**
   * A client must have sent its whole request (headers and body) within this time, or gets `408` and the
   * socket closes (Node's `requestTimeout`; its default is 300 s). WebSockets are not affected once
   * upgraded.
   * @default 30_000
   */
  requestTimeoutMs: number;
  /**
   * An idle keep-alive HTTP socket (between requests) is closed after this time (Node's
   * `keepAliveTimeout`). Keep it above a fronting proxy's upstream keep-alive, if it reuses sockets.
   * @default 5_000
   */
  keepAliveTimeoutMs: number;
  /**
   * How many sockets (HTTP and WebSocket together) one remote address may hold at the same time. A socket
   * over the cap is answered `503 Service Unavailable` (`Retry-After: 1`) and closed at once, before its
   * request is read. Behind a proxy every client shares the proxy's address: raise the cap (or set 0, no
   * cap) and limit per client at the proxy (`limit_conn` in `deploy/nginx.conf`).
   * @default 1_000
   */
  maxConnectionsPerAddress: number;
}

export const DEFAULT_HTTP_EDGE_OPTIONS: Readonly<HttpEdgeOptions> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxConnectionsPerAddress: 1_000,
});

/** Merges over the defaults and checks, throwing `ERR_CONFIG` with a sentence. */
export function resolveHttpEdgeOptions(options: Partial<HttpEdgeOptions> = {}): HttpEdgeOptions {
  const merged: HttpEdgeOptions = { ...DEFAULT_HTTP_EDGE_OPTIONS, ...stripUndefined(options) };
  for (const key of ['headersTimeoutMs', 'requestTimeoutMs', 'keepAliveTimeoutMs'] as const) {
    if (!Number.isSafeInteger(merged[key]) || merged[key] <= 0) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `Option '${key}' must be a positive integer, got ${merged[key]}.`,
      );
    }
  }
  if (!Number.isSafeInteger(merged.maxConnectionsPerAddress) || merged.maxConnectionsPerAddress < 0) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `Option 'maxConnectionsPerAddress' must be a non-negative integer, got ${merged.maxConnectionsPerAddress}.`,
      { remedy: 'Use 0 for no cap.' },
    );
  }
  if (merged.requestTimeoutMs < merged.headersTimeoutMs) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `Option 'requestTimeoutMs' (${merged.requestTimeoutMs}) must not be below 'headersTimeoutMs' (${merged.headersTimeoutMs}).`,
    );
  }
  return merged;
}

/** The options of `http.createServer` that carry the timeouts (checked every second, not Node's 30 s). */
export function serverTimeouts(options: HttpEdgeOptions): {
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
} {
  return {
    headersTimeout: options.headersTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    // note: Node checks the header/request timeouts on this interval (30 s by default), so a bound of 10 s
    // would really be up to 40 s.
    connectionsCheckingInterval: Math.min(1_000, options.headersTimeoutMs),
  };
}

const OVER_CAP =
  'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

/**
 * Caps the sockets per remote address on `server`. Returns a predicate telling whether a socket was refused
 * (its request, if the parser still reads one, must be ignored).
 */
export function capConnectionsPerAddress(server: Server, max: number): (socket: Socket) => boolean {
  const refused = new WeakSet<Socket>();
  if (max === 0) return () => false;
  const counts = new Map<string, number>();
  // note: prepended so that an over-cap socket is ended before the HTTP parser is attached to it.
  server.prependListener('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined) return;
    const count = counts.get(address) ?? 0;
    if (count >= max) {
      refused.add(socket);
      socket.on('error', () => socket.destroy());
      socket.end(OVER_CAP);
      return;
    }
    counts.set(address, count + 1);
    socket.once('close', () => {
      const left = (counts.get(address) ?? 1) - 1;
      if (left <= 0) counts.delete(address);
      else counts.set(address, left);
    });
  });
  return (socket) => refused.has(socket);
}
