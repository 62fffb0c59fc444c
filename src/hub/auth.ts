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

/** The claims of an anonymous principal: one frozen object, shared (no object per connection). */
const NO_CLAIMS: Readonly<Record<string, unknown>> = Object.freeze({});

/** Everyone is welcome and nobody is a user: the default when no authenticator is configured. */
export const anonymous: Authenticate = async () => ({ claims: NO_CLAIMS });

/**
 * Reads the bearer token the way SignalR clients send it: the `Authorization: Bearer` header, or the
 * `access_token` query parameter (browsers cannot set headers on WebSockets).
 */
export function bearerToken(request: IncomingMessage, url: URL): string | undefined {
  const header = request.headers.authorization;
  // note: the scheme is case-insensitive (RFC 7235 §2.1): `bearer x` is a bearer token too.
  const match = header === undefined ? null : /^Bearer +(.*)$/i.exec(header);
  if (match) return match[1]?.trim() || undefined;
  return url.searchParams.get('access_token') ?? undefined;
}

export interface JwtOptions {
  /**
   * The HS256 shared secret: at least {@link MIN_JWT_SECRET_BYTES} bytes (UTF-8), as RFC 7518 §3.2 requires
   * a key as long as the hash.
   */
  secret: string;
  /** Required `iss`, when set. */
  issuer?: string;
  /** Required `aud`, when set. */
  audience?: string;
  /**
   * When set, a token whose `iat` is older than this is refused even before its `exp` (and a token
   * without `iat` is refused).
   * @default undefined (only `exp` limits a token's life)
   */
  maxTokenAgeMs?: number;
  /**
   * Clock skew allowed between the token issuer and this server for `exp`, `nbf` and `iat`.
   * @default 5_000
   */
  clockToleranceMs?: number;
}

/** The shortest HS256 secret accepted: 256 bits (RFC 7518 §3.2). */
export const MIN_JWT_SECRET_BYTES = 32;
const DEFAULT_CLOCK_TOLERANCE_MS = 5_000;

/**
 * Accepts HS256 JWTs signed with `secret` that carry `exp` (a token without one is refused: it would be
 * valid forever); `sub` becomes the user id. Anything else is refused.
 */
export function jwtAuthenticator(options: JwtOptions): Authenticate {
  if (!options.secret) {
    throw new RelayhubError('ERR_CONFIG', 'The JWT secret is empty.', {
      remedy: 'Set JWT_SECRET (or --jwt-secret) to a long random string.',
    });
  }
  const key = new TextEncoder().encode(options.secret);
  if (key.byteLength < MIN_JWT_SECRET_BYTES) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `The JWT secret is ${key.byteLength} bytes; HS256 needs at least ${MIN_JWT_SECRET_BYTES} (RFC 7518 §3.2).`,
      { remedy: 'Set JWT_SECRET (or --jwt-secret) to a random string, e.g. `openssl rand -hex 32`.' },
    );
  }
  const { maxTokenAgeMs, clockToleranceMs = DEFAULT_CLOCK_TOLERANCE_MS } = options;
  if (maxTokenAgeMs !== undefined && !(Number.isFinite(maxTokenAgeMs) && maxTokenAgeMs > 0)) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `Option 'maxTokenAgeMs' must be a positive number, got ${maxTokenAgeMs}.`,
    );
  }
  if (!(Number.isFinite(clockToleranceMs) && clockToleranceMs >= 0)) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `Option 'clockToleranceMs' must be a non-negative number, got ${clockToleranceMs}.`,
    );
  }
  return async (request, url) => {
    const token = bearerToken(request, url);
    if (!token) return null;
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['HS256'],
        requiredClaims: ['exp'],
        clockTolerance: clockToleranceMs / 1_000,
        ...(maxTokenAgeMs !== undefined ? { maxTokenAge: maxTokenAgeMs / 1_000 } : {}),
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
