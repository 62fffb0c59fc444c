/**
 * What happens to outbox rows after the relay:
 * - acks are applied to the rows in batches (one DELETE per ack sync removes every acked row of many
 *   users), and only once the client acked: a row delivered to a client whose handler has not returned
 *   yet stays through ack syncs that apply other users' acks;
 * - Maintenance.purge deletes rows an older worker marked acked (acked_at) and keeps unacked ones;
 * - a row never acked by its expires_at (a user who never connects; a poison row) becomes a BullMQ
 *   dead-letter job handled by onDeadLetter, retried with backoff when the handler throws, and the row is
 *   gone; acked rows are purged by the scheduled job without a dead letter.
 *
 * In-process hub (shared Redis, unique prefix, keys deleted afterwards) and worker; schema of its own.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { reliableKeys } from '../../src/redis/keys.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue, type OutboxMessage } from '../../src/outbox/enqueue.js';
import { partitionOf } from '../../src/outbox/schema.js';
import { Maintenance, type OutboxDeadLetter } from '../../src/worker/maintenance.js';
import { OutboxWorker, type OutboxWorkerOptions } from '../../src/worker/outbox-worker.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { connectRecorded, deletePrefix, range, ReceivedLog, waitForValue } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'note';
const HUB = '/hubs/demo';

interface RowState {
  id: string;
  user_id: string;
  relayed_at: Date | null;
  acked_at: Date | null;
}

describe('outbox acks, purge and TTL', () => {
  const clients = new ClientPool();
  const closers: (() => Promise<unknown>)[] = [];
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
    await server?.close();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    server = worker = schema = prefix = undefined;
  });

  async function setup(options: Partial<OutboxWorkerOptions>) {
    schema = await createTestSchema('acks');
    prefix = uniquePrefix('outbox-acks');
    server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      ...options,
    });
    await worker.start();
    return { schema, server, worker, prefix };
  }

  async function add(s: TestSchema, messages: OutboxMessage[]): Promise<string[]> {
    const c = await s.pool.connect();
    try {
      await c.query('BEGIN');
      const ids: string[] = [];
      for (const m of messages) ids.push((await enqueue(c, m, { channelPrefix: prefix! })).id);
      await c.query('COMMIT');
      return ids;
    } finally {
      c.release();
    }
  }

  async function rows(s: TestSchema): Promise<RowState[]> {
    const { rows: r } = await s.pool.query<RowState>(
      'SELECT id, user_id, relayed_at, acked_at FROM relayhub_outbox ORDER BY id',
    );
    return r;
  }

  it('deletes acked rows in batches once the client acked, and purge deletes acked rows only', async () => {
    const {
      schema: s,
      server: hub,
      worker: w,
      prefix: p,
    } = await setup({
      maintenance: false,
      ackSyncIntervalMs: 2_000,
      pollIntervalMs: 50,
    });
    const log = new ReceivedLog();

    // bob's handler holds its answer (its ack) until the test releases it
    let release: (() => void) | undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let bobGot = 0;
    const bob = clients.add(buildClient(hub.url(), { token: await signToken('bob') }));
    bob.on(TARGET, async () => {
      bobGot++;
      await released;
      return true;
    });
    await bob.start();
    const [bobRow] = await add(s, [{ userId: 'bob', target: TARGET, args: ['held'] }]);
    await waitFor(() => bobGot === 1, { message: 'bob received his message' });

    // ann is offline while her 20 rows and carl's row are relayed
    await add(
      s,
      range(1, 20).map((i) => ({ userId: 'ann', target: TARGET, args: [i] })),
    );
    const [carlRow] = await add(s, [{ userId: 'carl', target: TARGET, args: ['carl never connects'] }]);
    await waitFor(async () => (await rows(s)).every((r) => r.relayed_at !== null), {
      message: 'all relayed',
    });
    expect((await rows(s)).every((r) => r.acked_at === null)).toBe(true);

    // note: with ack syncs 2 s apart, polling every 20 ms sees every state ann's rows go through.
    const annLeft = async () => (await rows(s)).filter((r) => r.user_id === 'ann').length;
    const seen = new Set<number>();
    await connectRecorded(clients, hub.url(), 'ann', log, TARGET);
    await waitFor(() => log.distinctCount === 20, { message: 'ann received her 20' });
    await waitFor(
      async () => {
        const left = await annLeft();
        seen.add(left);
        return left === 0;
      },
      { timeoutMs: 8_000, intervalMs: 20, message: 'ann’s acked rows deleted' },
    );
    // note: one ack sync deletes every row up to the user's acked offset with one DELETE.
    const partial = [...seen].filter((n) => n !== 0 && n !== 20);
    console.info(`acks: ann's 20 rows deleted through ${partial.length} intermediate state(s)`);
    expect(partial.length).toBeLessThanOrEqual(1);

    // the syncs that applied ann's acks did not apply bob's: his client has not acked yet
    let state = await rows(s);
    expect(state.map((r) => r.id)).toEqual([bobRow, carlRow]);
    expect(state.every((r) => r.relayed_at !== null && r.acked_at === null)).toBe(true);
    const redis = new Redis(REDIS_URL);
    closers.push(async () => redis.disconnect());
    const keys = reliableKeys(p, HUB);
    expect(await redis.get(keys.user('bob').acked)).toBeNull();

    release!();
    await waitFor(async () => !(await rows(s)).some((r) => r.id === bobRow), {
      timeoutMs: 8_000,
      message: 'bob’s row deleted after his handler returned',
    });
    expect(w.stats.acked).toBe(21);

    // purge: a row an older worker marked acked goes, carl's unacked (unexpired) row stays
    const [legacyRow] = await add(s, [{ userId: 'lee', target: TARGET, args: ['acked by an older worker'] }]);
    await waitFor(async () => (await rows(s)).find((r) => r.id === legacyRow)?.relayed_at != null, {
      message: 'lee’s row relayed',
    });
    await s.pool.query('UPDATE relayhub_outbox SET acked_at = now() WHERE id = $1', [legacyRow]);
    const maintenance = new Maintenance({
      redisUrl: REDIS_URL,
      prefix: p,
      hubs: [HUB],
      pool: s.pool,
      lanes: [{ redis, keys }],
      log: pino({ level: 'silent' }),
    });
    closers.push(() => maintenance.close());
    expect(await maintenance.purge()).toEqual({ purged: 1, deadLettered: 0 });
    state = await rows(s);
    expect(state.map((r) => r.id)).toEqual([carlRow]);
    expect(await maintenance.purge()).toEqual({ purged: 0, deadLettered: 0 });
  });

  it('dead-letters rows still unacked at their TTL through BullMQ, retrying a throwing handler', async () => {
    const letters: { letter: OutboxDeadLetter; at: number; threw: boolean }[] = [];
    const {
      schema: s,
      server: hub,
      prefix: p,
    } = await setup({
      pollIntervalMs: 50,
      ackSyncIntervalMs: 50,
      maintenance: {
        purgeIntervalMs: 200,
        deadLetterAttempts: 3,
        deadLetterBackoffMs: 300,
      },
      onDeadLetter: (letter) => {
        const threw = !letters.some((l) => l.letter.outboxId === letter.outboxId);
        letters.push({ letter, at: Date.now(), threw });
        if (threw) throw new Error(`first attempt for ${letter.outboxId} fails`);
      },
    });
    const log = new ReceivedLog();
    await connectRecorded(clients, hub.url(), 'eve', log, TARGET);

    // dora never connects: her message is relayed but never acked; eve acks hers (long TTL)
    const [doraRow] = await add(s, [
      { userId: 'dora', target: TARGET, args: [{ text: 'expires' }], ttlMs: 400 },
    ]);
    const [eveRow] = await add(s, [{ userId: 'eve', target: TARGET, args: ['acked'], key: 'eve-1' }]);
    // a poison row that expires: dead-lettered with its fail reason
    const { rows: inserted } = await s.pool.query<{ id: string }>(
      `INSERT INTO relayhub_outbox (channel_prefix, hub, user_id, partition, target, args, expires_at)
       VALUES ($3, $4, 'frank', $1, $2, '{"not":"an array"}', now() + interval '400 milliseconds') RETURNING id`,
      [partitionOf('frank'), TARGET, p, HUB],
    );
    const poisonRow = inserted[0]!.id;

    await waitFor(() => log.has('eve', 'eve-1'));
    await waitFor(() => letters.filter((l) => !l.threw).length === 2, {
      timeoutMs: 10_000,
      message: 'both letters handled after one failed attempt each',
    });
    expect(letters.filter((l) => l.threw)).toHaveLength(2);
    const dora = letters.filter((l) => l.letter.outboxId === doraRow);
    expect(dora.map((l) => l.threw)).toEqual([true, false]);
    expect(dora[1]!.at - dora[0]!.at).toBeGreaterThanOrEqual(300 - 20);
    expect(dora[1]!.letter).toEqual({
      outboxId: doraRow,
      userId: 'dora',
      target: TARGET,
      args: [{ text: 'expires' }],
      messageId: `outbox:${doraRow}`,
      reason: 'not acknowledged before its TTL',
    });
    const poison = letters.find((l) => l.letter.outboxId === poisonRow && !l.threw);
    expect(poison?.letter).toMatchObject({ userId: 'frank', reason: 'args is not a JSON array' });

    // the expired rows are gone, and so is eve's acked row (deleted by the ack sync, no letter)
    await waitFor(async () => (await rows(s)).length === 0, { message: 'every row gone' });
    expect(letters.map((l) => l.letter.outboxId)).not.toContain(eveRow);

    // BullMQ kept the record: one job per row, completed on its second attempt
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const queue = new Queue('relayhub-dead-letters', { connection, prefix: `${p}:bull` });
    closers.push(async () => {
      await queue.close();
      connection.disconnect();
    });
    const job = await waitForValue(async () => {
      const j = await queue.getJob(`outbox-${doraRow}`);
      return j?.finishedOn !== undefined && j;
    });
    expect(job.attemptsMade).toBe(2);
    expect(await job.getState()).toBe('completed');
  });
});
