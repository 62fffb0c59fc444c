/**
 * Two outbox workers (in-process OutboxWorker instances, each with its own id and application_name) on one
 * outbox: they split the 64 partitions (each holds some, none holds one the other holds, together all),
 * and 40 users x 25 messages, enqueued by concurrent transactions of several users each, reach the users'
 * official clients (on two hub instances) in commit order per user, with both workers relaying.
 *
 * Also: workers of two outboxes in two schemas of one database do not take each other's partitions.
 *
 * Shared Redis (unique prefix, keys deleted afterwards) and Postgres (schemas of the test's own, dropped).
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { PARTITIONS } from '../../src/outbox/schema.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deletePrefix,
  deliveryProblems,
  partitionsHeld,
  range,
  ReceivedLog,
  uniqueApplicationName,
  withApplicationName,
  waitForValue,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'note';
const USERS = 40;
const PER_USER = 25;
const USERS_PER_TX = 5;

describe('outbox: two workers', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  const workers: OutboxWorker[] = [];
  const schemas: TestSchema[] = [];
  const pools: pg.Pool[] = [];
  const prefixes: string[] = [];

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
    await Promise.allSettled(pools.splice(0).map((p) => p.end()));
    await Promise.allSettled(schemas.splice(0).map((s) => s.drop()));
    await Promise.allSettled(prefixes.splice(0).map((p) => deletePrefix(REDIS_URL, p)));
  });

  async function hub(channelPrefix: string): Promise<TestServer> {
    const server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    servers.push(server);
    return server;
  }

  async function startWorker(schema: TestSchema, channelPrefix: string, name: string): Promise<OutboxWorker> {
    const worker = new OutboxWorker({
      workerId: name,
      databaseUrl: withApplicationName(schema.databaseUrl, name),
      redisUrl: REDIS_URL,
      channelPrefix,
      maintenance: false,
      rebalanceIntervalMs: 200,
      ackSyncIntervalMs: 200,
    });
    workers.push(worker);
    await worker.start();
    return worker;
  }

  it(
    'split the partitions and deliver 40 users x 25 messages in order per user',
    { timeout: 45_000 },
    async () => {
      const schema = await createTestSchema('two');
      schemas.push(schema);
      const prefix = uniquePrefix('outbox-two');
      prefixes.push(prefix);
      const hubs = [await hub(prefix), await hub(prefix)];
      const names = [uniqueApplicationName('w1'), uniqueApplicationName('w2')];
      const [w1, w2] = [
        await startWorker(schema, prefix, names[0]!),
        await startWorker(schema, prefix, names[1]!),
      ];

      // each worker settles on its fair share (32), disjoint, together every partition
      const held = await waitForValue(
        async () => {
          const h = await partitionsHeld(schema.pool, names);
          const [a, b] = names.map((n) => h.get(n) ?? []);
          return a!.length === PARTITIONS / 2 && b!.length === PARTITIONS / 2 && h;
        },
        { timeoutMs: 10_000, message: 'the partitions split 32/32' },
      );
      const [a, b] = names.map((n) => held.get(n) ?? []);
      expect(new Set([...a!, ...b!]).size).toBe(PARTITIONS);

      const users = range(1, USERS).map((i) => `u${i}`);
      const log = new ReceivedLog();
      await Promise.all(
        users.map((user, i) => connectRecorded(clients, hubs[i % 2]!.url(), user, log, TARGET)),
      );

      const pool = new pg.Pool({ connectionString: schema.databaseUrl, max: 8 });
      pools.push(pool);
      const expected = new Map<string, string[]>(users.map((u) => [u, []]));
      // note: round by round, every user gets message `seq`; one transaction carries 5 users' messages and
      // the 8 transactions of a round commit concurrently. A user's messages commit in seq order.
      for (const seq of range(1, PER_USER)) {
        await Promise.all(
          range(0, USERS / USERS_PER_TX - 1).map(async (t) => {
            const group = users.slice(t * USERS_PER_TX, (t + 1) * USERS_PER_TX);
            const c = await pool.connect();
            try {
              await c.query('BEGIN');
              const ids: [string, string][] = [];
              for (const user of group) {
                const { id } = await enqueue(
                  c,
                  { userId: user, target: TARGET, args: [{ user, seq }] },
                  { channelPrefix: prefix },
                );
                ids.push([user, `outbox:${id}`]);
              }
              await c.query('COMMIT');
              for (const [user, id] of ids) expected.get(user)!.push(id);
            } catch (error) {
              await c.query('ROLLBACK').catch(() => undefined);
              throw error;
            } finally {
              c.release();
            }
          }),
        );
      }

      const total = USERS * PER_USER;
      await waitFor(() => log.distinctCount === total, {
        timeoutMs: 20_000,
        message: () => `all ${total} messages (got ${log.distinctCount})`,
      });
      expect(deliveryProblems(log, expected)).toEqual([]);
      for (const user of users) {
        expect(log.distinct(user).map((r) => (r.payload as { seq: number }).seq)).toEqual(range(1, PER_USER));
        // each worker relays a user's rows with the next gapless offsets
        expect(log.distinct(user).map((r) => r.offset)).toEqual(range(1, PER_USER));
      }
      // note: a client may get a message before the worker's pass committed its rows as relayed.
      await waitFor(() => w1!.stats.relayed + w2!.stats.relayed >= total, {
        message: 'every pass committed',
      });
      console.info(
        `two workers: ${total} messages, ${log.received} copies received, ${log.duplicates} duplicates; ` +
          `relayed by ${w1!.workerId}: ${w1!.stats.relayed}, by ${w2!.workerId}: ${w2!.stats.relayed}`,
      );
      expect(log.duplicates).toBe(0);
      expect(w1!.stats.relayed).toBeGreaterThan(0);
      expect(w2!.stats.relayed).toBeGreaterThan(0);
      expect(w1!.stats.relayed + w2!.stats.relayed).toBe(total);
      // both still own what they owned (no partition changed hands under load)
      expect(await partitionsHeld(schema.pool, names)).toEqual(held);
      // every row relayed, and the acks come back (an acked row is deleted)
      await waitFor(
        async () => {
          const { rows } = await schema.pool.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM relayhub_outbox',
          );
          return rows[0]?.n === 0;
        },
        { timeoutMs: 5_000, message: 'every row acked' },
      );
    },
  );

  it('workers of two schemas in one database do not take each other’s partitions', async () => {
    const [one, two] = [await createTestSchema('iso1'), await createTestSchema('iso2')];
    schemas.push(one, two);
    const [p1, p2] = [uniquePrefix('outbox-iso1'), uniquePrefix('outbox-iso2')];
    prefixes.push(p1, p2);
    const names = [uniqueApplicationName('iso1'), uniqueApplicationName('iso2')];
    await startWorker(one, p1, names[0]!);
    await waitFor(
      async () => (await partitionsHeld(one.pool, [names[0]!])).get(names[0]!)?.length === PARTITIONS,
      {
        message: 'the first worker owns every partition of its outbox',
      },
    );
    await startWorker(two, p2, names[1]!);
    // alone on its outbox, the second worker owns every partition of it too
    await waitFor(
      async () => (await partitionsHeld(two.pool, [names[1]!])).get(names[1]!)?.length === PARTITIONS,
      { timeoutMs: 5_000, message: 'the second worker owns every partition of its own outbox' },
    );
    const server = await hub(p2);
    const log = new ReceivedLog();
    await connectRecorded(clients, server.url(), 'zed', log, TARGET);
    const c = await two.pool.connect();
    let id: string;
    try {
      await c.query('BEGIN');
      ({ id } = await enqueue(
        c,
        { userId: 'zed', target: TARGET, args: ['in the second schema'] },
        { channelPrefix: p2 },
      ));
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    await waitFor(() => log.has('zed', `outbox:${id}`), {
      timeoutMs: 5_000,
      message: 'the second outbox relays',
    });
  });
});
