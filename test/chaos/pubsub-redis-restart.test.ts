/**
 * Redis goes away and comes back (empty) under two hub instances on the PUB/SUB backplane. While it is
 * away, a send that needs it fails fast with ERR_BACKPLANE_UNAVAILABLE, and health says `degraded` (and
 * /healthz answers 503). Once it is back on the same port, the instances re-subscribe by themselves:
 * health is `ready` again with `possibleGaps` counted, and cross-instance delivery (all, a group joined
 * before the outage, a user) works without restarting anything.
 *
 * Runs its own redis-server on a free port (never the shared one). Every wait is bounded.
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { RelayhubError } from '../../src/errors.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { ClientPool, record } from '../helpers/client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const tag = (label: string) => `${label}-${randomBytes(3).toString('hex')}`;

/** The settled outcome of `promise` and how long it took; fails (instead of hanging) after `limitMs`. */
async function timed(promise: Promise<unknown>, limitMs: number): Promise<{ error?: Error; ms: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    promise.then(
      () => ({}),
      (error: Error) => ({ error }),
    ),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No outcome within ${limitMs} ms (hang).`)), limitMs);
    }),
  ]);
  clearTimeout(timer);
  return { ...outcome, ms: Date.now() - started };
}

async function healthz(server: TestServer): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${server.baseUrl}/healthz`);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('pubsub: Redis restarts under running instances', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  let redis: RedisServer | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
    await redis?.dispose();
    redis = undefined;
  });

  it('fails sends fast while Redis is down, then re-subscribes and delivers again', async () => {
    redis = await startRedisServer();
    const channelPrefix = uniquePrefix('chaos');
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({
          backplane: new PubSubBackplane({
            redisUrl: redis.url,
            channelPrefix,
            instanceId: `chaos-${i}`,
            connectTimeoutMs: 1_000,
            maxRetryDelayMs: 100,
          }),
          authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
          enableDetailedErrors: true,
        }),
      );
    }
    const [a, b] = servers as [TestServer, TestServer];
    const connect = async (server: TestServer, user: string) =>
      clients.connect(server.url(), { token: await signToken(user) });
    // alice on A and on B, bob on B; bob joins the room before the outage
    const aliceA = await connect(a, 'alice');
    const aliceB = await connect(b, 'alice');
    const bob = await connect(b, 'bob');
    const got = new Map<HubConnection, unknown[][]>(
      [aliceA, aliceB, bob].map((c) => [c, record(c, 'message')] as const),
    );
    const count = (c: HubConnection, text: string) =>
      (got.get(c) as unknown[][]).filter((args) => args[1] === text).length;
    await bob.invoke('JoinGroup', 'room');
    const before = tag('before');
    await aliceA.invoke('SendToAll', before);
    await waitFor(() => count(bob, before) === 1 && count(aliceB, before) === 1, {
      message: 'cross-instance delivery before the outage',
    });
    for (const s of servers)
      expect(s.server.backplaneHealth()).toMatchObject({ status: 'ready', possibleGaps: 0 });

    // ---- Redis goes away ----
    await redis.stop();
    for (const s of servers) {
      await waitFor(() => s.server.backplaneHealth().status === 'degraded', {
        timeoutMs: 3_000,
        message: 'health to become degraded',
      });
    }
    const down = await healthz(a);
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({
      status: 'degraded',
      backplane: { kind: 'pubsub', status: 'degraded' },
    });

    // a client's SendToAll: the hub method completes with the backplane's error, at once
    const failedBefore = a.server.backplaneHealth().failedSends;
    const viaClient = await timed(aliceA.invoke('SendToAll', tag('during')), 5_000);
    expect(viaClient.error?.message).toMatch(/SendToAll/);
    expect(viaClient.error?.message).toMatch(/Redis at redis:\/\/127\.0\.0\.1:\d+ is unreachable/);
    expect(viaClient.ms).toBeLessThan(1_000);
    const viaGroup = await timed(aliceA.invoke('SendToGroup', 'room', tag('during')), 5_000);
    expect(viaGroup.error?.message).toMatch(/is unreachable/);
    expect(viaGroup.ms).toBeLessThan(1_000);
    // from outside a hub method: the error code itself
    const viaServer = await timed(
      a.server.hub(DEMO_HUB_PATH).clients.user('bob').send('message', 'x', 'y'),
      5_000,
    );
    expect(viaServer.error).toBeInstanceOf(RelayhubError);
    expect((viaServer.error as RelayhubError).code).toBe('ERR_BACKPLANE_UNAVAILABLE');
    expect(viaServer.ms).toBeLessThan(1_000);
    expect(a.server.backplaneHealth().failedSends).toBeGreaterThanOrEqual(failedBefore + 3);
    // an outage that lasts (the instances retry every 100 ms meanwhile): sends keep failing fast and
    // health stays degraded throughout
    const downSince = Date.now();
    while (Date.now() - downSince < 600) {
      const again = await timed(bob.invoke('SendToAll', tag('during')), 5_000);
      expect(again.error?.message).toMatch(/is unreachable/);
      expect(again.ms).toBeLessThan(1_000);
      for (const s of servers) expect(s.server.backplaneHealth().status).toBe('degraded');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    // ---- Redis comes back on the same port, empty ----
    await redis.start();
    for (const s of servers) {
      await waitFor(() => s.server.backplaneHealth().status === 'ready', {
        timeoutMs: 10_000,
        message: 'health to become ready again',
      });
      // one outage, one lost subscription (not one per failed reconnect attempt)
      expect(s.server.backplaneHealth().possibleGaps).toBe(1);
    }
    const up = await healthz(b);
    expect(up.status).toBe(200);
    expect(up.body).toMatchObject({ status: 'ok', backplane: { status: 'ready' } });

    // all
    const afterAll = tag('after-all');
    await aliceA.invoke('SendToAll', afterAll);
    await waitFor(() => [aliceA, aliceB, bob].every((c) => count(c, afterAll) === 1), {
      message: 'SendToAll to reach both instances after the restart',
    });
    // the group bob joined before the outage (its subscription had to be restored)
    const afterGroup = tag('after-group');
    await aliceA.invoke('SendToGroup', 'room', afterGroup);
    await waitFor(() => count(bob, afterGroup) === 1, { message: 'SendToGroup to reach bob on B' });
    // a user with a connection on each instance, from the other instance
    const afterUser = tag('after-user');
    await bob.invoke('SendToUser', 'alice', afterUser);
    await waitFor(() => count(aliceA, afterUser) === 1 && count(aliceB, afterUser) === 1, {
      message: "SendToUser to reach alice's connections on A and B",
    });
    // exactly those: a marker from each sender reaches everyone after what they sent
    const marker = tag('marker');
    await aliceA.invoke('SendToAll', marker);
    await bob.invoke('SendToAll', `${marker}-2`);
    await waitFor(
      () => [aliceA, aliceB, bob].every((c) => count(c, marker) + count(c, `${marker}-2`) === 2),
      {
        message: 'the markers to reach everyone',
      },
    );
    expect([aliceA, aliceB, bob].map((c) => count(c, afterGroup))).toEqual([0, 0, 1]);
    expect([aliceA, aliceB, bob].map((c) => count(c, afterUser))).toEqual([1, 1, 0]);
  });
});
