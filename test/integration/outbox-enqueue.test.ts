/**
 * enqueue inside the caller's transaction: a drizzle-orm (node-postgres) transaction and a plain `pg`
 * client between BEGIN and COMMIT both deliver once committed; a rolled-back transaction delivers nothing
 * ever (a message committed later for the same user arrives with offset 1: nothing entered the lane
 * before it); an invalid message throws ERR_INVALID_MESSAGE and leaves the transaction usable; two
 * transactions committing out of id order are both relayed; NOTIFY wakes an idle worker.
 *
 * An in-process hub (streams backplane, shared Redis, unique prefix) and OutboxWorker on a schema of the
 * test's own; everything is closed, the prefix's keys deleted and the schema dropped in afterEach.
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { RelayhubError } from '../../src/errors.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue as enqueueFor } from '../../src/outbox/enqueue.js';
import { OutboxWorker, type OutboxWorkerOptions } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import { connectRecorded, deletePrefix, ReceivedLog } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'note';

describe('outbox enqueue in transactions', () => {
  const clients = new ClientPool();
  const pgClients: pg.Client[] = [];
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;
  /** enqueue for this test's deployment (its unique prefix; the hub is the default one). */
  const enqueue = (tx: Parameters<typeof enqueueFor>[0], message: Parameters<typeof enqueueFor>[1]) =>
    enqueueFor(tx, message, { channelPrefix: prefix! });

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(pgClients.splice(0).map((c) => c.end()));
    await worker?.close();
    await server?.close();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    server = worker = schema = prefix = undefined;
  });

  async function setup(workerOptions: Partial<OutboxWorkerOptions> = {}) {
    schema = await createTestSchema('enq');
    prefix = uniquePrefix('outbox-enq');
    server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      maintenance: false,
      // note: these tests read back which rows exist; the ack sync would delete the acked ones meanwhile.
      ackSyncIntervalMs: 60_000,
      ...workerOptions,
    });
    await worker.start();
    return { schema, server, worker, log: new ReceivedLog() };
  }

  async function pgClient(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    pgClients.push(c);
    await c.connect();
    return c;
  }

  async function rowIds(s: TestSchema): Promise<string[]> {
    const { rows } = await s.pool.query<{ id: string }>('SELECT id FROM relayhub_outbox ORDER BY id');
    return rows.map((r) => r.id);
  }

  it('delivers what a drizzle transaction enqueued once it commits, and nothing of one rolled back', async () => {
    const { schema: s, server: hub, log } = await setup();
    await connectRecorded(clients, hub.url(), 'dana', log, TARGET);
    const db = drizzle(s.pool);

    // rolled back by throwing inside the callback
    const rolledBack: string[] = [];
    await expect(
      db.transaction(async (tx) => {
        rolledBack.push((await enqueue(tx, { userId: 'dana', target: TARGET, args: ['never-1'] })).id);
        rolledBack.push((await enqueue(tx, { userId: 'dana', target: TARGET, args: ['never-2'] })).id);
        throw new Error('the business rule failed');
      }),
    ).rejects.toThrow('the business rule failed');
    // rolled back explicitly with tx.rollback()
    await expect(
      db.transaction(async (tx) => {
        rolledBack.push((await enqueue(tx, { userId: 'dana', target: TARGET, args: ['never-3'] })).id);
        tx.rollback();
      }),
    ).rejects.toThrow();
    expect(rolledBack).toHaveLength(3);

    const committed = await db.transaction(async (tx) => [
      await enqueue(tx, { userId: 'dana', target: TARGET, args: ['one'] }),
      await enqueue(tx, { userId: 'dana', target: TARGET, args: ['two'], key: 'dana-two' }),
    ]);
    await waitFor(() => log.distinctCount === 2, { message: 'the committed messages' });
    expect(log.copies('dana').map((r) => [r.payload, r.messageId, r.offset])).toEqual([
      ['one', `outbox:${committed[0]?.id}`, 1],
      ['two', 'dana-two', 2],
    ]);
    expect(await rowIds(s)).toEqual(committed.map((c) => c.id));
    for (const id of rolledBack) expect(committed.map((c) => c.id)).not.toContain(id);
  });

  it('delivers what a pg client enqueued between BEGIN and COMMIT; a ROLLBACK delivers nothing, ever', async () => {
    const { schema: s, server: hub, log } = await setup();
    await connectRecorded(clients, hub.url(), 'erin', log, TARGET);
    const c = await pgClient(s.databaseUrl);

    await c.query('BEGIN');
    const never = await enqueue(c, { userId: 'erin', target: TARGET, args: ['rolled-back'] });
    await c.query('ROLLBACK');

    await c.query('BEGIN');
    await c.query(`CREATE TEMP TABLE business (n int) ON COMMIT DROP`);
    const marker = await enqueue(c, { userId: 'erin', target: TARGET, args: ['marker'] });
    await c.query('COMMIT');

    await waitFor(() => log.has('erin', `outbox:${marker.id}`), { message: 'the marker' });
    // note: offsets are gapless per user: offset 1 for the marker means nothing entered the lane before it.
    expect(log.copies('erin').map((r) => [r.payload, r.messageId, r.offset])).toEqual([
      ['marker', `outbox:${marker.id}`, 1],
    ]);
    expect(log.has('erin', `outbox:${never.id}`)).toBe(false);
    expect(await rowIds(s)).toEqual([marker.id]);
  });

  it('throws ERR_INVALID_MESSAGE inside the transaction without aborting it', async () => {
    const { schema: s, server: hub, log } = await setup();
    await connectRecorded(clients, hub.url(), 'fay', log, TARGET);
    const c = await pgClient(s.databaseUrl);
    await c.query('BEGIN');
    for (const bad of [
      { userId: 'fay{x}', target: TARGET, args: [] },
      { userId: 'f a y', target: TARGET, args: [] },
      { userId: 'fay', target: '', args: [] },
      { userId: 'fay', target: TARGET, args: { not: 'an array' } },
    ]) {
      const error = await enqueue(c, bad as never).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RelayhubError);
      expect((error as RelayhubError).code).toBe('ERR_INVALID_MESSAGE');
    }
    const ok = await enqueue(c, { userId: 'fay', target: TARGET, args: ['ok'] });
    await c.query('COMMIT');
    await waitFor(() => log.has('fay', `outbox:${ok.id}`));
    expect(await rowIds(s)).toEqual([ok.id]);

    // with drizzle, the caller decides: an uncaught ERR_INVALID_MESSAGE rolls its transaction back
    const db = drizzle(s.pool);
    const error = await db
      .transaction(async (tx) => {
        await enqueue(tx, { userId: 'fay', target: TARGET, args: ['rolled back with the bad one'] });
        await enqueue(tx, { userId: 'fay', target: TARGET, args: 'nope' as never });
      })
      .catch((e: unknown) => e);
    expect((error as RelayhubError).code).toBe('ERR_INVALID_MESSAGE');
    expect(await rowIds(s)).toEqual([ok.id]);
  });

  it('relays both rows when the higher id commits first (out-of-order commit)', async () => {
    const { schema: s, server: hub, log } = await setup();
    await connectRecorded(clients, hub.url(), 'gus', log, TARGET);
    await connectRecorded(clients, hub.url(), 'hal', log, TARGET);
    const early = await pgClient(s.databaseUrl);
    const late = await pgClient(s.databaseUrl);

    await early.query('BEGIN');
    const low = await enqueue(early, { userId: 'gus', target: TARGET, args: ['low id, commits second'] });
    const lowHal = await enqueue(early, { userId: 'hal', target: TARGET, args: ['hal low'] });
    await late.query('BEGIN');
    const high = await enqueue(late, { userId: 'gus', target: TARGET, args: ['high id, commits first'] });
    const highHal = await enqueue(late, { userId: 'hal', target: TARGET, args: ['hal high'] });
    expect(BigInt(high.id)).toBeGreaterThan(BigInt(low.id));
    await late.query('COMMIT');

    // the higher ids are relayed and delivered while the lower ones are still uncommitted
    await waitFor(() => log.has('gus', `outbox:${high.id}`) && log.has('hal', `outbox:${highHal.id}`), {
      message: 'the rows committed first',
    });
    // note: the worker marks rows relayed in a transaction it commits after the Redis sends, so a client
    // may hold the message a moment before the row says so: wait for the mark, then check it exactly.
    const relayedIds = async () =>
      (
        await s.pool.query<{ id: string }>(
          'SELECT id FROM relayhub_outbox WHERE relayed_at IS NOT NULL ORDER BY id',
        )
      ).rows.map((r) => r.id);
    await waitFor(async () => (await relayedIds()).length >= 2, { message: 'the first rows marked relayed' });
    expect(await relayedIds()).toEqual([high.id, highHal.id]);

    await early.query('COMMIT');
    await waitFor(() => log.has('gus', `outbox:${low.id}`) && log.has('hal', `outbox:${lowHal.id}`), {
      message: 'the rows committed second',
    });
    expect(log.copies('gus').map((r) => [r.messageId, r.offset])).toEqual([
      [`outbox:${high.id}`, 1],
      [`outbox:${low.id}`, 2],
    ]);
    expect(log.duplicates).toBe(0);
    // note: a client may get a message before the worker's pass committed its row as relayed.
    await waitFor(async () => {
      const { rows } = await s.pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM relayhub_outbox WHERE relayed_at IS NULL',
      );
      return rows[0]?.n === 0;
    });
  });

  it('is woken by the NOTIFY of a commit (no polling, no ack sync for a minute)', async () => {
    const {
      schema: s,
      server: hub,
      log,
      worker: w,
    } = await setup({
      pollIntervalMs: 60_000,
      ackSyncIntervalMs: 60_000,
      rebalanceIntervalMs: 60_000,
    });
    await connectRecorded(clients, hub.url(), 'ivy', log, TARGET);
    // the worker has made its first pass (it owns partitions and went idle)
    await waitFor(() => w.stats.passes > 0);
    const passes = w.stats.passes;
    for (let i = 1; i <= 3; i++) {
      const c = await s.pool.connect();
      try {
        await c.query('BEGIN');
        await enqueue(c, { userId: 'ivy', target: TARGET, args: [i] });
        await c.query('COMMIT');
      } finally {
        c.release();
      }
      await waitFor(() => log.distinctCount === i, { timeoutMs: 3_000, message: `message ${i} via NOTIFY` });
    }
    expect(w.stats.passes).toBeGreaterThan(passes);
    expect(log.distinct('ivy').map((r) => r.payload)).toEqual([1, 2, 3]);
  });
});
