/**
 * No sticky sessions: a round-robin TCP proxy (a load balancer without affinity: every new TCP connection
 * goes to the next instance) in front of `relayhub serve` processes. The official client negotiates on one
 * instance and its WebSocket usually lands on another; with a shared connection token secret (derived from
 * the shared JWT_SECRET) it connects every time, keeps the connection id it got at negotiate, and delivery
 * across instances is exact. Without a shared secret the same flow fails for the clients that land elsewhere.
 */
import type { HubConnection } from '@microsoft/signalr';
import { HttpTransportType } from '@microsoft/signalr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildClient, ClientPool } from '../helpers/client.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/demo';
const CLIENTS = 50;
const INSTANCES = 3;

/**
 * Where each client's negotiate and WebSocket went (upstream index), by connection id, read from the
 * proxy's routes: a negotiate answer names the id and the token, the upgrade's `?id=` the token.
 */
function placements(proxy: TcpProxy): Map<string, { negotiatedAt: number; socketAt?: number }> {
  const byToken = new Map<string, { connectionId: string; negotiatedAt: number; socketAt?: number }>();
  for (const route of proxy.routes) {
    // note: a keep-alive connection may carry several negotiates; each answer names its id and token.
    for (const match of route.response.matchAll(
      /"connectionId":"([A-Za-z0-9_-]+)","connectionToken":"([A-Za-z0-9_-]+)"/g,
    )) {
      byToken.set(match[2] as string, { connectionId: match[1] as string, negotiatedAt: route.upstream });
    }
  }
  for (const route of proxy.routes) {
    const upgrade = /^GET [^ ]*[?&]id=([A-Za-z0-9_-]+)[^ ]* HTTP\/1\.1/.exec(route.request);
    if (!upgrade || !/\r\nupgrade: websocket\r\n/i.test(route.request)) continue;
    const placed = byToken.get(upgrade[1] as string);
    if (placed) placed.socketAt = route.upstream;
  }
  return new Map([...byToken.values()].map(({ connectionId, ...placed }) => [connectionId, placed]));
}

/** An official client with this user's JWT, restricted to WebSockets (through negotiate). */
const wsOptions = (token: string) => ({ token, transport: HttpTransportType.WebSockets });

describe('no sticky sessions: round-robin over 3 instances, WebSockets through negotiate', () => {
  const prefix = uniquePrefix('noaffinity');
  const instances = new InstancePool();
  const clients = new ClientPool();
  let proxy: TcpProxy;
  let started: InstanceProcess[];

  beforeAll(async () => {
    started = await Promise.all(
      Array.from({ length: INSTANCES }, () =>
        instances.start({ redisUrl: REDIS_URL, channelPrefix: prefix, backplane: 'pubsub' }),
      ),
    );
    proxy = await TcpProxy.startRoundRobin(started.map((i) => i.port));
  });

  afterAll(async () => {
    await clients.stopAll();
    await proxy?.close();
    await instances.stopAll();
    await deletePrefix(REDIS_URL, prefix);
  });

  it('connects all 50 official clients, and user sends and broadcasts from each instance arrive exactly once', async () => {
    const url = proxy.url(HUB);
    const users = Array.from({ length: CLIENTS }, (_, i) => `user-${i}`);
    const received = new Map<string, string[]>(users.map((u) => [u, []]));
    const connections = await Promise.all(
      users.map(async (user) => {
        const connection = buildClient(url, wsOptions(await signToken(user)));
        connection.on('message', (from: string, text: string) => received.get(user)?.push(`${from}|${text}`));
        clients.add(connection);
        await connection.start();
        return connection;
      }),
    );
    expect(connections.every((c) => c.state === 'Connected')).toBe(true);

    // note: the load balancer really spread them: sockets on every instance, most away from negotiate.
    const placed = placements(proxy);
    const socketAt = (c: HubConnection) => placed.get(c.connectionId as string)?.socketAt;
    expect(connections.every((c) => socketAt(c) !== undefined)).toBe(true);
    expect(new Set(connections.map(socketAt)).size).toBe(INSTANCES);
    const elsewhere = connections.filter(
      (c) => placed.get(c.connectionId as string)?.negotiatedAt !== socketAt(c),
    );
    expect(elsewhere.length).toBeGreaterThan(CLIENTS / 4);

    // One client on each instance broadcasts.
    const broadcasters = new Map<number, number>();
    connections.forEach((c, i) => {
      const at = socketAt(c) as number;
      if (!broadcasters.has(at)) broadcasters.set(at, i);
    });

    const expected = new Map<string, string[]>(users.map((u) => [u, []]));
    // Each user sends to the next one (mostly on another instance)...
    await Promise.all(
      connections.map((connection, i) => {
        const to = users[(i + 1) % CLIENTS] as string;
        expected.get(to)?.push(`${users[i]}|to ${to}`);
        return connection.invoke('SendToUser', to, `to ${to}`);
      }),
    );
    // ...and one client on each instance broadcasts.
    for (const [instance, i] of broadcasters) {
      for (const user of users) expected.get(user)?.push(`${users[i]}|all from ${instance}`);
      await (connections[i] as HubConnection).invoke('SendToAll', `all from ${instance}`);
    }

    const sent = [...expected.values()].reduce((n, list) => n + list.length, 0);
    const counts = () => {
      let got = 0;
      let duplicated = 0;
      let missing = 0;
      let unexpected = 0;
      for (const user of users) {
        const want = expected.get(user) as string[];
        const have = received.get(user) as string[];
        got += have.length;
        for (const message of want) {
          const copies = have.filter((m) => m === message).length;
          if (copies === 0) missing++;
          if (copies > 1) duplicated += copies - 1;
        }
        unexpected += have.filter((m) => !want.includes(m)).length;
      }
      return { sent, received: got, duplicated, missing, unexpected };
    };
    await waitFor(() => counts().received >= sent, { timeoutMs: 10_000 }).catch(() => undefined);
    expect(counts()).toEqual({ sent, received: sent, duplicated: 0, missing: 0, unexpected: 0 });
    console.info(
      `no affinity: ${CLIENTS} clients over ${INSTANCES} instances, ${elsewhere.length} with their WebSocket ` +
        `on another instance than their negotiate; ${JSON.stringify(counts())}`,
    );
    expect(sent).toBe(CLIENTS * (1 + INSTANCES));
  });
});

