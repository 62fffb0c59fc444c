/**
 * Postgres connections killed under the outbox worker: the worker's connection string carries a unique
 * `application_name`, so `pg_terminate_backend` hits only its backends (its relay connection holding the
 * partition locks, its LISTEN connection, its pool), never another session. While 20 users x 30 messages
 * are committed at a steady pace (20 online official clients), the worker's backends are terminated three
 * times. It reconnects, takes its partitions back, and relays on: zero missing, in order per user.
 *
 * In-process hub and worker on the shared Redis (unique prefix, keys deleted) and Postgres (own schema).
 */
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
  terminateBackends,
  uniqueApplicationName,
  withApplicationName,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const USERS = 20;
const PER_USER = 30;
const KILLS = 3;

describe('outbox chaos: Postgres connections killed under the worker', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await server?.close();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    server = worker = schema = prefix = undefined;
  });

  it('reconnects, takes its partitions back and relays everything', { timeout: 45_000 }, async () => {
    schema = await createTestSchema('pgkill');
    prefix = uniquePrefix('outbox-pgkill');
    const s = schema;
    server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    const appName = uniqueApplicationName('pgkill');
    worker = new OutboxWorker({
      databaseUrl: withApplicationName(s.databaseUrl, appName),
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      maintenance: false,
      pollIntervalMs: 200,
      ackSyncIntervalMs: 200,
      rebalanceIntervalMs: 500,
    });
    await worker.start();
    const w = worker;
    const users = range(1, USERS).map((i) => `p${i}`);
    const log = new ReceivedLog();
    await Promise.all(users.map((user) => connectRecorded(clients, server!.url(), user, log, TARGET)));
    await waitFor(async () => (await partitionsHeld(s.pool, [appName])).get(appName)?.length === PARTITIONS, {
      message: 'the worker owns every partition',
    });

    const expected = new Map<string, string[]>(users.map((u) => [u, []]));
    let committed = 0;
    const produce = async () => {
      // note: one transaction per round (a row per user), paced so that commits span the kills.
      for (const seq of range(1, PER_USER)) {
        const c = await s.pool.connect();
        try {
          await c.query('BEGIN');
          const ids: string[] = [];
          for (const user of users) {
            ids.push(
              (
                await enqueue(
                  c,
                  { userId: user, target: TARGET, args: [{ user, seq }] },
                  { channelPrefix: prefix! },
                )
              ).id,
            );
          }
          await c.query('COMMIT');
          users.forEach((user, i) => expected.get(user)!.push(`outbox:${ids[i]}`));
          committed += users.length;
        } finally {
          c.release();
        }
        // a deliberate pace, not a synchronization
        await new Promise((resolve) => setTimeout(resolve, 80));
      }
    };
    const kills: { terminated: number; committed: number; received: number }[] = [];
    const chaos = async () => {
      for (let k = 0; k < KILLS; k++) {
        // a deliberate fault schedule: a kill every 600 ms while rows are being committed
        await new Promise((resolve) => setTimeout(resolve, 600));
        const terminated = await terminateBackends(s.pool, appName);
        kills.push({ terminated, committed, received: log.distinctCount });
      }
    };
    await Promise.all([produce(), chaos()]);

    const total = USERS * PER_USER;
    try {
      await waitFor(() => log.distinctCount === total, { timeoutMs: 20_000, intervalMs: 50 });
    } catch {
      throw new Error(
        `not everything arrived (${log.distinctCount} of ${total}):\n${deliveryProblems(log, expected).join('\n')}`,
      );
    }
    console.info(
      `pg kill: ${total} messages; kills ${JSON.stringify(kills)}; ${log.received} copies, ` +
        `${log.duplicates} duplicate(s) before dedup; worker stats ${JSON.stringify(w.stats)}`,
    );
    expect(kills.every((k) => k.terminated >= 1)).toBe(true);
    // at least one kill landed while messages were still flowing
    expect(kills.some((k) => k.committed < total)).toBe(true);
    expect(deliveryProblems(log, expected)).toEqual([]);
    for (const user of users) expect(log.distinct(user).map((r) => r.offset)).toEqual(range(1, PER_USER));
    // the worker holds its partitions again, on a new connection, and every row is relayed and acked (an
    // acked row is deleted)
    await waitFor(async () => (await partitionsHeld(s.pool, [appName])).get(appName)?.length === PARTITIONS, {
      message: 'the worker owns every partition again',
    });
    await waitFor(
      async () => {
        const { rows } = await s.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM relayhub_outbox');
        return rows[0]?.n === 0;
      },
      { timeoutMs: 10_000, message: 'every row relayed and acked' },
    );
  });
});
