/**
 * Two Redis endpoints across real OS processes: two private redis-servers, `east` (the issue's `a`) and
 * `west` (`b`); hub A (the API fixture, a separate process) has primary east and secondary west, hub B
 * primary west and secondary east, so that A listens on east and B on west, and every send between them
 * crosses endpoints. Official @microsoft/signalr clients on both check who receives each send.
 *
 * Both run the test router of the fixture: groups named `east-*` go only through endpoint east (checked
 * with MONITOR on both Redis servers). B also runs a negotiateEndpoint that answers 400 without
 * `?endpoint=NAME` (its clients connect with `?endpoint=west`).
 *
 * Negative checks use no sleeps: after the expected receivers got a message, the sender sends a marker to
 * everyone, and the check waits until every client got it (frames from one sender arrive in order).
 *
 * Needs `npm run build` (the instances run from dist/).
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

interface Peer {
  name: string;
  conn: HubConnection;
  id: string;
  got: unknown[][];
}

const tag = (label: string) => `${label}-${randomBytes(3).toString('hex')}`;
const count = (peer: Peer, text: string) => peer.got.filter((args) => args[1] === text).length;

interface Health {
  status: string;
  backplane: {
    endpoints: { name: string; type: string; online: boolean; listening: boolean; outages: number }[];
  };
}

const healthOf = async (instance: InstanceProcess): Promise<Health> =>
  (await (await fetch(instance.url('/healthz'))).json()) as Health;

describe('two Redis endpoints, hub A (primary east) and hub B (primary west) as processes', () => {
  const channelPrefix = uniquePrefix('endpoints');
  const instances = new InstancePool();
  const clients = new ClientPool();
  const servers: RedisServer[] = [];
  const peers: Peer[] = [];
  const monitors: Redis[] = [];
  let hubA: InstanceProcess;
  let hubB: InstanceProcess;
  const byName = (name: string) => peers.find((p) => p.name === name) as Peer;
  const group = tag('g');

  /** Sends `method(...args, text)` from `sender` and returns who received it (each at most once). */
  const check = async (sender: Peer, method: string, args: unknown[], expected: string[]) => {
    const text = tag(method);
    await sender.conn.invoke(method, ...args, text);
    await waitFor(() => expected.every((name) => count(byName(name), text) >= 1), {
      message: `'${text}' to reach ${expected.join(', ')}`,
    });
    const marker = `${text}#marker`;
    await sender.conn.invoke('All', marker);
    await waitFor(() => peers.every((p) => count(p, marker) >= 1), { message: `marker '${marker}'` });
    for (const peer of peers) {
      expect(count(peer, text), `${peer.name} received '${text}'`).toBeLessThanOrEqual(1);
      expect(count(peer, marker), `${peer.name} received '${marker}'`).toBe(1);
    }
    return peers
      .filter((p) => count(p, text) === 1)
      .map((p) => p.name)
      .sort();
  };

  beforeAll(async () => {
    servers.push(...(await Promise.all([startRedisServer(), startRedisServer()])));
    const [east, west] = servers as [RedisServer, RedisServer];
    const start = (primary: 'east' | 'west', extra: string[]) =>
      instances.startFixture({
        redisUrl: east.url,
        channelPrefix,
        instanceId: `${channelPrefix}-${primary}`,
        args: [
          '--redis-endpoint',
          `east:${primary === 'east' ? 'primary' : 'secondary'}=${east.url}`,
          '--redis-endpoint',
          `west:${primary === 'west' ? 'primary' : 'secondary'}=${west.url}`,
          '--router',
          'east-groups',
          ...extra,
        ],
      });
    [hubA, hubB] = await Promise.all([start('east', []), start('west', ['--negotiate', 'require-endpoint'])]);
    const layout: [string, string, InstanceProcess][] = [
      ['a1', 'alice', hubA],
      ['a2', 'bob', hubA],
      ['b1', 'alice', hubB],
      ['b2', 'carol', hubB],
    ];
    for (const [name, user, hub] of layout) {
      const url = hub === hubB ? `${hub.url()}?endpoint=west` : hub.url();
      const conn = await clients.connect(url, { token: await signToken(user) });
      peers.push({ name, conn, id: conn.connectionId as string, got: record(conn, 'message') });
    }
    // a2 (on A) and b2 (on B) join the group, both added by a1 (the add of b2 crosses endpoints).
    for (const member of ['a2', 'b2']) await byName('a1').conn.invoke('AddToGroup', byName(member).id, group);
  }, 30_000);

  afterEach(() => {
    for (const peer of peers) peer.got.length = 0;
  });

  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
    for (const monitor of monitors) monitor.disconnect();
    await Promise.all(servers.map((s) => s.dispose()));
  });

  it('A listens on east, B on west; both see both endpoints online', async () => {
    const listening = (health: Health) =>
      health.backplane.endpoints.map((e) => `${e.name}:${e.type}:${e.online}:${e.listening}`);
    expect(listening(await healthOf(hubA))).toEqual(['east:primary:true:true', 'west:secondary:true:false']);
    expect(listening(await healthOf(hubB))).toEqual(['east:secondary:true:false', 'west:primary:true:true']);
    expect((await healthOf(hubA)).status).toBe('ok');
    // metrics: one relayhub_backplane_up series per endpoint
    const metrics = await (await fetch(hubA.url('/metrics'))).text();
    const [east, west] = servers as [RedisServer, RedisServer];
    expect(metrics).toContain(`relayhub_backplane_up{endpoint="east=${east.url}"} 1`);
    expect(metrics).toContain(`relayhub_backplane_up{endpoint="west=${west.url}"} 1`);
  });

  it('broadcasts, group, user and connection sends from either side reach exactly the right clients, once', async () => {
    for (const sender of [byName('a1'), byName('b2')]) {
      expect(await check(sender, 'All', [], ['a1', 'a2', 'b1', 'b2'])).toEqual(['a1', 'a2', 'b1', 'b2']);
      const others = ['a1', 'a2', 'b1', 'b2'].filter((name) => name !== sender.name);
      expect(await check(sender, 'Others', [], others)).toEqual(others);
      expect(await check(sender, 'Group', [group], ['a2', 'b2'])).toEqual(['a2', 'b2']);
      expect(await check(sender, 'User', ['alice'], ['a1', 'b1'])).toEqual(['a1', 'b1']);
      expect(await check(sender, 'Users', [['bob', 'carol']], ['a2', 'b2'])).toEqual(['a2', 'b2']);
      expect(await check(sender, 'Client', [byName('b1').id], ['b1'])).toEqual(['b1']);
      expect(await check(sender, 'Client', [byName('a2').id], ['a2'])).toEqual(['a2']);
      expect(await check(sender, 'Clients', [[byName('a1').id, byName('b2').id]], ['a1', 'b2'])).toEqual([
        'a1',
        'b2',
      ]);
      expect(await check(sender, 'Client', ['no-such-connection'], [])).toEqual([]);
    }
  });

  it('a client result from the other side invokes the client once', async () => {
    const b1 = byName('b1');
    let calls = 0;
    b1.conn.on('Twice', (n: number) => {
      calls++;
      return n * 2;
    });
    expect(await byName('a1').conn.invoke('InvokeClient', b1.id, 'Twice', 21)).toBe(42);
    // the marker proves any copy of the request would have arrived (requests and sends share the route)
    await check(byName('a1'), 'Client', [b1.id], ['b1']);
    expect(calls).toBe(1);
  });

  it('group membership added across endpoints ends across endpoints', async () => {
    const leaving = tag('leaving');
    const a1 = byName('a1');
    await a1.conn.invoke('AddToGroup', byName('b1').id, leaving);
    expect(await check(a1, 'Group', [leaving], ['b1'])).toEqual(['b1']);
    await a1.conn.invoke('RemoveFromGroup', byName('b1').id, leaving);
    expect(await check(a1, 'Group', [leaving], [])).toEqual([]);
  });

  it('a custom router sends groups named east-* only through endpoint east (MONITOR on both)', async () => {
    const seen = { east: [] as string[], west: [] as string[] };
    for (const [name, server] of [
      ['east', servers[0]],
      ['west', servers[1]],
    ] as const) {
      const monitor = await new Redis(server?.url as string, { lazyConnect: true }).monitor();
      monitors.push(monitor);
      monitor.on('monitor', (_time: string, args: string[]) => {
        if (String(args[0]).toLowerCase() === 'publish') seen[name].push(String(args[1]));
      });
    }
    const eastGroup = tag('east-g');
    const westGroup = tag('west-g');
    const a1 = byName('a1');
    for (const g of [eastGroup, westGroup]) await a1.conn.invoke('AddToGroup', byName('a2').id, g);
    // from B (which listens on west): the east-* send still reaches a2 on A, through east
    expect(await check(byName('b2'), 'Group', [eastGroup], ['a2'])).toEqual(['a2']);
    expect(await check(byName('b2'), 'Group', [westGroup], ['a2'])).toEqual(['a2']);
    const on = (name: 'east' | 'west', g: string) =>
      seen[name].filter((channel) => channel.includes(g)).length;
    await waitFor(() => on('east', eastGroup) >= 1 && on('west', westGroup) >= 1, {
      message: 'MONITOR to report the group publishes',
    });
    expect(on('east', eastGroup)).toBe(1);
    expect(on('west', eastGroup)).toBe(0);
    // the control: an ordinary group goes through every online endpoint
    expect(on('east', westGroup)).toBe(1);
    expect(on('west', westGroup)).toBe(1);
  });

  it('a negotiateEndpoint that needs ?endpoint= answers 400 without it, serves with it, 503 for one offline', async () => {
    const token = await signToken('dave');
    const negotiate = (query: string) =>
      fetch(`${hubB.url()}/negotiate?negotiateVersion=1${query}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
      });
    const missing = await negotiate('');
    expect(missing.status).toBe(400);
    expect(await missing.json()).toEqual({ error: 'Say which endpoint: ?endpoint=NAME.' });
    const served = await negotiate('&endpoint=west');
    expect(served.status).toBe(200);
    expect(await served.json()).toMatchObject({ negotiateVersion: 1, connectionId: expect.any(String) });
    const none = await negotiate('&endpoint=north');
    expect(none.status).toBe(503);
    expect(((await none.json()) as { error: string }).error).toMatch(/No Redis endpoint is online/);
  });
});
