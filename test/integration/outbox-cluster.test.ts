/**
 * The outbox worker and its BullMQ maintenance on a private Redis Cluster (3 primaries + 3 replicas): a
 * row committed for a connected user is relayed (WAIT for a replica), delivered, acked, and then purged by
 * the scheduled `purge` job; the scheduled `sweep` job removes a dead hub instance's routing. BullMQ's keys
 * share one hashtag (`{<prefix>:bull}`), as it requires on a Cluster.
 */
import { Cluster } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { reliableKeys } from '../../src/redis/keys.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import { connectRecorded, ReceivedLog } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'note';

describe('outbox worker and maintenance on Redis Cluster', () => {
  const clients = new ClientPool();
  let cluster: RedisCluster | undefined;
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let inspect: Cluster | undefined;

  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(() => cluster?.dispose());
  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await server?.close();
    await schema?.drop();
    inspect?.disconnect();
    server = worker = schema = inspect = undefined;
  });

  it('relays, records the ack, purges the acked row and sweeps a dead instance through BullMQ', async () => {
    const c = cluster as RedisCluster;
    // note: an ioredis Cluster the app already has is accepted as the target too.
    inspect = new Cluster(c.urls.map((u) => ({ host: '127.0.0.1', port: Number(new URL(u).port) })));
    schema = await createTestSchema('cluster');
    const s = schema;
    const prefix = uniquePrefix('outbox-cluster');
    server = await startServer({
      backplane: new StreamsBackplane({ redis: inspect, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    worker = new OutboxWorker({
      databaseUrl: s.databaseUrl,
      redis: { cluster: c.urls },
      channelPrefix: prefix,
      pollIntervalMs: 50,
      ackSyncIntervalMs: 100,
      maintenance: { purgeIntervalMs: 300, sweepIntervalMs: 300 },
    });
    await worker.start();
    const keys = reliableKeys(prefix, '/hubs/demo');
    // a hub instance that died without closing: listed, no alive key, a delivery stream left behind
    await inspect.sadd(keys.instances, 'ghost');
    await inspect.xadd(keys.deliveries('ghost'), '*', 'u', 'nobody', 'o', '1');

    const log = new ReceivedLog();
    await connectRecorded(clients, server.url(), 'ann', log, TARGET);
    const client = await s.pool.connect();
    try {
      await client.query('BEGIN');
      await enqueue(
        client,
        { userId: 'ann', target: TARGET, args: [{ hello: 'cluster' }] },
        { channelPrefix: prefix },
      );
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    await waitFor(() => log.distinctCount === 1, { message: 'the message to arrive' });
    expect(log.distinct('ann')[0]?.payload).toEqual({ hello: 'cluster' });
    await waitFor(async () => (await s.pool.query('SELECT 1 FROM relayhub_outbox')).rowCount === 0, {
      timeoutMs: 10_000,
      message: 'the acked row to be purged by the scheduled purge job',
    });
    expect(worker.stats.acked).toBe(1);
    await waitFor(async () => (await inspect!.exists(keys.deliveries('ghost'))) === 0, {
      timeoutMs: 10_000,
      message: 'the scheduled sweep to remove the dead instance',
    });
    expect(await inspect.sismember(keys.instances, 'ghost')).toBe(0);
    // BullMQ's keys all carry the one hashtag
    const bull = await inspect.nodes('master')[0]!.keys('*');
    const everyBullKey = (
      await Promise.all(inspect.nodes('master').map((n) => n.keys(`{${prefix}:bull}:*`)))
    ).flat();
    expect(everyBullKey.length).toBeGreaterThan(0);
    expect(bull.filter((k) => k.startsWith(`${prefix}:bull`))).toEqual([]);
  });
});
