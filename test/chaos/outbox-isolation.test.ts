/**
 * Two deployments on ONE Postgres schema and ONE Redis: prefixes A and B, each with its own
 * `relayhub serve --backplane streams` hub process and its own `relayhub worker` process. The same user ids
 * exist in both. 1,000 rows for each deployment are committed interleaved (A, B, A, B … in the same
 * transactions). Each user's clients of A get exactly A's messages for them, in order, and B's exactly
 * B's; none late (each arrives within a few seconds of its commit, far below the ~35 s an epoch
 * re-relay would take); each prefix's lane took exactly that prefix's messages per user; every row
 * was relayed (audited by a trigger of the test's schema) by its own deployment's worker only, and each
 * worker owns all 64 partitions of its own prefix (per-prefix partition locks).
 *
 * Needs `npm run build`. Shared Redis (unique prefixes, keys deleted afterwards) and Postgres (own schema).
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { reliableKeys } from '../../src/redis/keys.js';
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
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';
const USERS = 10;
const ROWS = 1_000;
const PER_TX = 20;
/** Far below the ~35 s of the epoch re-relay path that a misrouted row used to take. */
const LATE_MS = 5_000;

describe('outbox chaos: two deployments on one database and one Redis', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  let schema: TestSchema | undefined;
  let redis: Redis | undefined;
  const prefixes: string[] = [];

  afterEach(async () => {
    await clients.stopAll();
    await processes.stopAll();
    redis?.disconnect();
    await schema?.drop();
    for (const p of prefixes.splice(0)) await deletePrefix(REDIS_URL, p);
    schema = redis = undefined;
  });

  it(
    "relays each deployment's rows only to its own users, on time, by its own worker",
    { timeout: 45_000 },
    async () => {
      schema = await createTestSchema('iso');
      const s = schema;
      // audit: who marked each row relayed (purge may delete acked rows before the test looks at them)
      await s.pool.query(
        `CREATE TABLE relay_audit (id bigint, channel_prefix text, hub text, relayed_by text)`,
      );
      await s.pool.query(`CREATE FUNCTION relay_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO relay_audit VALUES (NEW.id, NEW.channel_prefix, NEW.hub, NEW.relayed_by); RETURN NEW; END $$`);
      await s.pool.query(`CREATE TRIGGER relay_audit AFTER UPDATE ON relayhub_outbox FOR EACH ROW
        WHEN (OLD.relayed_at IS NULL AND NEW.relayed_at IS NOT NULL) EXECUTE FUNCTION relay_audit()`);

      const deployments = ['a', 'b'].map((label) => ({
        label,
        prefix: uniquePrefix(`iso-${label}`),
        worker: uniqueApplicationName(`iso-${label}`),
        log: new ReceivedLog(),
        expected: new Map<string, string[]>(),
        committedAt: new Map<string, number>(),
      }));
      prefixes.push(...deployments.map((d) => d.prefix));
      const hubs = await Promise.all(
        deployments.map(async (d) => {
          const [hub] = await Promise.all([
            processes.start({
              redisUrl: REDIS_URL,
              channelPrefix: d.prefix,
              backplane: 'streams',
              instanceId: `${d.prefix}-hub`,
            }),
            processes.startWorker({
              redisUrl: REDIS_URL,
              channelPrefix: d.prefix,
              databaseUrl: withApplicationName(s.databaseUrl, d.worker),
              instanceId: d.worker,
            }),
          ]);
          return hub;
        }),
      );
      // each worker owns every partition of its own prefix: the other deployment's locks are not its
      await waitFor(
        async () => {
          const held = await partitionsHeld(
            s.pool,
            deployments.map((d) => d.worker),
          );
          return deployments.every((d) => held.get(d.worker)?.length === 64);
        },
        { timeoutMs: 15_000, message: 'each worker owns the 64 partitions of its prefix' },
      );
      const users = range(1, USERS).map((i) => `shared-${i}`);
      await Promise.all(
        deployments.flatMap((d, k) =>
          users.map((user) => {
            d.expected.set(user, []);
            return connectRecorded(clients, hubs[k]!.url(), user, d.log, TARGET);
          }),
        ),
      );

      const c = await s.pool.connect();
      try {
        for (let tx = 0; tx < (2 * ROWS) / PER_TX; tx++) {
          await c.query('BEGIN');
          const ids: { d: (typeof deployments)[number]; id: string }[] = [];
          for (let k = 0; k < PER_TX; k++) {
            const n = tx * PER_TX + k;
            const d = deployments[n % 2]!;
            const user = users[Math.floor(n / 2) % USERS]!;
            const { id } = await enqueue(
              c,
              { userId: user, target: TARGET, args: [{ deployment: d.label, n }] },
              { channelPrefix: d.prefix, hub: HUB },
            );
            d.expected.get(user)!.push(`outbox:${id}`);
            ids.push({ d, id });
          }
          await c.query('COMMIT');
          const now = Date.now();
          for (const { d, id } of ids) d.committedAt.set(`outbox:${id}`, now);
        }
      } finally {
        c.release();
      }

      for (const d of deployments) {
        await waitFor(() => d.log.distinctCount === ROWS, {
          timeoutMs: 20_000,
          message: () => `deployment ${d.label}: every message (got ${d.log.distinctCount} of ${ROWS})`,
        });
      }
      const lateness = deployments.map((d) => {
        let worst = 0;
        for (const user of users) {
          for (const r of d.log.distinct(user)) {
            worst = Math.max(worst, r.at - (d.committedAt.get(r.messageId) ?? Infinity));
          }
        }
        return worst;
      });
      const { rows: audit } = await s.pool.query<{
        channel_prefix: string;
        relayed_by: string;
        rows: number;
        distinct_rows: number;
      }>(
        `SELECT channel_prefix, relayed_by, count(*)::int AS rows, count(DISTINCT id)::int AS distinct_rows
           FROM relay_audit GROUP BY 1, 2 ORDER BY 1, 2`,
      );
      console.info(
        `isolation: ${ROWS} rows per deployment, interleaved; worst commit -> receipt ${lateness.join(' / ')} ms; ` +
          `relayed: ${audit.map((a) => `${a.rows} of ${a.channel_prefix} by ${a.relayed_by}`).join(', ')}; ` +
          `copies ${deployments.map((d) => d.log.received).join(' / ')}`,
      );

      for (const d of deployments) {
        // exactly this deployment's messages, in commit order per user, nothing of the other's
        expect(deliveryProblems(d.log, d.expected)).toEqual([]);
        for (const user of users) {
          for (const r of d.log.distinct(user)) {
            expect((r.payload as { deployment: string }).deployment).toBe(d.label);
          }
        }
      }
      for (const worst of lateness) expect(worst).toBeLessThan(LATE_MS);
      // every row relayed by its own deployment's worker, and only by it
      expect(audit.map((a) => [a.channel_prefix, a.relayed_by, a.distinct_rows])).toEqual(
        deployments.map((d) => [d.prefix, d.worker, ROWS]).sort((x, y) => (x[0]! < y[0]! ? -1 : 1)),
      );
      // each prefix's lane took exactly that prefix's messages for each user (its gapless offset counter),
      // so none was ever sent under the other prefix
      redis = new Redis(REDIS_URL);
      for (const d of deployments) {
        const keys = reliableKeys(d.prefix, HUB);
        const taken = await redis.mget(...users.map((u) => keys.user(u).seq));
        expect(taken.map(Number)).toEqual(users.map((u) => d.expected.get(u)!.length));
      }
    },
  );
});
