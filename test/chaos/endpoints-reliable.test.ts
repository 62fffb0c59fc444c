/**
 * The reliable lane on two Redis endpoints: one hub (in this process: a single instance) on an
 * `EndpointsBackplane` of kind `streams` over two private redis-servers, `a` (primary) and `b`
 * (secondary). Each user's inbox lives on `inboxEndpointOf(user, [a, b])`; the test picks users of both.
 * While `hub.reliable` sends are paced and retried with the same key on ERR_BACKPLANE_UNAVAILABLE, Redis
 * `a` is frozen (SIGSTOP) for 5 s: sends to a's users reject meanwhile (nothing is stored), sends to b's
 * users go on. Afterwards every message has arrived, once, in send order, with gapless offsets.
 *
 * Never touches the shared Redis.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  EndpointsBackplane,
  type EndpointsHealth,
} from '../../src/backplane/endpoints/endpoints-backplane.js';
import { RelayhubError } from '../../src/errors.js';
import { inboxEndpointOf } from '../../src/redis/endpoints.js';
import { ClientPool } from '../helpers/client.js';
import { MessageTracker } from '../helpers/message-tracker.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { waitFor } from '../helpers/wait-for.js';
import { connectTracked, deliveryProblems, sendPlan, waitForDelivery } from './reliable-kit.js';

const PER_USER = 60;
const OUTAGE_MS = 5_000;
const PROBE_MS = 250;

describe('reliable lane on endpoints: the inbox endpoint of some users frozen for 5 s', () => {
  const clients = new ClientPool();
  let a: RedisServer | undefined;
  let b: RedisServer | undefined;
  let hub: TestServer | undefined;
  let thaw: NodeJS.Timeout | undefined;

  afterEach(async () => {
    clearTimeout(thaw);
    a?.resume();
    await clients.stopAll();
    await hub?.close();
    await Promise.all([a?.dispose(), b?.dispose()]);
    a = b = hub = undefined;
  });

  it('rejects sends to users whose inbox endpoint is down, delivers everything once and in order after', async () => {
    [a, b] = await Promise.all([startRedisServer(), startRedisServer()]);
    const endpoints = [
      { name: 'a', redis: { url: a.url } },
      { name: 'b', redis: { url: b.url }, type: 'secondary' as const },
    ];
    hub = await startServer({
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      backplane: new EndpointsBackplane({
        kind: 'streams',
        endpoints,
        channelPrefix: uniquePrefix('endpoints-reliable'),
        healthProbeIntervalMs: PROBE_MS,
        commandTimeoutMs: 1_000,
        reliable: { ackTimeoutMs: 2_000 },
      }),
    });
    const candidates = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    const onA = candidates.filter((u) => inboxEndpointOf(u, endpoints).name === 'a').slice(0, 4);
    const onB = candidates.filter((u) => inboxEndpointOf(u, endpoints).name === 'b').slice(0, 2);
    expect(onA).toHaveLength(4);
    expect(onB).toHaveLength(2);
    const tracker = new MessageTracker();
    for (const user of [...onA, ...onB]) await connectTracked(clients, hub.url(), user, tracker);

    const server = hub.server;
    const paused = { at: 0, until: 0 };
    const rejected = new Map<string, number>();
    let noticed: Promise<number> = Promise.resolve(Number.NaN);
    // note: hub.reliable, counting which users' sends were refused while a was frozen
    const reliable = {
      send: async (message: { userId: string; target: string; args: unknown[]; key?: string }) => {
        try {
          return await server.hub('/hubs/demo').reliable.send(message);
        } catch (error) {
          if (error instanceof RelayhubError && error.code === 'ERR_BACKPLANE_UNAVAILABLE') {
            rejected.set(message.userId, (rejected.get(message.userId) ?? 0) + 1);
          }
          throw error;
        }
      },
    };
    const stats = await sendPlan({
      producer: reliable,
      tracker,
      users: [...onA, ...onB],
      perUser: PER_USER,
      tag: randomBytes(3).toString('hex'),
      concurrency: 6,
      ratePerSecond: 40,
      onProgress: (sent) => {
        if (paused.at !== 0 || sent < (PER_USER * 6) / 4) return;
        paused.at = Date.now();
        a?.pause();
        noticed = waitFor(
          () => !(server.backplaneHealth() as EndpointsHealth).endpoints.find((e) => e.name === 'a')?.online,
          { timeoutMs: OUTAGE_MS, intervalMs: 10, message: 'the frozen endpoint to be seen offline' },
        ).then(() => Date.now() - paused.at);
        thaw = setTimeout(() => {
          a?.resume();
          paused.until = Date.now();
        }, OUTAGE_MS);
      },
    });
    expect(paused.at).toBeGreaterThan(0);
    // a Redis that answers nothing is seen offline within 2 × healthProbeIntervalMs + the check interval
    // (750 ms here), with slack for a loaded machine
    const noticedMs = await noticed;
    console.info(`endpoints reliable: frozen endpoint seen offline after ${noticedMs} ms`);
    expect(noticedMs).toBeLessThan(2 * PROBE_MS + 250 + 1_500);
    await waitFor(() => paused.until > 0, { timeoutMs: OUTAGE_MS + 2_000, message: 'the outage to end' });
    await waitForDelivery(tracker, 20_000);
    expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
    const counts = tracker.counts();
    expect(counts.sent).toBe(PER_USER * 6);
    expect(counts.duplicated, tracker.summary()).toBe(0);
    // while a was frozen, sends to its users were refused and retried; b's users never were
    expect(stats.retries).toBeGreaterThan(0);
    for (const user of onA) expect(rejected.get(user) ?? 0, user).toBeGreaterThan(0);
    for (const user of onB) expect(rejected.get(user) ?? 0, user).toBe(0);
    const health = server.backplaneHealth() as EndpointsHealth;
    expect(health.endpoints.find((e) => e.name === 'a')).toMatchObject({ online: true, outages: 1 });
  }, 60_000);
});
