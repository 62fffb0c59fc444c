/**
 * Graceful shutdown of an outbox worker: two `relayhub worker` processes split the partitions. Both are
 * frozen (SIGSTOP) while idle, a RelayGate (a trigger in the test's schema waiting on an advisory lock the
 * test holds) is closed, and a backlog of 40 users x 50 rows is committed (40 official clients online).
 * Thawed, worker 1 claims a full batch, sends it to Redis and waits at the gate to mark it relayed: the
 * test sends it SIGTERM there, and it is still running 500 ms later. Opened, the gate lets it finish the
 * batch in hand (afterwards nothing it put in Redis is left unmarked, and it took no further batch), give
 * its partitions back, withdraw, and exit 0. Worker 2 stays frozen until then (so that it takes nothing
 * over before the test has looked); thawed, it takes every partition and relays the rest: every message
 * arrives, in order per user, zero missing.
 *
 * Needs `npm run build`. Shared Redis (unique prefix, keys deleted afterwards) and Postgres (own schema).
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { PARTITIONS, partitionOf } from '../../src/outbox/schema.js';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deletePrefix,
  deliveryProblems,
  laneOffsetTotal,
  partitionsHeld,
  range,
  ReceivedLog,
  RelayGate,
  blockedMarkingRelayed,
  uniqueApplicationName,
  unmarkedInRedis,
  withApplicationName,
  waitForValue,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { InstancePool, type WorkerProcess } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';
import { DEFAULT_BATCH_SIZE } from '../../src/worker/outbox-worker.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';
const USERS = 40;
// note: enough rows that worker 1's half is more than one batch (so that 'no other batch' means something)
const PER_USER = 150;
const BATCH = DEFAULT_BATCH_SIZE; // the worker's default batch size

describe('outbox chaos: SIGTERM to a worker', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  const frozen = new Set<WorkerProcess>();
  let gate: RelayGate | undefined;
  let server: TestServer | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;
  let redis: Redis | undefined;

  afterEach(async () => {
    for (const worker of frozen) worker.kill('SIGCONT');
    frozen.clear();
    await gate?.end();
    await clients.stopAll();
    await processes.stopAll();
    await server?.close();
    redis?.disconnect();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    gate = server = schema = prefix = redis = undefined;
  });

  const freeze = (worker: WorkerProcess) => {
    worker.kill('SIGSTOP');
    frozen.add(worker);
  };
  const thaw = (worker: WorkerProcess) => {
    worker.kill('SIGCONT');
    frozen.delete(worker);
  };

  it(
    'finishes the batch in hand, exits 0, and the other worker takes its partitions',
    { timeout: 50_000 },
    async () => {
      schema = await createTestSchema('term');
      prefix = uniquePrefix('outbox-term');
      const s = schema;
      const p = prefix;
      redis = new Redis(REDIS_URL);
      const r = redis;
      server = await startServer({
        backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: p }),
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      });
      const users = range(1, USERS).map((i) => `t${i}`);
      const log = new ReceivedLog();
      await Promise.all(users.map((user) => connectRecorded(clients, server!.url(), user, log, TARGET)));

      const names = [uniqueApplicationName('term1'), uniqueApplicationName('term2')];
      const [w1, w2] = await Promise.all(
        names.map((name) =>
          processes.startWorker({
            redisUrl: REDIS_URL,
            channelPrefix: p,
            databaseUrl: withApplicationName(s.databaseUrl, name),
            instanceId: name,
          }),
        ),
      );
      const held = await waitForValue(
        async () => {
          const h = await partitionsHeld(s.pool, names);
          return (
            h.get(names[0]!)?.length === PARTITIONS / 2 && h.get(names[1]!)?.length === PARTITIONS / 2 && h
          );
        },
        { timeoutMs: 15_000, message: 'the partitions split 32/32' },
      );
      const partitions1 = held.get(names[0]!)!;
      const users1 = users.filter((u) => partitions1.includes(partitionOf(u)));
      expect(users1.length).toBeGreaterThan(0);
      expect(users1.length).toBeLessThan(USERS);

      // both workers frozen while they have nothing in hand; the gate closed before the backlog comes
      freeze(w1!);
      freeze(w2!);
      gate = await RelayGate.install(s.databaseUrl);
      await gate.hold();
      const expected = new Map<string, string[]>(users.map((u) => [u, []]));
      const c = await s.pool.connect();
      try {
        for (const seq of range(1, PER_USER)) {
          await c.query('BEGIN');
          for (const user of users) {
            const { id } = await enqueue(
              c,
              { userId: user, target: TARGET, args: [{ user, seq }] },
              { channelPrefix: p },
            );
            expected.get(user)!.push(`outbox:${id}`);
          }
          await c.query('COMMIT');
        }
      } finally {
        c.release();
      }
      const total = USERS * PER_USER;
      const total1 = users1.length * PER_USER;
      expect(total1).toBeGreaterThan(BATCH);
      // note: rows marked relayed (acked ones may already be purged by the maintenance job, which never
      // touches an unrelayed row): all of worker 1's rows but the unrelayed ones.
      const markedRelayed1 = async () => {
        const { rows } = await s.pool.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM relayhub_outbox WHERE relayed_at IS NULL AND partition = ANY($1)',
          [partitions1],
        );
        return total1 - rows[0]!.n;
      };

      // worker 1, thawed, has a full batch in hand: in Redis, waiting at the gate to be marked relayed
      thaw(w1!);
      await waitFor(() => blockedMarkingRelayed(s.pool, names[0]!), {
        timeoutMs: 10_000,
        message: 'worker 1 waiting to mark its batch relayed',
      });
      const inHand = await unmarkedInRedis(s.pool, r, p, HUB, partitions1);
      expect(inHand).toBe(BATCH);
      expect(await markedRelayed1()).toBe(0);
      w1!.kill('SIGTERM');
      // a deliberate hold: the batch stays in hand for 500 ms, and the worker waits for it
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(w1!.hasExited).toBe(false);
      expect(await blockedMarkingRelayed(s.pool, names[0]!)).toBe(true);
      await gate.release();
      const exit = await w1!.exited;
      expect(exit, w1!.output()).toEqual({ code: 0, signal: null });

      // the batch in hand was finished, and no other one was started
      expect(await unmarkedInRedis(s.pool, r, p, HUB, partitions1)).toBe(0);
      const markedAtExit = await markedRelayed1();
      expect(markedAtExit).toBe(inHand);
      expect(await laneOffsetTotal(r, p, HUB, users1)).toBe(inHand);
      // it gave its partitions back and withdrew
      expect((await partitionsHeld(s.pool, names)).get(names[0]!)).toEqual([]);
      const { rows: registered } = await s.pool.query<{ id: string }>(
        'SELECT id FROM relayhub_workers ORDER BY id',
      );
      expect(registered.map((w) => w.id)).toEqual([names[1]]);

      thaw(w2!);
      await waitFor(async () => (await partitionsHeld(s.pool, names)).get(names[1]!)?.length === PARTITIONS, {
        timeoutMs: 10_000,
        message: 'worker 2 takes every partition',
      });
      await waitFor(() => log.distinctCount === total, {
        timeoutMs: 20_000,
        message: () => `every message (got ${log.distinctCount} of ${total})`,
      });
      console.info(
        `sigterm: ${total} messages (${total1} in worker 1's ${partitions1.length} partitions); ${inHand} ` +
          `in hand at SIGTERM, all ${markedAtExit} marked relayed at its exit (code 0), none left unmarked; ` +
          `${log.received} copies, ${log.duplicates} duplicate(s) before dedup`,
      );
      expect(deliveryProblems(log, expected)).toEqual([]);
      for (const user of users) expect(log.distinct(user).map((x) => x.offset)).toEqual(range(1, PER_USER));
      expect(log.duplicates).toBe(0);
    },
  );
});
