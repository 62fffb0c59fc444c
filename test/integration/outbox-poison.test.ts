/**
 * Poison rows, inserted with plain SQL (bypassing enqueue's validation), ahead of good rows in the same
 * partition: a user id with braces, one with whitespace, an empty target, args that are not an array, and
 * args over maxPayloadBytes. Each is set aside with failed_at and its fail_reason, never enters the lane,
 * and is not retried by later passes; the good rows behind them, of other users and of the same user, are
 * delivered (with offset 1: nothing entered the lane before them).
 *
 * In-process hub (shared Redis, unique prefix, keys deleted afterwards) and worker; schema of its own.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { reliableKeys } from '../../src/redis/keys.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { partitionOf } from '../../src/outbox/schema.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deletePrefix,
  ReceivedLog,
  usersInPartition,
  waitForValue,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'note';
const HUGE = 600_000;

describe('outbox poison rows', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;
  let redis: Redis | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await server?.close();
    redis?.disconnect();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    server = worker = schema = prefix = redis = undefined;
  });

  it('sets poison rows aside once, with the reason, and delivers the rows behind them', async () => {
    schema = await createTestSchema('poison');
    prefix = uniquePrefix('outbox-poison');
    server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    const log = new ReceivedLog();
    const partition = partitionOf('bad{user}');
    // three good users in the partition of the poison rows, so that one pass meets them all in id order
    const [u1, u2, u3] = usersInPartition(partition, 3, 'good');
    for (const user of [u1!, u2!, u3!]) await connectRecorded(clients, server.url(), user, log, TARGET);

    const insert = async (userId: string, target: string, argsSql: string): Promise<string> => {
      const { rows } = await schema!.pool.query<{ id: string }>(
        `INSERT INTO relayhub_outbox (channel_prefix, hub, user_id, partition, target, args, expires_at)
         VALUES ($4, '/hubs/demo', $1, $2, $3, ${argsSql}, now() + interval '1 hour') RETURNING id`,
        [userId, partitionOf(userId), target, prefix],
      );
      return rows[0]!.id;
    };
    // note: everything is inserted before the worker starts, so that its first pass meets the poison first.
    const poison = {
      braces: await insert('bad{user}', TARGET, `'["braces"]'::jsonb`),
      space: await insert('bad user', TARGET, `'["space"]'::jsonb`),
      emptyTarget: await insert(u1!, '', `'["no target"]'::jsonb`),
      notArray: await insert(u1!, TARGET, `'{"not":"an array"}'::jsonb`),
      huge: await insert(u2!, TARGET, `jsonb_build_array(repeat('x', ${HUGE}))`),
    };
    const good = {
      u1: await insert(u1!, TARGET, `'["u1 behind its poison"]'::jsonb`),
      u2: await insert(u2!, TARGET, `'["u2 behind its huge row"]'::jsonb`),
      u3: await insert(u3!, TARGET, `'["u3, another user"]'::jsonb`),
    };

    worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      maintenance: false,
      pollIntervalMs: 50,
      ackSyncIntervalMs: 50,
    });
    await worker.start();

    await waitFor(() => log.distinctCount === 3, { message: 'the good rows' });
    expect(log.copies(u1!).map((r) => [r.payload, r.messageId, r.offset])).toEqual([
      ['u1 behind its poison', `outbox:${good.u1}`, 1],
    ]);
    expect(log.copies(u2!).map((r) => [r.payload, r.offset])).toEqual([['u2 behind its huge row', 1]]);
    expect(log.copies(u3!).map((r) => [r.payload, r.offset])).toEqual([['u3, another user', 1]]);

    const failed = async () => {
      const { rows } = await schema!.pool.query<{
        id: string;
        failed_at: Date | null;
        fail_reason: string | null;
        relayed_at: Date | null;
      }>(
        `SELECT id, failed_at, fail_reason, relayed_at FROM relayhub_outbox
          WHERE id = ANY($1::bigint[]) ORDER BY id`,
        [Object.values(poison)],
      );
      return rows;
    };
    const first = await waitForValue(async () => {
      const rows = await failed();
      return rows.every((r) => r.failed_at !== null) && rows;
    });
    expect(first.map((r) => [r.id, r.fail_reason, r.relayed_at])).toEqual([
      [poison.braces, 'user id is not 1-256 characters without braces or whitespace', null],
      [poison.space, 'user id is not 1-256 characters without braces or whitespace', null],
      [poison.emptyTarget, 'empty target', null],
      [poison.notArray, 'args is not a JSON array', null],
      [poison.huge, `args are ${HUGE + 4} bytes, over maxPayloadBytes`, null],
    ]);

    // not retried: more passes go by, the rows keep their first failed_at, the poison count stays 5
    const passes = worker.stats.passes;
    await waitFor(() => worker!.stats.passes >= passes + 5, { message: 'five more passes' });
    expect(await failed()).toEqual(first);
    expect(worker.stats.poison).toBe(5);
    expect(worker.stats.relayed).toBe(3);

    // nothing of them reached Redis: no idempotency key in the users' sent sets, no inbox for the bad ids
    redis = new Redis(REDIS_URL);
    const keys = reliableKeys(prefix, '/hubs/demo');
    const scores = await Promise.all([
      redis.zscore(keys.user(u1!).sent, `outbox:${poison.emptyTarget}`),
      redis.zscore(keys.user(u1!).sent, `outbox:${poison.notArray}`),
      redis.zscore(keys.user(u2!).sent, `outbox:${poison.huge}`),
    ]);
    expect(scores).toEqual([null, null, null]);
    expect(await redis.exists(keys.user('bad{user}').inbox, keys.user('bad user').inbox)).toBe(0);
    expect(await redis.get(keys.user(u1!).seq)).toBe('1');
    expect(log.duplicates).toBe(0);
  });
});
