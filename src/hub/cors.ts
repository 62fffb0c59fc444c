import type { IncomingMessage, ServerResponse } from 'node:http';
import { RelayhubError } from '../errors.js';

/** Which browser origins other than the server's own may call the hubs (and the app's routes). */
export interface CorsOptions {
  /**
   * Allowed origins: exact origins such as `'https://app.example.com'` (scheme, host and port), `'*'`
   * for any origin, or a predicate over the request's `Origin` header.
   */
  origins: readonly string[] | '*' | ((origin: string) => boolean);
  /**
   * Let browsers send cookies and HTTP auth with cross-origin requests (`Access-Control-Allow-Credentials`).
   * The official SignalR browser client sends negotiate with credentials unless `withCredentials: false`.
   * @default true
   */
  credentials?: boolean;
  /** How long browsers may cache a preflight answer, in seconds. @default 600 */
  maxAgeSeconds?: number;
}

/** The methods hub transports use: negotiate and long-polling sends (POST), polls and SSE (GET), DELETE. */
const METHODS = 'GET, POST, DELETE, OPTIONS';

/**
 * The origin policy of one server. A request without an `Origin` header (not from a browser) and a
 * same-origin request (the `Origin` names the `Host` the request was sent to) always pass; a cross-origin
 * request passes only when {@link CorsOptions.origins} allows it. Refused requests get 403: on the
 * WebSocket upgrade this is what stops cross-site WebSocket hijacking (browsers send cookies with a
 * WebSocket handshake to any origin, and CORS does not apply to WebSockets).
 */
export class CorsPolicy {
  readonly #allows: (origin: string) => boolean;
  readonly #credentials: boolean;
  readonly #maxAge: string;

  constructor(options: CorsOptions | undefined) {
    this.#credentials = options?.credentials ?? true;
    this.#maxAge = String(options?.maxAgeSeconds ?? 600);
    const origins = options?.origins;
    if (origins === undefined) this.#allows = () => false;
    else if (origins === '*') this.#allows = () => true;
    else if (typeof origins === 'function') this.#allows = origins;
    else {
      for (const origin of origins) {
        if (normalizeOrigin(origin) !== origin.toLowerCase()) {
          throw new RelayhubError('ERR_CONFIG', `cors.origins entry '${origin}' is not an origin.`, {
            remedy: "Write origins as scheme://host[:port] without a path, e.g. 'https://app.example.com'.",
          });
        }
      }
      const set = new Set(origins.map((o) => o.toLowerCase()));
      this.#allows = (origin) => set.has(origin.toLowerCase());
    }
  }

  /** Whether a request with this `Origin` header may go on. */
  allows(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    if (isSameOrigin(origin, req)) return true;
    try {
      return this.#allows(origin);
    } catch {
      return false;
    }
  }

  /**
   * Adds the CORS headers to an HTTP request from an allowed origin and answers preflights. Returns true
   * when the request has been answered (a preflight, or a 403 for an origin that is not allowed).
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    res.setHeader('Vary', 'Origin');
    if (!this.allows(req)) {
      const text = JSON.stringify({ error: `Origin '${origin}' is not allowed (cors.origins).` });
      res.writeHead(403, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return true;
    }
    res.setHeader('Access-Control-Allow-Origin', origin);
    if (this.#credentials) res.setHeader('Access-Control-Allow-Credentials', 'true');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      res.setHeader('Access-Control-Allow-Methods', METHODS);
      const headers = req.headers['access-control-request-headers'];
      if (headers) res.setHeader('Access-Control-Allow-Headers', headers);
      res.setHeader('Access-Control-Max-Age', this.#maxAge);
      res.writeHead(204).end();
      return true;
    }
    return false;
  }
}

function normalizeOrigin(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.origin === 'null' ? undefined : url.origin;
  } catch {
    return undefined;
  }
}

/** The `Origin` names the host the request was sent to (directly, or through a proxy that says so). */
function isSameOrigin(origin: string, req: IncomingMessage): boolean {
  let host: string;
  try {
    host = new URL(origin).host.toLowerCase();
  } catch {
    return false;
  }
  const forwarded = req.headers['x-forwarded-host'];
  const candidates = [req.headers.host, ...(typeof forwarded === 'string' ? forwarded.split(',') : [])];
  return candidates.some((candidate) => candidate?.trim().toLowerCase() === host);
}
