import type { IncomingMessage } from 'node:http';

/** The fixed origin every request target is resolved against: the `Host` header never takes part. */
const ORIGIN = 'http://relayhub.invalid';

/**
 * The one parse of an HTTP request target for the whole server (hubs, negotiate, upgrades, `/healthz`, the
 * example app): returns `undefined` for anything the server must answer with 400 instead of routing.
 *
 * - origin-form (`/path?query`, what browsers and the SignalR clients send): resolved against a fixed
 *   origin, so that `//host/...` stays a path and never becomes an authority;
 * - absolute-form (`http://host/path`, what proxies may send): only `http`/`https`, and only its path and
 *   query are kept (the host is not trusted for anything);
 * - anything else (`*`, a missing target, a target that does not parse) is refused;
 * - a raw backslash is refused (the parser would read it as `/`, unlike a proxy in front);
 * - a path whose percent-encoding does not decode to UTF-8 (`/%E0%A4%A`) is refused, so that no route
 *   below ever has to decode an invalid path (`decodeURIComponent` throws on it).
 *
 * Never throws.
 */
export function parseRequestTarget(req: Pick<IncomingMessage, 'url'>): URL | undefined {
  const target = req.url;
  if (typeof target !== 'string' || target.length === 0) return undefined;
  // note: the URL parser turns `\` into `/` (`/api\orders` would route as `/api/orders`, a path a proxy
  // in front never matched); no browser sends one raw.
  if (target.includes('\\')) return undefined;
  let url: URL;
  try {
    if (target.startsWith('/')) {
      url = new URL(ORIGIN + target);
    } else {
      const absolute = new URL(target);
      if (absolute.protocol !== 'http:' && absolute.protocol !== 'https:') return undefined;
      url = new URL(ORIGIN + absolute.pathname + absolute.search);
    }
  } catch {
    return undefined;
  }
  return decodePathSegment(url.pathname) === undefined ? undefined : url;
}

/** `decodeURIComponent` that answers `undefined` instead of throwing on a malformed escape. */
export function decodePathSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
