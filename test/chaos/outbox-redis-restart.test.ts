/**
 * Redis restarted empty under the outbox: a PRIVATE redis-server (started by the test; never the shared
 * one) behind an in-process hub (streams backplane) and an in-process OutboxWorker. Before the restart,
 * `steady` (online) got and acked 10 messages (recorded in Postgres), and 5 offline users had 10 messages
 * each relayed but not acked. Redis restarts with nothing in it: the worker sees a new epoch and relays
 * every unacked row again; the offline users connect and get all of them, in order; `steady`, connected
 * through the restart, gets the messages committed after it, and not its acked ones again. Zero missing.
 *
 * The private redis-server is disposed of, and the schema dropped, in afterEach.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { reliableKeys } from '../../src/redis/keys.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import { connectRecorded, deliveryProblems, range, ReceivedLog, waitForValue } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';

/** What Postgres and Redis hold for each user, for a failure message. */
async function laneState(
  s: TestSchema,
  redis: Redis,
  keys: ReturnType<typeof reliableKeys>,
  users: string[],
): Promise<string> {
  const lines: string[] = [
    `epoch=${await redis.get(keys.epoch)} instances=${await redis.smembers(keys.instances)}`,
  ];
  for (const instance of await redis.smembers(keys.instances)) {
    lines.push(`  ${instance}: alive=${await redis.exists(keys.alive(instance))}`);
  }
  for (const user of users) {
    const { rows } = await s.pool.query<{
      relayed: number;
      unrelayed: number;
      epochs: string;
    }>(
      `SELECT count(*) FILTER (WHERE relayed_at IS NOT NULL)::int AS relayed,
              count(*) FILTER (WHERE relayed_at IS NULL)::int AS unrelayed,
              string_agg(DISTINCT coalesce(relay_epoch, '-'), ',') AS epochs
         FROM relayhub_outbox WHERE user_id = $1`,
      [user],
    );
    const k = keys.user(user);
    lines.push(
      `  ${user}: db ${JSON.stringify(rows[0])} redis seq=${await redis.get(k.seq)} ` +
        `inbox=${await redis.xlen(k.inbox)} acked=${await redis.get(k.acked)} ` +
        `presence=${JSON.stringify(await redis.smembers(k.presence))}`,
    );
  }
  return lines.join('\n');
}