describe('without a shared secret (each instance its own key)', () => {
  const prefix = uniquePrefix('noaffinity-apart');
  const instances = new InstancePool();
  const clients = new ClientPool();
  let proxy: TcpProxy;

  afterEach(async () => {
    await clients.stopAll();
    await proxy?.close();
    await instances.stopAll();
    await deletePrefix(REDIS_URL, prefix);
  });

  it('fails exactly the clients whose WebSocket lands on another instance than their negotiate', async () => {
    const started = await Promise.all(
      ['a', 'b'].map((name) =>
        instances.start({
          redisUrl: REDIS_URL,
          channelPrefix: prefix,
          env: { CONNECTION_TOKEN_SECRET: `instance-${name}-has-its-own-connection-token-secret` },
        }),
      ),
    );
    proxy = await TcpProxy.startRoundRobin(started.map((i) => i.port));
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const connection = clients.add(buildClient(proxy.url(HUB), wsOptions(await signToken(`u${i}`))));
        return connection.start().then(
          () => 'connected' as const,
          () => 'failed' as const,
        );
      }),
    );
    const placed = [...placements(proxy).values()];
    const elsewhere = placed.filter((p) => p.socketAt !== p.negotiatedAt).length;
    expect(placed.length).toBe(12);
    expect(placed.every((p) => p.socketAt !== undefined)).toBe(true);
    expect(elsewhere).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o === 'failed').length).toBe(elsewhere);
  });
});

