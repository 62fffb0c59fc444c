/**
 * Outbox worker SIGKILLed mid-batch, then restarted: 40 users x 50 committed rows (a backlog of 10
 * batches), 40 official clients online, one `relayhub worker` process. A RelayGate (a trigger in the
 * test's schema that waits on an advisory lock the test holds) lets the worker claim a batch and send it
 * to Redis but stops it in the UPDATE that marks the rows relayed: the test lets the first batch through, stops the second there, and
 * SIGKILLs the worker with that batch in hand (in Redis, not marked in Postgres; the test ends the killed
 * worker's session too, whose mark would otherwise commit once the gate opens). A restarted worker (same
 * id) relays the batch again: the lane drops the second copies by message id (`outbox:<id>`), so every
 * user gets every message, in commit order, with gapless offsets, zero missing; copies received before
 * deduplication are counted and reported.
 *
 * Needs `npm run build`. Shared Redis (unique prefix, keys deleted afterwards) and Postgres (own schema).
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { ClientPool } from '../helpers/client.js';
import {
  blockedMarkingRelayed,
  connectRecorded,
  deletePrefix,
  deliveryProblems,
  laneOffsetTotal,
  range,
  ReceivedLog,
  RelayGate,
  uniqueApplicationName,
  unmarkedInRedis,
  withApplicationName,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';
import { DEFAULT_BATCH_SIZE } from '../../src/worker/outbox-worker.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';
const USERS = 40;
const PER_USER = 50;
const BATCH = DEFAULT_BATCH_SIZE; // the worker's default batch size

describe('outbox chaos: worker SIGKILLed mid-batch', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  let gate: RelayGate | undefined;
  let server: TestServer | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;
  let redis: Redis | undefined;

  afterEach(async () => {
    await gate?.end();
    await clients.stopAll();
    await processes.stopAll();
    await server?.close();
    redis?.disconnect();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    gate = server = schema = prefix = redis = undefined;
  });

  it(
    'loses nothing and delivers nothing twice (after dedup) across a SIGKILL and restart',
    { timeout: 50_000 },
    async () => {
      schema = await createTestSchema('kill');
      prefix = uniquePrefix('outbox-kill');
      const s = schema;
      const p = prefix;
      redis = new Redis(REDIS_URL);
      const r = redis;
      server = await startServer({
        backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: p }),
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      });
      const users = range(1, USERS).map((i) => `k${i}`);
      const log = new ReceivedLog();
      await Promise.all(users.map((user) => connectRecorded(clients, server!.url(), user, log, TARGET)));

      // the backlog: 50 transactions, each with one row for every user
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
      // note: rows marked relayed (acked ones may already be purged by the worker's maintenance job, which
      // never touches an unrelayed row): all rows but the unrelayed ones.
      const markedRelayed = async () => {
        const { rows } = await s.pool.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM relayhub_outbox WHERE relayed_at IS NULL',
        );
        return total - rows[0]!.n;
      };

      gate = await RelayGate.install(s.databaseUrl);
      await gate.hold();
      const appName = uniqueApplicationName('kill');
      const workerOptions = {
        redisUrl: REDIS_URL,
        channelPrefix: p,
        databaseUrl: withApplicationName(s.databaseUrl, appName),
        instanceId: `kill-worker-${p}`,
      };
      const victim = await processes.startWorker(workerOptions);
      const blocked = () =>
        waitFor(() => blockedMarkingRelayed(s.pool, appName), {
          timeoutMs: 10_000,
          message: 'the worker waiting to mark its batch relayed',
        });
      // the first batch: sent, stopped at the mark, let through; the gate closes behind it
      await blocked();
      await gate.release();
      await gate.hold();
      expect(await markedRelayed()).toBe(BATCH);
      // the second batch: sent to Redis, stopped at the mark, and the worker is killed there
      await blocked();
      const inFlight = await unmarkedInRedis(s.pool, r, p, HUB);
      const receivedAtKill = log.distinctCount;
      victim.kill('SIGKILL');
      expect(await victim.exited).toMatchObject({ signal: 'SIGKILL' });
      // note: the mark is one statement of its own (no transaction around the pass), already in the
      // killed worker's backend, waiting at the gate; that backend outlives the process until it writes to
      // the closed socket, so the mark would commit when the gate opens. A worker killed between its send
      // and its mark never sent the mark: end the backend, as that kill would have, before opening.
      await s.pool.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
        [appName],
      );
      await waitFor(async () => !(await blockedMarkingRelayed(s.pool, appName)), {
        message: 'the killed worker’s mark ended',
      });
      await gate.release();
      expect(inFlight, 'rows in Redis but not marked relayed when the worker died').toBe(BATCH);
      expect(await unmarkedInRedis(s.pool, r, p, HUB)).toBe(BATCH);
      expect(await markedRelayed()).toBe(BATCH);

      const restarted = await processes.startWorker(workerOptions);
      expect(restarted.workerId).toBe(workerOptions.instanceId);
      await waitFor(() => log.distinctCount === total, {
        timeoutMs: 20_000,
        message: () => `every message after the restart (got ${log.distinctCount} of ${total})`,
      });
      await waitFor(async () => (await markedRelayed()) === total, { message: 'every row marked relayed' });

      console.info(
        `worker kill: ${total} messages; killed with ${inFlight} rows in Redis not marked relayed ` +
          `(after ${BATCH} marked); ${receivedAtKill} received before the restart; ${log.received} copies ` +
          `received, ${log.duplicates} duplicate(s) before dedup, ${log.distinctCount} distinct`,
      );
      expect(deliveryProblems(log, expected)).toEqual([]);
      for (const user of users) {
        // the relay after the restart did not append the in-flight rows a second time: offsets stay gapless
        expect(log.distinct(user).map((x) => x.offset)).toEqual(range(1, PER_USER));
      }
      expect(log.distinctCount).toBe(total);
      expect(await laneOffsetTotal(r, p, HUB, users)).toBe(total);
      expect(log.duplicates).toBe(0);
    },
  );
});
