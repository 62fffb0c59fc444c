import type { IncomingMessage } from 'node:http';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { RelayhubError } from '../../src/errors.js';
import { anonymous, bearerToken, jwtAuthenticator } from '../../src/hub/auth.js';
import { signToken, TEST_JWT_SECRET } from '../helpers/server.js';

const request = (authorization?: string): IncomingMessage =>
  ({ headers: authorization === undefined ? {} : { authorization } }) as IncomingMessage;
const url = (query = ''): URL => new URL(`http://localhost/hubs/demo${query}`);

const key = (secret: string) => new TextEncoder().encode(secret);

describe('bearerToken', () => {
  it('reads the Authorization: Bearer header', () => {
    expect(bearerToken(request('Bearer abc.def.ghi'), url())).toBe('abc.def.ghi');
  });

  it('reads the scheme case-insensitively (RFC 7235)', () => {
    expect(bearerToken(request('bearer abc'), url())).toBe('abc');
    expect(bearerToken(request('BEARER abc'), url())).toBe('abc');
    expect(bearerToken(request('Bearerabc'), url())).toBeUndefined();
  });

  it('trims spaces around the header token', () => {
    expect(bearerToken(request('Bearer   tok  '), url())).toBe('tok');
  });

  it('reads the access_token query parameter (browsers cannot set WebSocket headers)', () => {
    expect(bearerToken(request(), url('?id=x&access_token=q.tok'))).toBe('q.tok');
    expect(bearerToken(request(), url('?access_token=a%2Bb%3D'))).toBe('a+b=');
  });

  it('prefers the header over the query', () => {
    expect(bearerToken(request('Bearer header-token'), url('?access_token=query-token'))).toBe(
      'header-token',
    );
  });

  it('falls back to the query when the header is not a bearer one', () => {
    expect(bearerToken(request('Basic dXNlcjpwYXNz'), url('?access_token=query-token'))).toBe('query-token');
  });

  it('finds nothing without a header or query token', () => {
    expect(bearerToken(request(), url())).toBeUndefined();
    expect(bearerToken(request('Basic dXNlcjpwYXNz'), url())).toBeUndefined();
    expect(bearerToken(request('Bearer '), url())).toBeUndefined();
    expect(bearerToken(request('Bearer    '), url())).toBeUndefined();
  });
});

describe('anonymous', () => {
  it('welcomes everyone as nobody in particular', async () => {
    await expect(anonymous(request(), url())).resolves.toEqual({ claims: {} });
  });
});

