/**
 * Acks belong to the generation of the offsets they name: a PRIVATE redis-server (never the shared one)
 * restarted empty twice while the client holds an ack. Rows r1..r5 are delivered and acked; then the client
 * holds its answer to r6 (offset 6). Redis restarts empty (#1): the worker relays r6..r10 again, as
 * offsets 1..5 of the fresh Redis. The held ack for offset 6 is released into that fresh Redis: it names
 * an entry that Redis never had, so it must not acknowledge offsets 1..6 there (which would let the worker
 * mark r7..r10 acked before they are delivered). The client then holds its answer to r7, and Redis restarts
 * empty again (#2) after the worker synced acks: r7..r10 must be relayed again and arrive. 0 missing.
 *
 * The private redis-server is disposed of, and the schema dropped, in afterEach.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { deliveryProblems, range, ReceivedLog } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const USER = 'holder';

/** Holds the client's answer to the next copy of message number `n` until released. */
class AckGate {
  #armed: number | undefined;
  #release: (() => void) | undefined;
  held: number | undefined;

  arm(n: number): void {
    this.#armed = n;
  }

  /** What the client handler awaits before answering. */
  wait(n: number): Promise<void> {
    if (n !== this.#armed) return Promise.resolve();
    this.#armed = undefined;
    this.held = n;
    return new Promise((resolve) => (this.#release = resolve));
  }

  release(): void {
    this.held = undefined;
    this.#release?.();
    this.#release = undefined;
  }
}

describe('outbox chaos: acks in flight across two empty Redis restarts', () => {
  const clients = new ClientPool();
  let redisServer: RedisServer | undefined;
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  const gate = new AckGate();

  afterEach(async () => {
    gate.release();
    await clients.stopAll();
    await worker?.close();
    await server?.close();
    await redisServer?.dispose();
    await schema?.drop();
    redisServer = server = worker = schema = undefined;
  });

  it(
    'never lets a stale ack acknowledge what was relayed again; 0 missing',
    { timeout: 45_000 },
    async () => {
      redisServer = await startRedisServer();
      const redisUrl = redisServer.url;
      schema = await createTestSchema('stale');
      const s = schema;
      const prefix = uniquePrefix('stale-acks');
      server = await startServer({
        backplane: new StreamsBackplane({
          redisUrl,
          channelPrefix: prefix,
          maxRetryDelayMs: 200,
          reliable: { heartbeatIntervalMs: 500 },
        }),
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      });
      worker = new OutboxWorker({
        databaseUrl: s.databaseUrl,
        redisUrl,
        channelPrefix: prefix,
        maintenance: false,
        pollIntervalMs: 50,
        ackSyncIntervalMs: 100,
        rebalanceIntervalMs: 300,
      });
      await worker.start();
      const w = worker;

      const log = new ReceivedLog();
      const connection = buildClient(server.url(), { token: await signToken(USER) });
      connection.on(TARGET, async (payload: unknown, meta: { messageId: string; offset: number }) => {
        log.record(USER, payload, meta);
        await gate.wait((payload as { n: number }).n);
        return true;
      });
      clients.add(connection);
      await connection.start();

      const ids: string[] = [];
      const rowIds: string[] = [];
      const commit = async (n: number) => {
        const c = await s.pool.connect();
        try {
          await c.query('BEGIN');
          const { id } = await enqueue(
            c,
            { userId: USER, target: TARGET, args: [{ n }] },
            { channelPrefix: prefix },
          );
          await c.query('COMMIT');
          ids.push(`outbox:${id}`);
          rowIds.push(id);
        } finally {
          c.release();
        }
      };
      // note: one state per committed row, in commit order; the ack sync deletes an acked row, so a row
      // that is gone is acked (its TTL is 24 h, and nothing else deletes rows here).
      const rows = async () => {
        const { rows: present } = await s.pool.query<{
          id: string;
          relay_epoch: string | null;
          lane_offset: string | null;
        }>('SELECT id, relay_epoch, lane_offset FROM relayhub_outbox WHERE user_id = $1 ORDER BY id', [USER]);
        const byId = new Map(present.map((r) => [r.id, r]));
        return rowIds.map((id) => {
          const row = byId.get(id);
          return { acked: row === undefined, relay_epoch: row?.relay_epoch, lane_offset: row?.lane_offset };
        });
      };
      const passesAfter = async (more: number) => {
        const from = w.stats.passes;
        await waitFor(() => w.stats.passes >= from + more, { message: `${more} more worker passes` });
      };

      // r1..r5 delivered and acked, acks recorded in Postgres
      for (const n of range(1, 5)) await commit(n);
      await waitFor(async () => (await rows()).filter((r) => r.acked).length === 5, {
        message: 'r1..r5 acked in Postgres',
      });

      // the client holds its answer to r6 (offset 6 of the first Redis)
      gate.arm(6);
      for (const n of range(6, 10)) await commit(n);
      await waitFor(() => gate.held === 6, { message: 'the client to hold its ack of r6' });
      // note: the client may get r6 before the worker's pass commits it as relayed: wait for the mark.
      let epoch1: string | null | undefined;
      await waitFor(async () => (epoch1 = (await rows())[5]?.relay_epoch), { message: 'r6 marked relayed' });

      // restart #1: empty; the worker relays r6..r10 again, as offsets 1..5
      await redisServer.stop();
      await redisServer.start();
      await waitFor(
        async () => (await rows()).slice(5).every((r) => r.relay_epoch != null && r.relay_epoch !== epoch1),
        { timeoutMs: 10_000, message: 'r6..r10 relayed again under a new epoch' },
      );
      const epoch2 = (await rows())[5]?.relay_epoch;

      // the held ack (offset 6, an entry of the first Redis) lands in the fresh one; r7 is held next
      gate.arm(7);
      gate.release();
      await waitFor(() => gate.held === 7, { timeoutMs: 10_000, message: 'the client to hold r7' });
      // the worker syncs acks several times meanwhile: r7..r10 must stay unacked (not delivered yet)
      await passesAfter(15);
      const beforeRestart2 = await rows();
      expect(beforeRestart2.slice(6).map((r) => r.acked)).toEqual([false, false, false, false]);

      // restart #2: empty again, with the ack of r7 in flight
      await redisServer.stop();
      await redisServer.start();
      gate.release();
      try {
        await waitFor(() => ids.every((id) => log.has(USER, id)), { timeoutMs: 20_000, intervalMs: 50 });
        await waitFor(async () => (await rows()).every((r) => r.acked), {
          timeoutMs: 10_000,
          message: 'every row acked in Postgres',
        });
      } finally {
        console.info(
          `[stale acks] ${ids.length} rows; epochs ${epoch1} -> ${epoch2} -> ${(await rows())[9]?.relay_epoch}; ` +
            `${log.distinctCount} distinct / ${log.received} copies; worker ${JSON.stringify(w.stats)}`,
        );
      }
      expect(deliveryProblems(log, new Map([[USER, ids]]))).toEqual([]);
    },
  );
});
