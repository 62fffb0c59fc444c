/**
 * The part of `POST <hub>/negotiate` that belongs to the endpoints backplane: the router's choice, a
 * SignalR redirect to another instance, or a 503 when no endpoint is online. The redirect is the
 * negotiate response `{ url, accessToken }` of the SignalR transport protocol
 * (dotnet/aspnetcore src/SignalR/docs/specs/TransportProtocols.md): the official clients negotiate again
 * at `url` (up to 100 redirects), with `accessToken` as their bearer token from then on.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Backplane } from '../backplane.js';
import { bearerToken } from '../../hub/auth.js';
import { EndpointsBackplane } from './endpoints-backplane.js';

/** Query parameters the client adds by itself at each negotiate; not copied into the redirect URL. */
const CLIENT_PARAMS = new Set(['negotiateversion', 'usestatefulreconnect', 'access_token']);

/**
 * Runs the endpoints part of a negotiate that passed authentication; true when it answered the request
 * (redirect, 503, or the router's own answer), false when this instance serves it as usual.
 */
export async function negotiateOnEndpoints(
  backplane: Backplane,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<boolean> {
  if (!(backplane instanceof EndpointsBackplane)) return false;
  const hub = url.pathname.slice(0, -'/negotiate'.length);
  const decision = await backplane.negotiate({ req, res, url, hub });
  switch (decision.kind) {
    case 'serve':
      return false;
    case 'answered':
      return true;
    case 'unavailable':
      answer(res, 503, {
        error: 'No Redis endpoint is online: this hub cannot serve connections now. Retry shortly.',
      });
      return true;
    case 'redirect': {
      const target = new URL(`${decision.baseUrl}${hub}`);
      for (const [key, value] of url.searchParams) {
        if (!CLIENT_PARAMS.has(key.toLowerCase())) target.searchParams.append(key, value);
      }
      // note: the caller's own token goes along, so that the other instance authenticates the same user.
      const accessToken = bearerToken(req, url);
      answer(res, 200, { url: target.toString(), ...(accessToken ? { accessToken } : {}) });
      return true;
    }
  }
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
