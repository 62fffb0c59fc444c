import { describe, expect, it } from 'vitest';
import { ConnectionTokens } from '../../src/hub/connection-token.js';
import { RelayhubError } from '../../src/errors.js';

const SECRET = 'a-connection-token-secret-of-32-bytes-at-least';
const LIFETIME_MS = 15_000;

/** Tokens on a clock the test moves; `null`: no secret (a random per-process key). */
function tokensAt(clock: { now: number }, secret: string | null = SECRET): ConnectionTokens {
  return new ConnectionTokens({ secret: secret ?? undefined, lifetimeMs: LIFETIME_MS, now: () => clock.now });
}

/** Flips one bit of the byte at `index` of a base64url token. */
function flipBit(token: string, index: number): string {
  const bytes = Buffer.from(token, 'base64url');
  bytes[index] = (bytes[index] as number) ^ 1;
  return bytes.toString('base64url');
}

describe('connection tokens', () => {
  it('signs the connection id, and any instance with the same secret verifies it', () => {
    const clock = { now: 1_000_000 };
    const a = tokensAt(clock);
    const b = tokensAt(clock);
    const { connectionId, token } = a.issue('alice', false);
    expect(connectionId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(token).not.toBe(connectionId);
    expect(a.verify(token, 'alice')).toEqual({
      ok: true,
      claims: { connectionId, token, stateful: false, issuedHere: true },
    });
    expect(b.verify(token, 'alice')).toEqual({
      ok: true,
      claims: { connectionId, token, stateful: false, issuedHere: false },
    });
    expect(a.shared).toBe(true);
  });

  it('carries the stateful-reconnect flag', () => {
    const tokens = tokensAt({ now: 5 });
    const { token } = tokens.issue(undefined, true);
    const check = tokens.verify(token, undefined);
    expect(check.ok && check.claims.stateful).toBe(true);
  });

  it('makes a fresh, unguessable id and token each time', () => {
    const tokens = tokensAt({ now: 5 });
    const ids = new Set<string>();
    const all = new Set<string>();
    for (let i = 0; i < 1_000; i++) {
      const { connectionId, token } = tokens.issue('u', false);
      ids.add(connectionId);
      all.add(token);
    }
    expect(ids.size).toBe(1_000);
    expect(all.size).toBe(1_000);
  });

  it('expires after its lifetime (404)', () => {
    const clock = { now: 1_000_000 };
    const tokens = tokensAt(clock);
    const { token } = tokens.issue('alice', false);
    clock.now += LIFETIME_MS - 1;
    expect(tokens.verify(token, 'alice').ok).toBe(true);
    clock.now += 1;
    expect(tokens.verify(token, 'alice')).toEqual({ ok: false, status: 404, reason: 'expired' });
  });

  it('refuses a token of another secret, or a random per-process key (404)', () => {
    const clock = { now: 1_000_000 };
    const { token } = tokensAt(clock).issue('alice', false);
    expect(tokensAt(clock, `${SECRET}-other`).verify(token, 'alice')).toEqual({
      ok: false,
      status: 404,
      reason: 'forged',
    });
    const perProcess = tokensAt(clock, null);
    expect(perProcess.shared).toBe(false);
    expect(perProcess.verify(token, 'alice')).toMatchObject({ ok: false, status: 404 });
    expect(tokensAt(clock, null).verify(perProcess.issue('alice', false).token, 'alice')).toMatchObject({
      ok: false,
      status: 404,
    });
  });

  it('refuses any tampered byte (404): id, expiry, flags, issuer, user tag, MAC', () => {
    const clock = { now: 1_000_000 };
    const tokens = tokensAt(clock);
    const { token } = tokens.issue('alice', false);
    const length = Buffer.from(token, 'base64url').length;
    for (let index = 0; index < length; index++) {
      expect(tokens.verify(flipBit(token, index), 'alice'), `byte ${index}`).toMatchObject({
        ok: false,
        status: 404,
      });
    }
  });

  it('refuses malformed tokens (404) without throwing', () => {
    const tokens = tokensAt({ now: 5 });
    const { token } = tokens.issue('alice', false);
    for (const bad of [
      '',
      'x',
      token.slice(1),
      `${token}A`,
      `${token.slice(0, -1)}!`,
      token.replace(/./, '+'),
    ]) {
      expect(tokens.verify(bad, 'alice'), bad).toMatchObject({ ok: false, status: 404 });
    }
  });

  it('is bound to its user: another user, or anonymous, gets 403', () => {
    const tokens = tokensAt({ now: 5 });
    const { token } = tokens.issue('alice', false);
    expect(tokens.verify(token, 'bob')).toEqual({ ok: false, status: 403, reason: 'other-user' });
    expect(tokens.verify(token, undefined)).toMatchObject({ status: 403 });
    const anonymous = tokens.issue(undefined, false).token;
    expect(tokens.verify(anonymous, undefined).ok).toBe(true);
    expect(tokens.verify(anonymous, '')).toMatchObject({ status: 403 });
    expect(tokens.verify(tokens.issue('', false).token, undefined)).toMatchObject({ status: 403 });
  });

  it('does not show the user id in the token', () => {
    const { token } = tokensAt({ now: 5 }).issue('alice@example.com', false);
    expect(Buffer.from(token, 'base64url').toString('latin1')).not.toContain('alice');
  });

  it('remembers a spent token until it expires, then forgets it (bounded)', () => {
    const clock = { now: 1_000_000 };
    const tokens = tokensAt(clock);
    const { token } = tokens.issue('alice', false);
    tokens.spend(token);
    expect(tokens.verify(token, 'alice')).toEqual({ ok: false, status: 404, reason: 'spent' });
    expect(tokensAt(clock).verify(token, 'alice').ok).toBe(true);
    tokens.spend('not-a-signed-token');
    expect(tokens.spentCount).toBe(1);
    clock.now += LIFETIME_MS;
    const later = tokens.issue('alice', false).token;
    tokens.spend(later);
    expect(tokens.spentCount).toBe(1);
    expect(tokens.verify(later, 'alice')).toMatchObject({ reason: 'spent' });
    clock.now += LIFETIME_MS;
    // note: an expired token is not remembered; spending prunes what expired.
    tokens.spend(later);
    expect(tokens.spentCount).toBe(0);
  });

  it('refuses a secret shorter than 32 bytes with ERR_CONFIG', () => {
    expect(() => tokensAt({ now: 5 }, 'short')).toThrow(RelayhubError);
    expect(() => tokensAt({ now: 5 }, 'short')).toThrow(/at least 32/);
  });
});
