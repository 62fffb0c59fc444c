/**
 * SignalR's HTTP behaviours, with the official client: a refused negotiate is a 401 with an empty body
 * (the client reports `Unauthorized: Status code '401'`); hub paths match case-insensitively (negotiate and
 * upgrade); hub methods and onConnected read the connection's HTTP request (`ctx.request`, from the
 * WebSocket upgrade); per-hub authenticate/authorize with the server's hook as the default.
 */
import { HubConnectionBuilder, LogLevel } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import { anonymous, jwtAuthenticator } from '../../src/hub/auth.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import type { HubRequest } from '../../src/hub/hub-request.js';
import { HubServer, type HubServerOptions } from '../../src/hub/hub-server.js';
import { ClientPool } from '../helpers/client.js';
import { negotiate, upgradeStatus } from '../helpers/raw-ws.js';
import { signToken, silentLogger, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';

const jwt = jwtAuthenticator({ secret: TEST_JWT_SECRET });
const echo: HubDefinition = { methods: { Echo: (_ctx, value: unknown) => value } };
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

describe('SignalR HTTP behaviours', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  /** An official client with `headers` (sent on negotiate and on the WebSocket in Node). */
  const official = (url: string, options: { token?: string; headers?: Record<string, string> } = {}) =>
    clients.add(
      new HubConnectionBuilder()
        .withUrl(url, {
          logger: LogLevel.None,
          ...(options.token ? { accessTokenFactory: () => options.token as string } : {}),
          ...(options.headers ? { headers: options.headers } : {}),
        })
        .configureLogging(LogLevel.None)
        .build(),
    );

  it("answers a refused negotiate with 401 and an empty body: the client says Unauthorized: Status code '401'", async () => {
    server = await startServer({ authenticate: jwt }, { '/hubs/echo': echo });
    const response = await fetch(`${server.url('/hubs/echo')}/negotiate?negotiateVersion=1`, {
      method: 'POST',
    });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
    expect(response.headers.get('content-length')).toBe('0');
    expect(await response.text()).toBe('');
    await expect(official(server.url('/hubs/echo')).start()).rejects.toThrow(
      /Unauthorized: Status code '401'/,
    );
  });

  it('answers 500 when the fallback throws or rejects, and keeps serving', async () => {
    server = await startServer({
      fallback: (req, res) => {
        // note: what a naive app route does with an authority-like target such as //[
        if (req.url === '/sync') new URL(req.url.replace('/sync', '//['), 'http://localhost');
        res.end('ok');
      },
    });
    const asyncFallback = (async () => {
      throw new Error('async route failed');
    }) as unknown as NonNullable<HubServerOptions['fallback']>;
    const second = await startServer({ fallback: asyncFallback });
    try {
      expect((await fetch(`${server.baseUrl}/sync`)).status).toBe(500);
      expect((await fetch(`${second.baseUrl}/anything`)).status).toBe(500);
      expect(await (await fetch(`${server.baseUrl}/fine`)).text()).toBe('ok');
      const client = official(second.url());
      await client.start();
      expect(await client.invoke('Echo', 'alive')).toBe('alive');
    } finally {
      await clients.stopAll();
      await second.close();
    }
  });

  it('matches hub paths case-insensitively, for negotiate and the WebSocket', async () => {
    server = await startServer({}, { '/hubs/Echo': echo });
    for (const path of ['/hubs/echo', '/HUBS/ECHO', '/Hubs/eCHO']) {
      const client = official(server.url(path));
      await client.start();
      expect(await client.invoke('Echo', path)).toBe(path);
      expect((await negotiate(server.url(path.toUpperCase()))).status).toBe(200);
      expect(await upgradeStatus(server.url(path))).toBe(101);
    }
    expect(server.server.hub('/HUBS/echo')).toBe(server.server.hub('/hubs/Echo'));
    const other = new HubServer({ logger: silentLogger });
    other.mapHub('/hubs/chat', echo);
    expect(() => other.mapHub('/Hubs/Chat', echo)).toThrow(
      /already mapped at '\/Hubs\/Chat' \(paths ignore case\)/,
    );
    await other.close();
  });

  it('gives hub methods and onConnected the HTTP request of the WebSocket: headers, cookies, query, address', async () => {
    const seen: HubRequest[] = [];
    const hub: HubDefinition = {
      methods: {
        Request: (ctx) => ({
          app: ctx.request.headers['x-app'] ?? null,
          session: ctx.request.cookies.session ?? null,
          theme: ctx.request.cookies.theme ?? null,
          room: ctx.request.query.room ?? null,
          remoteAddress: ctx.request.remoteAddress ?? null,
          path: ctx.request.path,
          method: ctx.request.method,
          upgrade: ctx.request.headers.upgrade ?? null,
          frozen: Object.isFrozen(ctx.request) && Object.isFrozen(ctx.request.headers),
        }),
      },
      onConnected: (ctx) => void seen.push(ctx.request),
    };
    server = await startServer({ authenticate: jwt }, { '/hubs/req': hub });
    const client = official(`${server.url('/hubs/req')}?room=lobby`, {
      token: await signToken('alice'),
      headers: { 'X-App': 'tests', Cookie: 'session=abc%20def; theme="dark"' },
    });
    await client.start();
    expect(await client.invoke('Request')).toEqual({
      app: 'tests',
      session: 'abc def',
      theme: 'dark',
      room: 'lobby',
      remoteAddress: expect.stringMatching(/127\.0\.0\.1/),
      path: '/hubs/req',
      method: 'GET',
      // note: the request that bound the transport is the WebSocket upgrade, not the negotiate POST.
      upgrade: 'websocket',
      frozen: true,
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.query.room).toBe('lobby');
    expect(seen[0]!.headers['x-app']).toBe('tests');
  });

  it('authenticates and authorizes per hub, with the server hook as the default', async () => {
    const hubs: Record<string, HubDefinition> = {
      '/hubs/default': echo,
      '/hubs/open': { ...echo, authenticate: anonymous },
      '/hubs/admin': {
        ...echo,
        authorize: (principal, request) =>
          principal.claims.role === 'admin' && request.headers['x-tenant'] !== 'blocked',
      },
      '/hubs/broken': {
        ...echo,
        authorize: () => {
          throw new Error('policy store down');
        },
      },
    };
    server = await startServer({ authenticate: jwt }, hubs);
    const alice = await signToken('alice');
    const admin = await signToken('root', TEST_JWT_SECRET, { role: 'admin' });

    // the server's hook guards the hub without its own
    expect((await negotiate(server.url('/hubs/default'))).status).toBe(401);
    await expect(official(server.url('/hubs/default')).start()).rejects.toThrow(/401/);
    const a = official(server.url('/hubs/default'), { token: alice });
    await a.start();
    expect(await a.invoke('Echo', 1)).toBe(1);

    // [AllowAnonymous]-like: no token needed
    const anon = official(server.url('/hubs/open'));
    await anon.start();
    expect(await anon.invoke('Echo', 2)).toBe(2);

    // [Authorize(Roles = "admin")]-like: 403 with an empty body for an authenticated non-admin
    const refused = await fetch(`${server.url('/hubs/admin')}/negotiate?negotiateVersion=1`, {
      method: 'POST',
      headers: bearer(alice),
    });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toBe('');
    await expect(official(server.url('/hubs/admin'), { token: alice }).start()).rejects.toThrow(
      /Forbidden: Status code '403'/,
    );
    expect(await upgradeStatus(server.url('/hubs/admin'), bearer(alice))).toBe(403);
    expect(await upgradeStatus(server.url('/hubs/admin'))).toBe(401);
    expect(await upgradeStatus(server.url('/hubs/admin'), { ...bearer(admin), 'X-Tenant': 'blocked' })).toBe(
      403,
    );
    const root = official(server.url('/hubs/admin'), { token: admin });
    await root.start();
    expect(await root.invoke('Echo', 3)).toBe(3);

    // an authorize hook that throws refuses
    expect(
      (await negotiate(server.url('/hubs/broken'), '?negotiateVersion=1', { headers: bearer(admin) })).status,
    ).toBe(403);
    expect(server.server.connectionCount).toBe(3);
  });
});
