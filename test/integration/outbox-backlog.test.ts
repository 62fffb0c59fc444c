/**
 * A backlog drained in pipelined passes (the worker claims the next batch while the current one is
 * relayed) keeps each user's order while one endpoint refuses writes and answers again, over and over:
 * endpoint `a` is out of memory (`maxmemory 1`, `noeviction`: every send script fails, PING still
 * answers, so the worker sees it answer again after its retry backoff, clears its held users and tries
 * once more). When a batch fails for a's users, the next batch is already claimed and holds their later
 * rows: they must wait. Every row must end up relayed exactly in id order per user: its lane offset (the
 * user's gapless counter in Redis) is its rank among the user's rows. (The worker also keeps those rows
 * back when the endpoint answers between the two passes, which the retry backoff of at least 100 ms does
 * not let happen here.) Two private redis-servers; Postgres schema of its own; no hubs (nobody acks: the
 * rows stay).
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { range } from '../helpers/outbox.js';
import { endpointsFixture } from '../helpers/endpoints-fixture.js';
import type { RedisServer } from '../helpers/redis-server.js';
import { uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/demo';
const BATCH = 10;
// note: b's users have many more rows, so that passes stay full (pipelined) for longer than a's retry
// backoff (100 ms, doubling), and a answers again several times in the middle of the backlog.
const PER_A = 60;
const PER_B = 400;

describe('outbox worker: a pipelined backlog', () => {
  const fixture = endpointsFixture();

  it('relays every user’s rows in id order while an endpoint keeps failing and answering', async () => {
    const s = await fixture.schema('backlog');
    const [a, b] = (await fixture.redisServers(2)) as [RedisServer, RedisServer];
    const prefix = uniquePrefix('outbox-backlog');
    const onA = ['ann', 'amy', 'abe'];
    const onB = ['bob', 'ben', 'bud'];
    const worker = new OutboxWorker({
      databaseUrl: s.databaseUrl,
      endpoints: [
        { name: 'a', redis: { url: a.url } },
        { name: 'b', redis: { url: b.url } },
      ],
      router: { inboxEndpoint: (userId, views) => views.find((v) => v.name === userId[0])! },
      channelPrefix: prefix,
      maintenance: false,
      batchSize: BATCH,
      pollIntervalMs: 20,
      ackSyncIntervalMs: 60_000,
    });
    fixture.closeAfter(() => worker.close());
    await worker.start();
    await waitFor(() => worker.stats.passes > 0, { message: 'the first pass (epochs read)' });

    const ra = new Redis(a.url);
    fixture.closeAfter(() => ra.disconnect());
    await ra.config('SET', 'maxmemory-policy', 'noeviction');
    await ra.config('SET', 'maxmemory', '1');

    // one backlog, users interleaved (a's rows spread over it), committed at once: 258 full batches
    const c = await s.pool.connect();
    try {
      await c.query('BEGIN');
      for (const n of range(1, PER_B)) {
        const users = (n * PER_A) % PER_B < PER_A ? [...onA, ...onB] : onB;
        for (const user of users) {
          await enqueue(c, { userId: user, target: 'note', args: [n] }, { channelPrefix: prefix, hub: HUB });
        }
      }
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    worker.wake();
    const relayedOf = async (users: string[]) => {
      const { rows } = await s.pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM relayhub_outbox WHERE relayed_at IS NOT NULL AND user_id = ANY($1)',
        [users],
      );
      return rows[0]!.n;
    };
    await waitFor(async () => (await relayedOf(onB)) === onB.length * PER_B, {
      timeoutMs: 10_000,
      message: 'b’s users relayed while a refuses',
    });
    // a failed several times (held back, answered again, failed again) while b's users went through
    await waitFor(() => worker.stats.held >= 3 * BATCH, { message: 'a’s rows held back repeatedly' });
    expect(await relayedOf(onA)).toBe(0);

    await ra.config('SET', 'maxmemory', '0');
    await waitFor(async () => (await relayedOf(onA)) === onA.length * PER_A, {
      timeoutMs: 10_000,
      message: 'a’s users relayed once it takes writes again',
    });

    const { rows } = await s.pool.query<{ user_id: string; lane_offset: string; relay_endpoint: string }>(
      'SELECT user_id, lane_offset, relay_endpoint FROM relayhub_outbox ORDER BY id',
    );
    for (const user of [...onA, ...onB]) {
      const mine = rows.filter((r) => r.user_id === user);
      expect(mine.map((r) => Number(r.lane_offset))).toEqual(range(1, onA.includes(user) ? PER_A : PER_B));
      expect(new Set(mine.map((r) => r.relay_endpoint))).toEqual(new Set([user[0]]));
    }
    console.info(
      `pipelined backlog: ${rows.length} rows in ${worker.stats.passes} passes; ${worker.stats.held} held back on the way`,
    );
  });
});