describe('jwtAuthenticator', () => {
  const authenticate = jwtAuthenticator({ secret: TEST_JWT_SECRET });

  it('accepts an HS256 token from the header; sub becomes the user id and claims are kept', async () => {
    const token = await signToken('alice', TEST_JWT_SECRET, { role: 'admin' });
    const principal = await authenticate(request(`Bearer ${token}`), url());
    expect(principal?.userId).toBe('alice');
    expect(principal?.claims).toMatchObject({ sub: 'alice', role: 'admin' });
    expect(typeof principal?.claims.exp).toBe('number');
  });

  it('accepts the token from the access_token query parameter', async () => {
    const token = await signToken('bob');
    const principal = await authenticate(request(), url(`?access_token=${token}`));
    expect(principal?.userId).toBe('bob');
  });

  it('accepts a token without sub as an authenticated connection without a user', async () => {
    const token = await new SignJWT({ scope: 'read' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(key(TEST_JWT_SECRET));
    const principal = await authenticate(request(`Bearer ${token}`), url());
    expect(principal).not.toBeNull();
    expect(principal).not.toHaveProperty('userId');
    expect(principal?.claims).toMatchObject({ scope: 'read' });
  });

  it('refuses a request without a token', async () => {
    await expect(authenticate(request(), url())).resolves.toBeNull();
  });

  it('refuses a token signed with another secret', async () => {
    const token = await signToken('mallory', 'another-secret-that-is-long-enough-for-hs256');
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it('refuses an expired token', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 120)
      .sign(key(TEST_JWT_SECRET));
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it('refuses a token that is not yet valid', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setNotBefore(Math.floor(Date.now() / 1000) + 3600)
      .setExpirationTime('2h')
      .sign(key(TEST_JWT_SECRET));
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it('refuses another algorithm, even with the right secret', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS512' })
      .setSubject('alice')
      .setExpirationTime('1h')
      .sign(key(TEST_JWT_SECRET));
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it('refuses an unsigned (alg none) token', async () => {
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 })}.`;
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it.each(['garbage', 'a.b.c', '...', 'eyJhbGciOiJIUzI1NiJ9.e30'])(
    'refuses the malformed token %j',
    async (token) => {
      await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
    },
  );

  it('refuses a tampered token', async () => {
    const token = await signToken('alice');
    const [header, , signature] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: 9_999_999_999 })).toString('base64url');
    await expect(authenticate(request(`Bearer ${header}.${forged}.${signature}`), url())).resolves.toBeNull();
  });

  it('checks issuer and audience when they are configured', async () => {
    const strict = jwtAuthenticator({ secret: TEST_JWT_SECRET, issuer: 'relayhub-tests', audience: 'hubs' });
    const sign = (issuer: string | undefined, audience: string | undefined) => {
      let jwt = new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('1h');
      if (issuer) jwt = jwt.setIssuer(issuer);
      if (audience) jwt = jwt.setAudience(audience);
      return jwt.sign(key(TEST_JWT_SECRET));
    };
    const check = async (issuer?: string, audience?: string) =>
      strict(request(`Bearer ${await sign(issuer, audience)}`), url());
    expect((await check('relayhub-tests', 'hubs'))?.userId).toBe('alice');
    await expect(check('someone-else', 'hubs')).resolves.toBeNull();
    await expect(check('relayhub-tests', 'other')).resolves.toBeNull();
    await expect(check(undefined, 'hubs')).resolves.toBeNull();
    await expect(check('relayhub-tests', undefined)).resolves.toBeNull();
  });

  it('refuses an empty secret at configuration time with ERR_CONFIG and a remedy', () => {
    let caught: unknown;
    try {
      jwtAuthenticator({ secret: '' });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(RelayhubError);
    expect((caught as RelayhubError).code).toBe('ERR_CONFIG');
    expect((caught as RelayhubError).message).toMatch(/The JWT secret is empty\./);
    expect((caught as RelayhubError).remedy).toMatch(/JWT_SECRET/);
  });

  const configError = (make: () => unknown): RelayhubError => {
    try {
      make();
    } catch (error) {
      expect(error).toBeInstanceOf(RelayhubError);
      expect((error as RelayhubError).code).toBe('ERR_CONFIG');
      return error as RelayhubError;
    }
    throw new Error('expected ERR_CONFIG');
  };

  it('refuses an HS256 secret under 32 bytes (RFC 7518 §3.2) with ERR_CONFIG, counting UTF-8 bytes', () => {
    for (const secret of ['x', 'relayhub-dev-secret-change-me', 'a'.repeat(31), 'é'.repeat(15)]) {
      const error = configError(() => jwtAuthenticator({ secret }));
      expect(error.message).toMatch(/HS256 needs at least 32 \(RFC 7518 §3\.2\)/);
      expect(error.remedy).toMatch(/JWT_SECRET/);
    }
    expect(() => jwtAuthenticator({ secret: 'a'.repeat(32) })).not.toThrow();
    expect(() => jwtAuthenticator({ secret: 'é'.repeat(16) })).not.toThrow();
  });

  it('refuses bad maxTokenAgeMs / clockToleranceMs with ERR_CONFIG', () => {
    for (const maxTokenAgeMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      configError(() => jwtAuthenticator({ secret: TEST_JWT_SECRET, maxTokenAgeMs }));
    }
    for (const clockToleranceMs of [-1, Number.NaN]) {
      configError(() => jwtAuthenticator({ secret: TEST_JWT_SECRET, clockToleranceMs }));
    }
  });

  it('refuses a token without exp (it would be valid forever)', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setIssuedAt()
      .sign(key(TEST_JWT_SECRET));
    await expect(authenticate(request(`Bearer ${token}`), url())).resolves.toBeNull();
  });

  it('allows 5 s of clock skew by default, and the configured tolerance', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expiredAgo = (seconds: number) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime(now - seconds)
        .sign(key(TEST_JWT_SECRET));
    expect((await authenticate(request(`Bearer ${await expiredAgo(2)}`), url()))?.userId).toBe('alice');
    await expect(authenticate(request(`Bearer ${await expiredAgo(20)}`), url())).resolves.toBeNull();
    const lenient = jwtAuthenticator({ secret: TEST_JWT_SECRET, clockToleranceMs: 60_000 });
    expect((await lenient(request(`Bearer ${await expiredAgo(20)}`), url()))?.userId).toBe('alice');
    const strict = jwtAuthenticator({ secret: TEST_JWT_SECRET, clockToleranceMs: 0 });
    await expect(strict(request(`Bearer ${await expiredAgo(2)}`), url())).resolves.toBeNull();
  });

  it('refuses a token older than maxTokenAgeMs (by iat), and one without iat when it is set', async () => {
    const aged = jwtAuthenticator({ secret: TEST_JWT_SECRET, maxTokenAgeMs: 60_000 });
    const now = Math.floor(Date.now() / 1000);
    const issued = (iat: number | undefined) => {
      let jwt = new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('2h');
      if (iat !== undefined) jwt = jwt.setIssuedAt(iat);
      return jwt.sign(key(TEST_JWT_SECRET));
    };
    expect((await aged(request(`Bearer ${await issued(now - 30)}`), url()))?.userId).toBe('alice');
    await expect(aged(request(`Bearer ${await issued(now - 120)}`), url())).resolves.toBeNull();
    await expect(aged(request(`Bearer ${await issued(undefined)}`), url())).resolves.toBeNull();
    // note: without maxTokenAgeMs the same old token is fine until its exp.
    expect((await authenticate(request(`Bearer ${await issued(now - 120)}`), url()))?.userId).toBe('alice');
  });
});
