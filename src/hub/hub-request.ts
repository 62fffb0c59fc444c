import type { IncomingMessage } from 'node:http';

/**
 * The HTTP request behind a connection, like ASP.NET's `Context.GetHttpContext()`: for `ctx.request` it is
 * the request that bound the connection's current transport (the WebSocket upgrade). An immutable snapshot
 * (bounded by the server's header size limit), not the `IncomingMessage`, so that a long-lived connection
 * keeps no socket, parser or buffers alive.
 */
export interface HubRequest {
  readonly method: string;
  /** The path as sent (still percent-encoded), without the query. */
  readonly path: string;
  /** Query parameters, decoded; the first value of a repeated key. */
  readonly query: Readonly<Record<string, string>>;
  /** Header names in lower case; a repeated header's values joined with `, `. */
  readonly headers: Readonly<Record<string, string>>;
  /** Cookies from the `Cookie` header, values decoded when they decode. */
  readonly cookies: Readonly<Record<string, string>>;
  /** The peer's address as the socket sees it (a proxy's, behind one: see `x-forwarded-for`). */
  readonly remoteAddress: string | undefined;
}

/** What `ctx.request` holds before any request bound the connection (never seen by hub code). */
export const EMPTY_REQUEST: HubRequest = Object.freeze({
  method: 'GET',
  path: '',
  query: Object.freeze({}),
  headers: Object.freeze({}),
  cookies: Object.freeze({}),
  remoteAddress: undefined,
});

/** The snapshot of `req` (whose target parsed to `url`). */
export function snapshotRequest(req: IncomingMessage, url: URL): HubRequest {
  return freezeSnapshot(
    { method: req.method, headers: req.headers, remoteAddress: req.socket?.remoteAddress },
    url.pathname,
    url.searchParams,
  );
}

/**
 * The same snapshot, taken on first use ({@link DeferredRequest.get}). A WebSocket connection keeps its
 * upgrade's request for its whole life and most apps never read it, so until then the request is kept as
 * one flat string: the method, the peer's address, the path, the query and every header (as Node merged
 * them), each length-prefixed. Node's headers object, its strings and the URL they were sliced from
 * (~650 B per idle connection) are not kept; this is about a third of that.
 */
export class DeferredRequest {
  readonly #packed: string;
  #snapshot: HubRequest | undefined;

  constructor(req: IncomingMessage, url: URL) {
    // note: a socket's address is never empty: '' stands for none.
    const parts: (string | number)[] = [];
    const add = (field: string) => parts.push(field.length, ':', field);
    add(req.method ?? 'GET');
    add(req.socket?.remoteAddress ?? '');
    add(url.pathname);
    add(url.search);
    const headers = req.headers;
    for (const name of Object.keys(headers)) {
      const value = headers[name];
      if (value === undefined) continue;
      add(name);
      add(Array.isArray(value) ? value.join(', ') : value);
    }
    // note: join() makes one flat string (no slices of the request's strings, no rope).
    this.#packed = parts.join('');
  }

  get(): HubRequest {
    this.#snapshot ??= unpack(this.#packed);
    return this.#snapshot;
  }
}

function unpack(packed: string): HubRequest {
  const fields: string[] = [];
  for (let at = 0; at < packed.length;) {
    const colon = packed.indexOf(':', at);
    const end = colon + 1 + Number(packed.slice(at, colon));
    fields.push(packed.slice(colon + 1, end));
    at = end;
  }
  const [method, address, path, search, ...pairs] = fields as [string, string, string, string, ...string[]];
  const headers: Record<string, string> = Object.create(null);
  for (let i = 0; i + 1 < pairs.length; i += 2) headers[pairs[i] as string] = pairs[i + 1] as string;
  return freezeSnapshot(
    { method, headers, remoteAddress: address === '' ? undefined : address },
    path,
    new URLSearchParams(search),
  );
}

interface SnapshotSource {
  method: string | undefined;
  headers: IncomingMessage['headers'];
  remoteAddress: string | undefined;
}

function freezeSnapshot(source: SnapshotSource, path: string, searchParams: URLSearchParams): HubRequest {
  const headers: Record<string, string> = Object.create(null);
  for (const [name, value] of Object.entries(source.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  const query: Record<string, string> = Object.create(null);
  for (const [key, value] of searchParams) if (!(key in query)) query[key] = value;
  return Object.freeze({
    method: source.method ?? 'GET',
    path,
    query: Object.freeze(query),
    headers: Object.freeze(headers),
    cookies: Object.freeze(parseCookies(headers.cookie)),
    remoteAddress: source.remoteAddress,
  });
}

function parseCookies(header: string | undefined): Record<string, string> {
  const cookies: Record<string, string> = Object.create(null);
  if (!header) return cookies;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!name || name in cookies) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    try {
      value = decodeURIComponent(value);
    } catch {
      // note: a value that does not decode is kept as sent.
    }
    cookies[name] = value;
  }
  return cookies;
}
