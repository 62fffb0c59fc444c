import { HttpTransportType, HubConnectionBuilder, LogLevel } from '@microsoft/signalr';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { type Authenticate, bearerToken, jwtAuthenticator } from '../../src/hub/auth.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool } from '../helpers/client.js';
import { negotiate, RawClient, upgradeStatus } from '../helpers/raw-ws.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/auth-test';
const jwt = jwtAuthenticator({ secret: TEST_JWT_SECRET });

const hub: HubDefinition = {
  methods: {
    WhoAmI: (ctx) => ({ userId: ctx.userId ?? null, role: ctx.claims.role ?? null }),
  },
};

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('authentication', () => {
  const clients = new ClientPool();
  const raws: RawClient[] = [];
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.close();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  describe('jwtAuthenticator', () => {
    it("takes the official client's accessTokenFactory token: userId is sub", async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      const token = await signToken('alice', TEST_JWT_SECRET, { role: 'admin' });
      const c = await clients.connect(server.url(HUB), { token });
      expect(await c.invoke('WhoAmI')).toEqual({ userId: 'alice', role: 'admin' });
    });

    it('takes the token from the access_token query parameter, for negotiate and the socket', async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      const token = await signToken('bob');
      const negotiated = await negotiate(server.url(HUB), `?negotiateVersion=1&access_token=${token}`);
      expect(negotiated.status).toBe(200);
      const connectionToken = negotiated.body.connectionToken as string;
      const raw = await RawClient.open(`${server.url(HUB)}?id=${connectionToken}&access_token=${token}`);
      raws.push(raw);
      raw.send({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
      expect(await waitFor(() => raw.messages.find((m) => m.type === 3))).toEqual({
        type: 3,
        invocationId: '1',
        result: { userId: 'bob', role: null },
      });

      // note: the official client keeps a query string of the hub URL for negotiate and the socket.
      const c = await clients.connect(`${server.url(HUB)}?access_token=${token}`);
      expect(await c.invoke('WhoAmI')).toEqual({ userId: 'bob', role: null });
    });

    it('refuses negotiate without a token with 401; the official client start() rejects', async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      const result = await negotiate(server.url(HUB));
      expect(result.status).toBe(401);
      expect(result.headers.get('www-authenticate')).toBe('Bearer');
      const c = clients.add(
        new HubConnectionBuilder()
          .withUrl(server.url(HUB), { logger: LogLevel.None })
          .configureLogging(LogLevel.None)
          .build(),
      );
      await expect(c.start()).rejects.toThrow(/401/);
      expect(server.server.connectionCount).toBe(0);
    });

    it('refuses a WebSocket upgrade without a token with 401', async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      // note: with and without an id from a negotiate that had a token.
      expect(await upgradeStatus(server.url(HUB))).toBe(401);
      const token = await signToken('carol');
      const { body } = await negotiate(server.url(HUB), '?negotiateVersion=1', { headers: bearer(token) });
      expect(await upgradeStatus(`${server.url(HUB)}?id=${body.connectionToken as string}`)).toBe(401);
      // note: the negotiated connection is still free for its owner.
      expect(
        await upgradeStatus(`${server.url(HUB)}?id=${body.connectionToken as string}`, bearer(token)),
      ).toBe(101);
    });

    it('refuses a wrong secret, an expired token, alg none and garbage with 401', async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      const wrongSecret = await signToken('eve', 'another-secret-that-is-long-enough-for-hs256');
      const expired = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('eve')
        .setIssuedAt(Math.floor(Date.now() / 1000) - 7200)
        .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
        .sign(new TextEncoder().encode(TEST_JWT_SECRET));
      const algNone = `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ sub: 'eve', exp: Math.floor(Date.now() / 1000) + 3600 })}.`;
      const valid = await signToken('eve');
      // note: a valid signature over a different payload.
      const [header, , signature] = valid.split('.');
      const tampered = `${header}.${base64url({ sub: 'admin' })}.${signature}`;
      for (const [name, token] of Object.entries({
        wrongSecret,
        expired,
        algNone,
        tampered,
        garbage: 'abc',
      })) {
        expect(
          (await negotiate(server.url(HUB), '?negotiateVersion=1', { headers: bearer(token) })).status,
          name,
        ).toBe(401);
        expect(await upgradeStatus(server.url(HUB), bearer(token)), name).toBe(401);
        const c = clients.add(
          new HubConnectionBuilder()
            .withUrl(server.url(HUB), { logger: LogLevel.None, accessTokenFactory: () => token })
            .configureLogging(LogLevel.None)
            .build(),
        );
        await expect(c.start(), name).rejects.toThrow(/401/);
      }
      // note: the same server accepts the valid one.
      expect(
        (await negotiate(server.url(HUB), '?negotiateVersion=1', { headers: bearer(valid) })).status,
      ).toBe(200);
      expect(server.server.connectionCount).toBe(0);
    });

    it('does not let user A bind a socket to a connection negotiated by user B (403)', async () => {
      server = await startServer({ authenticate: jwt }, { [HUB]: hub });
      const alice = await signToken('alice');
      const bob = await signToken('bob');
      const { body } = await negotiate(server.url(HUB), '?negotiateVersion=1', { headers: bearer(bob) });
      const url = `${server.url(HUB)}?id=${body.connectionToken as string}`;
      expect(await upgradeStatus(url, bearer(alice))).toBe(403);
      // note: bob can still use it.
      const raw = await RawClient.open(url, { headers: bearer(bob) });
      raws.push(raw);
      raw.send({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
      expect(await waitFor(() => raw.messages.find((m) => m.type === 3))).toMatchObject({
        result: { userId: 'bob' },
      });
    });
  });

  describe('a custom authenticate hook', () => {
    /** Accepts `Bearer user:<name>` or `?user=<name>`; refuses 'mallory'; throws for 'crash'. */
    const custom: Authenticate = async (request, url) => {
      const token = bearerToken(request, url);
      const name = token?.startsWith('user:') ? token.slice('user:'.length) : url.searchParams.get('user');
      if (!name || name === 'mallory') return null;
      if (name === 'crash') throw new Error('authenticator exploded');
      return { userId: name, claims: { role: `role-of-${name}` } };
    };

    it('decides the user and claims of the official client', async () => {
      server = await startServer({ authenticate: custom }, { [HUB]: hub });
      const c = await clients.connect(server.url(HUB), { token: 'user:dora' });
      expect(await c.invoke('WhoAmI')).toEqual({ userId: 'dora', role: 'role-of-dora' });
      const q = await clients.connect(`${server.url(HUB)}?user=quinn`);
      expect(await q.invoke('WhoAmI')).toEqual({ userId: 'quinn', role: 'role-of-quinn' });
    });

    it('refuses with 401 when the hook returns null or throws', async () => {
      server = await startServer({ authenticate: custom }, { [HUB]: hub });
      for (const name of ['mallory', 'crash']) {
        expect((await negotiate(server.url(HUB), `?negotiateVersion=1&user=${name}`)).status, name).toBe(401);
        expect(await upgradeStatus(`${server.url(HUB)}?user=${name}`), name).toBe(401);
        const c = clients.add(
          new HubConnectionBuilder()
            .withUrl(`${server.url(HUB)}?user=${name}`, { logger: LogLevel.None })
            .configureLogging(LogLevel.None)
            .build(),
        );
        await expect(c.start(), name).rejects.toThrow(/401/);
      }
      expect((await negotiate(server.url(HUB), '?negotiateVersion=1')).status).toBe(401);
    });

    it('lets skipNegotiation clients through the hook too', async () => {
      server = await startServer({ authenticate: custom }, { [HUB]: hub });
      const c = await clients.connect(`${server.url(HUB)}?user=sam`, { skipNegotiation: true });
      expect(await c.invoke('WhoAmI')).toEqual({ userId: 'sam', role: 'role-of-sam' });
      const refused = clients.add(
        new HubConnectionBuilder()
          .withUrl(`${server.url(HUB)}?user=mallory`, {
            logger: LogLevel.None,
            skipNegotiation: true,
            transport: HttpTransportType.WebSockets,
          })
          .configureLogging(LogLevel.None)
          .build(),
      );
      await expect(refused.start()).rejects.toThrow();
    });
  });
});
