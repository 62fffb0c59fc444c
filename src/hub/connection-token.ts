import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { RelayhubError } from '../errors.js';
import type { Principal } from './auth.js';
import type { Connection } from './connection.js';
import type { HubRuntime } from './hub-runtime.js';
import { fillRandomId, ID_BYTES } from './random-ids.js';

/** The shortest shared secret accepted: 256 bits, as for the HS256 JWT secret. */
export const MIN_CONNECTION_TOKEN_SECRET_BYTES = 32;

const VERSION = 1;
const ISSUER_BYTES = 6;
const USER_TAG_BYTES = 12;
const MAC_BYTES = 16;
// note: version | connection id | expiry (ms, 48 bits) | flags | issuer | user tag, then the MAC of all that.
const AT_ID = 1;
const AT_EXPIRY = AT_ID + ID_BYTES;
const AT_FLAGS = AT_EXPIRY + 6;
const AT_ISSUER = AT_FLAGS + 1;
const AT_USER = AT_ISSUER + ISSUER_BYTES;
const AT_MAC = AT_USER + USER_TAG_BYTES;
const TOKEN_BYTES = AT_MAC + MAC_BYTES;
const TOKEN_CHARS = Math.ceil((TOKEN_BYTES * 4) / 3);
const STATEFUL = 1;

/**
 * The connection token secret `relayhub serve` uses when only JWT_SECRET is set: derived from it (an
 * HMAC, so never the JWT key itself), hence the same on every instance that shares JWT_SECRET.
 */
export function connectionTokenSecretFrom(jwtSecret: string): string {
  return createHmac('sha256', jwtSecret).update('relayhub connection token secret').digest('hex');
}

/** What a valid token says. */
export interface TokenClaims {
  connectionId: string;
  /**
   * The token itself, re-encoded from its bytes: equal to the one presented, but a string of its own
   * (the presented one is sliced from the request's URL, which a connection would otherwise keep alive).
   */
  token: string;
  /** Negotiate offered stateful reconnect. */
  stateful: boolean;
  /** This process issued it (the HTTP transports accept only those: they need affinity). */
  issuedHere: boolean;
}

export type TokenCheck =
  | { ok: true; claims: TokenClaims }
  | { ok: false; status: 403 | 404; reason: 'malformed' | 'forged' | 'expired' | 'spent' | 'other-user' };

export interface ConnectionTokenOptions {
  /**
   * The key every instance shares (at least 32 bytes): a token any of them issued is accepted by all.
   * Without one, a random key of this process: only this instance accepts its tokens (sticky sessions).
   */
  secret?: string | undefined;
  /** How long a token may open a connection after negotiate: `negotiateTimeoutMs`. */
  lifetimeMs: number;
  /** @default Date.now */
  now?: () => number;
}

/**
 * Connection tokens that need no per-instance memory: negotiate signs (HMAC-SHA256) the connection id,
 * an expiry, the stateful-reconnect flag, the issuing process and a tag of the user, and the instance a
 * socket reaches (any instance with the same secret) opens the connection from the token alone. The token
 * carries the connection id, so the id the client got at negotiate is the id it has wherever it lands; it
 * is never equal to the id (the MAC is its secret part), and the user tag is a keyed hash, so the token
 * does not show the user id in proxy logs.
 */
export class ConnectionTokens {
  readonly #key: Buffer;
  readonly #issuer = randomBytes(ISSUER_BYTES);
  readonly #lifetimeMs: number;
  readonly #now: () => number;
  /** Tokens whose connection ended on this instance, until they expire (by insertion: end time). */
  readonly #spent = new Map<string, number>();
  #anonymousTag: Buffer | undefined;
  /** Whether the key came from the options (shared) rather than this process. */
  readonly shared: boolean;