describe('no sticky sessions: connection ids and stateful reconnect across 2 instances', () => {
  const prefix = uniquePrefix('noaffinity-ids');
  const instances = new InstancePool();
  const clients = new ClientPool();
  const TOKEN_LIFETIME_MS = 1_500;
  let proxy: TcpProxy;
  let started: InstanceProcess[];

  beforeAll(async () => {
    const args = [
      '--connection-token-secret',
      'the-fixture-instances-share-this-token-secret',
      '--negotiate-timeout-ms',
      String(TOKEN_LIFETIME_MS),
    ];
    started = await Promise.all(
      [0, 1].map(() => instances.startFixture({ redisUrl: REDIS_URL, channelPrefix: prefix, args })),
    );
    proxy = await TcpProxy.startRoundRobin(started.map((i) => i.port));
  });

  afterEach(() => clients.stopAll());

  afterAll(async () => {
    await proxy?.close();
    await instances.stopAll();
    await deletePrefix(REDIS_URL, prefix);
  });

  interface Whoami {
    connectionId: string;
    pid: number;
  }

  it('keeps the connection id negotiate gave, wherever the socket lands, and sends to it by id', async () => {
    const url = proxy.url('/hubs/api');
    const connections = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const connection = buildClient(url, wsOptions(await signToken(`id-user-${i}`)));
        clients.add(connection);
        await connection.start();
        return connection;
      }),
    );
    const who = await Promise.all(connections.map((c) => c.invoke<Whoami>('Whoami')));
    const placed = placements(proxy);
    connections.forEach((c, i) => {
      expect(who[i]?.connectionId).toBe(c.connectionId);
      // note: the instance that runs the hub method is the one the proxy sent the socket to.
      const at = placed.get(c.connectionId as string)?.socketAt as number;
      expect(who[i]?.pid).toBe(started[at]?.pid);
    });
    expect(new Set(who.map((w) => w.pid)).size).toBe(2);
    expect(
      connections.some((c) => {
        const p = placed.get(c.connectionId as string);
        return p?.negotiatedAt !== p?.socketAt;
      }),
    ).toBe(true);

    const received = connections.map(() => [] as string[]);
    connections.forEach((c, i) =>
      c.on('message', (from: string, text: string) => received[i]?.push(`${from}|${text}`)),
    );
    await Promise.all(
      connections.map((c, i) =>
        c.invoke('Client', connections[(i + 1) % 10]?.connectionId, `to ${(i + 1) % 10}`),
      ),
    );
    await waitFor(() => received.every((r) => r.length >= 1));
    received.forEach((r, i) => expect(r).toEqual([`${connections[(i + 9) % 10]?.connectionId}|to ${i}`]));
  });

  /** A started official client with stateful and automatic reconnect, the instance it is on, its onreconnecting calls. */
  async function statefulClient(user: string) {
    const connection = buildClient(proxy.url('/hubs/api'), {
      ...wsOptions(await signToken(user)),
      statefulReconnect: true,
      reconnectDelays: [0, 200, 500],
    });
    clients.add(connection);
    const reconnecting: unknown[] = [];
    connection.onreconnecting((error) => reconnecting.push(error));
    await connection.start();
    const first = await connection.invoke<Whoami>('Whoami');
    return { connection, reconnecting, first, firstAt: started.findIndex((i) => i.pid === first.pid) };
  }

  it('a stateful reconnect on the other instance after the token expired: 404, onreconnecting, a new connection', async () => {
    const { connection, reconnecting, first, firstAt } = await statefulClient('stateful-user');
    const issued = Date.now();
    await waitFor(() => Date.now() - issued > TOKEN_LIFETIME_MS + 100, { timeoutMs: 5_000 });
    const attempts = proxy.routes.length;
    // note: the client's transport reconnect (same token) goes to the other instance.
    proxy.routeNextTo(1 - firstAt);
    proxy.dropAll();
    await waitFor(() => connection.state === 'Connected' && reconnecting.length === 1, { timeoutMs: 10_000 });
    const retry = proxy.routes[attempts];
    expect(retry?.upstream).toBe(1 - firstAt);
    expect(retry?.request).toMatch(/^GET \/hubs\/api\?id=/);
    expect(retry?.response).toMatch(/^HTTP\/1\.1 404 /);
    const second = await connection.invoke<Whoami>('Whoami');
    expect(second.connectionId).toBe(connection.connectionId);
    expect(second.connectionId).not.toBe(first.connectionId);
  });

  it('a stateful reconnect that lands elsewhere while the token is still valid is refused there and resumes at home', async () => {
    const { connection, reconnecting, first, firstAt } = await statefulClient('stateful-user-2');
    const attempts = proxy.routes.length;
    // note: the first attempt reaches the other instance, which cannot resume it; the next one comes home.
    proxy.routeNextTo(1 - firstAt);
    proxy.dropAll();
    await waitFor(() => proxy.routes.length >= attempts + 2, { timeoutMs: 10_000 });
    const second = await connection.invoke<Whoami>('Whoami');
    expect(second).toEqual(first);
    const [elsewhere, home] = proxy.routes.slice(attempts);
    expect(elsewhere?.upstream).toBe(1 - firstAt);
    // note: it accepted the socket (the token is valid) and refused the stream that was no handshake.
    expect(elsewhere?.response).toMatch(/^HTTP\/1\.1 101 [^]*"error":"/);
    expect(home?.upstream).toBe(firstAt);
    expect(home?.response).toMatch(/^HTTP\/1\.1 101 /);
    expect(reconnecting).toEqual([]);
  });
});
