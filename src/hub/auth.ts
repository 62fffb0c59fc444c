import type { IncomingMessage } from 'node:http';
import { errors as joseErrors, jwtVerify } from 'jose';
import { RelayhubError } from '../errors.js';

/** Who is on the other end of a connection. */
export interface Principal {
  /** The user id (`sub` of a JWT). Connections of one user can be addressed with `clients.user(id)`. */
  userId?: string;
  /** Every claim the authenticator vouched for. */
  claims: Readonly<Record<string, unknown>>;
}

/**
 * Decides who sent an HTTP request (negotiate or WebSocket upgrade). Resolve `null` (or throw) to refuse it
 * with 401; no hub session is created for a refused request.
 */
export type Authenticate = (request: IncomingMessage, url: URL) => Promise<Principal | null>;

/** Everyone is welcome and nobody is a user: the default when no authenticator is configured. */
export const anonymous: Authenticate = async () => ({ claims: {} });

/**
 * Reads the bearer token the way SignalR clients send it: the `Authorization: Bearer` header, or the
 * `access_token` query parameter (browsers cannot set headers on WebSockets).
 */
export function bearerToken(request: IncomingMessage, url: URL): string | undefined {
  const header = request.headers.authorization;
  if (header?.startsWith('Bearer ')) return header.slice('Bearer '.length).trim() || undefined;
  return url.searchParams.get('access_token') ?? undefined;
}

export interface JwtOptions {
  /** The HS256 shared secret. */
  secret: string;
  /** Required `iss`, when set. */
  issuer?: string;
  /** Required `aud`, when set. */
  audience?: string;
}

/** Accepts HS256 JWTs signed with `secret`; `sub` becomes the user id. Anything else is refused. */
export function jwtAuthenticator(options: JwtOptions): Authenticate {
  if (!options.secret) {
    throw new RelayhubError('ERR_CONFIG', 'The JWT secret is empty.', {
      remedy: 'Set JWT_SECRET (or --jwt-secret) to a long random string.',
    });
  }
  const key = new TextEncoder().encode(options.secret);
  return async (request, url) => {
    const token = bearerToken(request, url);
    if (!token) return null;
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['HS256'],
        ...(options.issuer ? { issuer: options.issuer } : {}),
        ...(options.audience ? { audience: options.audience } : {}),
      });
      return { ...(payload.sub ? { userId: payload.sub } : {}), claims: payload };
    } catch (error) {
      if (error instanceof joseErrors.JOSEError) return null;
      throw error;
    }
  };
}
