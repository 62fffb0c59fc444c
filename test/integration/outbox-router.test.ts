/**
 * The outbox worker over two endpoints with the hubs' custom router: `router.inboxEndpoint` decides where
 * each user's rows go (here: every user on `b`, although the default hash puts some on `a`), and nothing
 * is written to the other endpoint's inboxes. Two private redis-servers; Postgres schema of its own.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { inboxEndpointOf } from '../../src/redis/endpoints.js';
import { reliableKeys } from '../../src/redis/keys.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { endpointsFixture } from '../helpers/endpoints-fixture.js';
import type { RedisServer } from '../helpers/redis-server.js';
import { uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/demo';

describe('outbox worker: a custom inbox router', () => {
  const fixture = endpointsFixture();

  it("relays each user's rows to the endpoint the router names", async () => {
    const schema = await fixture.schema('router');
    const [a, b] = (await fixture.redisServers(2)) as [RedisServer, RedisServer];
    const prefix = uniquePrefix('outbox-router');
    const endpoints = [
      { name: 'a', redis: { url: a.url } },
      { name: 'b', redis: { url: b.url } },
    ];
    const users = ['ann', 'ben', 'cal', 'dee', 'eve', 'fox'];
    // the default would put some of them on a
    expect(users.some((u) => inboxEndpointOf(u, endpoints).name === 'a')).toBe(true);
    const seen: string[] = [];
    const worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      endpoints,
      channelPrefix: prefix,
      maintenance: false,
      router: {
        inboxEndpoint: (userId, views) => {
          seen.push(`${userId}:${views.map((v) => `${v.name}/${v.online}`).join(',')}`);
          return views.find((v) => v.name === 'b')!;
        },
      },
    });
    fixture.closeAfter(() => worker.close());
    await worker.start();
    const c = await schema.pool.connect();
    try {
      await c.query('BEGIN');
      for (const user of users) {
        await enqueue(c, { userId: user, target: 'note', args: [user] }, { channelPrefix: prefix, hub: HUB });
      }
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    worker.wake();
    await waitFor(() => worker.stats.relayed === users.length, { message: 'every row relayed' });
    expect(worker.stats.byEndpoint).toEqual({ b: users.length });
    expect(seen).toContain('ann:a/true,b/true');
    const keys = reliableKeys(prefix, HUB);
    const [ra, rb] = [new Redis(a.url), new Redis(b.url)];
    fixture.closeAfter(
      () => ra.disconnect(),
      () => rb.disconnect(),
    );
    for (const user of users) {
      expect(await rb.xlen(keys.user(user).inbox)).toBe(1);
      expect(await ra.exists(keys.user(user).inbox)).toBe(0);
    }
    const { rows } = await schema.pool.query<{ relay_endpoint: string }>(
      'SELECT DISTINCT relay_endpoint FROM relayhub_outbox',
    );
    expect(rows).toEqual([{ relay_endpoint: 'b' }]);
  });
});