describe('outbox chaos: Redis restarted empty', () => {
  const clients = new ClientPool();
  let redisServer: RedisServer | undefined;
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let redis: Redis | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await server?.close();
    redis?.disconnect();
    await redisServer?.dispose();
    await schema?.drop();
    redisServer = server = worker = schema = redis = undefined;
  });

  it(
    'relays every unacked row again after Redis lost its memory; zero missing',
    { timeout: 45_000 },
    async () => {
      redisServer = await startRedisServer();
      const redisUrl = redisServer.url;
      schema = await createTestSchema('redis');
      const s = schema;
      const prefix = uniquePrefix('outbox-redis');
      server = await startServer({
        backplane: new StreamsBackplane({ redisUrl, channelPrefix: prefix, maxRetryDelayMs: 200 }),
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      });
      worker = new OutboxWorker({
        databaseUrl: s.databaseUrl,
        redisUrl,
        channelPrefix: prefix,
        maintenance: false,
        pollIntervalMs: 100,
        ackSyncIntervalMs: 100,
        rebalanceIntervalMs: 500,
      });
      await worker.start();
      const w = worker;
      const log = new ReceivedLog();
      const expected = new Map<string, string[]>();
      const add = async (user: string, seq: number) => {
        const c = await s.pool.connect();
        try {
          await c.query('BEGIN');
          const { id } = await enqueue(
            c,
            { userId: user, target: TARGET, args: [{ user, seq }] },
            { channelPrefix: prefix },
          );
          await c.query('COMMIT');
          const ids = expected.get(user) ?? [];
          ids.push(`outbox:${id}`);
          expected.set(user, ids);
          return id;
        } finally {
          c.release();
        }
      };
      const rowsOf = async (users: string[]) => {
        const { rows } = await s.pool.query<{
          id: string;
          relayed_at: Date | null;
          relay_epoch: string | null;
          acked_at: Date | null;
        }>(
          'SELECT id, relayed_at, relay_epoch, acked_at FROM relayhub_outbox WHERE user_id = ANY($1) ORDER BY id',
          [users],
        );
        return rows;
      };

      // before: steady gets and acks 10; the offline users' 10 each are relayed, unacked
      await connectRecorded(clients, server.url(), 'steady', log, TARGET);
      for (const seq of range(1, 10)) await add('steady', seq);
      const offline = range(1, 5).map((i) => `off${i}`);
      for (const seq of range(1, 10)) for (const user of offline) await add(user, seq);
      await waitFor(() => log.distinctCount === 10, { message: 'steady’s first 10' });
      // note: the ack sync deletes acked rows
      await waitFor(async () => (await rowsOf(['steady'])).length === 0, {
        message: 'steady’s acks applied',
      });
      const relayedBefore = await waitForValue(async () => {
        const rows = await rowsOf(offline);
        return rows.every((r) => r.relayed_at !== null) && rows;
      });
      const oldEpoch = relayedBefore[0]!.relay_epoch;
      expect(oldEpoch).toBeTruthy();
      expect(relayedBefore.every((r) => r.relay_epoch === oldEpoch && r.acked_at === null)).toBe(true);
      const rerelayedBefore = w.stats.rerelayed;

      // the restart: the same port, nothing in it
      await redisServer.stop();
      await redisServer.start();
      redis = new Redis(redisUrl);
      const keys = reliableKeys(prefix, HUB);
      expect(await redis.exists(keys.user('off1').inbox, keys.user('steady').seq)).toBe(0);

      // the offline users come online now; more rows are committed for everyone
      await Promise.all(offline.map((user) => connectRecorded(clients, server!.url(), user, log, TARGET)));
      for (const seq of range(11, 15)) for (const user of ['steady', ...offline]) await add(user, seq);

      const total = [...expected.values()].reduce((n, ids) => n + ids.length, 0);
      try {
        await waitFor(() => log.distinctCount === total, { timeoutMs: 20_000, intervalMs: 50 });
      } catch {
        throw new Error(
          `not everything arrived after the restart (${log.distinctCount} of ${total}):\n` +
            deliveryProblems(log, expected).join('\n') +
            `\n${await laneState(s, redis, keys, ['steady', ...offline])}`,
        );
      }
      expect(deliveryProblems(log, expected)).toEqual([]);
      const newEpoch = await redis.get(keys.epoch);
      expect(newEpoch).toBeTruthy();
      expect(newEpoch).not.toBe(oldEpoch);
      // every offline user's row relayed again under the new epoch (a client may get a message before the
      // worker's pass committed its row as relayed: wait for the marks). A row that is gone was acked, and
      // the ack sync deletes only rows marked with the epoch of the Redis the ack was read from: the new one.
      await waitFor(async () => (await rowsOf(offline)).every((r) => r.relay_epoch === newEpoch), {
        message: 'every row marked relayed under the new epoch',
      });
      expect(w.stats.rerelayed - rerelayedBefore).toBeGreaterThanOrEqual(offline.length * 10);
      // steady's acked messages were not relayed again: each of its 15 ids arrived once
      expect(log.copies('steady').map((r) => r.messageId)).toEqual(expected.get('steady'));
      for (const user of offline) {
        expect(log.distinct(user).map((r) => (r.payload as { seq: number }).seq)).toEqual(range(1, 15));
      }
      console.info(
        `redis restart: ${total} messages (${offline.length * 10} relayed again under the new epoch, ` +
          `stats.rerelayed +${w.stats.rerelayed - rerelayedBefore}); ${log.received} copies, ` +
          `${log.duplicates} duplicate(s) before dedup`,
      );
    },
  );
});