  constructor(options: ConnectionTokenOptions) {
    const { secret } = options;
    if (secret !== undefined && Buffer.byteLength(secret) < MIN_CONNECTION_TOKEN_SECRET_BYTES) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `The connection token secret is ${Buffer.byteLength(secret)} bytes; it needs at least ${MIN_CONNECTION_TOKEN_SECRET_BYTES}.`,
        { remedy: 'Set CONNECTION_TOKEN_SECRET to a random string, e.g. `openssl rand -hex 32`.' },
      );
    }
    this.shared = secret !== undefined;
    this.#key = secret === undefined ? randomBytes(32) : Buffer.from(secret, 'utf8');
    this.#lifetimeMs = options.lifetimeMs;
    this.#now = options.now ?? Date.now;
  }

  /** A new, unguessable connection id and its token for `userId` (undefined: anonymous). */
  issue(userId: string | undefined, stateful: boolean): { connectionId: string; token: string } {
    const bytes = Buffer.alloc(TOKEN_BYTES);
    bytes[0] = VERSION;
    fillRandomId(bytes, AT_ID);
    bytes.writeUIntBE(this.#now() + this.#lifetimeMs, AT_EXPIRY, 6);
    bytes[AT_FLAGS] = stateful ? STATEFUL : 0;
    this.#issuer.copy(bytes, AT_ISSUER);
    this.#userTag(userId).copy(bytes, AT_USER);
    this.#mac(bytes).copy(bytes, AT_MAC);
    return {
      connectionId: bytes.subarray(AT_ID, AT_EXPIRY).toString('base64url'),
      token: bytes.toString('base64url'),
    };
  }

  /**
   * Checks a token presented by `userId`: a token that does not parse or whose MAC is wrong (forged,
   * tampered, or from another secret), that expired, or whose connection already ended here is 404 (as
   * an unknown token always was); a valid one of another user is 403.
   */
  verify(token: string, userId: string | undefined): TokenCheck {
    if (token.length !== TOKEN_CHARS) return { ok: false, status: 404, reason: 'malformed' };
    const bytes = Buffer.from(token, 'base64url');
    // note: Buffer.from skips characters outside the alphabet, so a mangled token comes out shorter.
    const canonical = bytes.toString('base64url');
    if (bytes.length !== TOKEN_BYTES || bytes[0] !== VERSION || canonical !== token) {
      return { ok: false, status: 404, reason: 'malformed' };
    }
    if (!timingSafeEqual(this.#mac(bytes), bytes.subarray(AT_MAC))) {
      return { ok: false, status: 404, reason: 'forged' };
    }
    const expiresAt = bytes.readUIntBE(AT_EXPIRY, 6);
    if (this.#now() >= expiresAt) return { ok: false, status: 404, reason: 'expired' };
    if (this.#spent.has(token)) return { ok: false, status: 404, reason: 'spent' };
    if (!timingSafeEqual(this.#userTag(userId), bytes.subarray(AT_USER, AT_MAC))) {
      return { ok: false, status: 403, reason: 'other-user' };
    }
    return {
      ok: true,
      claims: {
        connectionId: bytes.subarray(AT_ID, AT_EXPIRY).toString('base64url'),
        token: canonical,
        stateful: ((bytes[AT_FLAGS] as number) & STATEFUL) !== 0,
        issuedHere: bytes.subarray(AT_ISSUER, AT_USER).equals(this.#issuer),
      },
    };
  }

  /**
   * Remembers that the connection of `token` ended here, so that the token cannot open it again on this
   * instance (404, as before tokens were signed) while it is still valid. Bounded: entries live at most
   * the token lifetime. Tokens that are not signed tokens (skipNegotiation, v0) are ignored.
   */
  spend(token: string): void {
    if (token.length !== TOKEN_CHARS) return;
    const bytes = Buffer.from(token, 'base64url');
    if (bytes.length !== TOKEN_BYTES) return;
    const now = this.#now();
    const expiresAt = bytes.readUIntBE(AT_EXPIRY, 6);
    for (const [spent, at] of this.#spent) {
      if (at > now) break;
      this.#spent.delete(spent);
    }
    if (expiresAt > now) this.#spent.set(token, expiresAt);
  }

  /** How many ended connections' tokens are remembered (for tests). */
  get spentCount(): number {
    return this.#spent.size;
  }

  #mac(bytes: Buffer): Buffer {
    return createHmac('sha256', this.#key)
      .update('relayhub connection token\0')
      .update(bytes.subarray(0, AT_MAC))
      .digest()
      .subarray(0, MAC_BYTES);
  }

  #userTag(userId: string | undefined): Buffer {
    // note: the anonymous tag is the same for every token: computed once, not twice per connection.
    if (userId === undefined) return (this.#anonymousTag ??= this.#tagOf(undefined));
    return this.#tagOf(userId);
  }

  #tagOf(userId: string | undefined): Buffer {
    // note: anonymous ('\0') and every user id ('\x01' + id) hash apart, the empty id included.
    return createHmac('sha256', this.#key)
      .update('relayhub connection user\0')
      .update(userId === undefined ? '\0' : `\x01${userId}`)
      .digest()
      .subarray(0, USER_TAG_BYTES);
  }
}

/**
 * The connection a socket or HTTP transport request names with `?id=`: this instance's connection with
 * that token, else (when `create`) a new one opened from a valid signed token, with the token's connection
 * id. `anyInstance` false accepts only tokens this process issued (the HTTP transports need affinity).
 * Returns the status to answer when there is none.
 */
export function connectionForToken(
  hub: HubRuntime,
  tokens: ConnectionTokens,
  token: string,
  principal: Principal,
  options: { create: boolean; anyInstance: boolean },
): Connection | 403 | 404 {
  const local = hub.connectionByToken(token);
  if (local) return local;
  if (!options.create) return 404;
  const check = tokens.verify(token, principal.userId);
  if (!check.ok) return check.status;
  if (!options.anyInstance && !check.claims.issuedHere) return 404;
  return hub.createConnection(principal, {
    statefulReconnect: check.claims.stateful,
    ids: { connectionId: check.claims.connectionId, token: check.claims.token },
  });
}
