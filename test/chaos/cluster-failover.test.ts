/**
 * A Redis Cluster primary killed under reliable load through the outbox: a private cluster (3 primaries +
 * 3 replicas, `cluster-node-timeout` 1 s), two in-process hubs (streams backplane on the cluster), an
 * in-process OutboxWorker (replicas: 1, so a row counts as relayed only once a replica holds it), and
 * eight users' official clients. Rows are committed at a steady pace, most of them for `busy`; once the
 * flow is steady, the primary that owns `busy`'s slot is SIGKILLed, its replica takes over, and the dead
 * node comes back as a replica. Every committed message must reach its user: 0 missing, first receptions
 * in commit order per user, nothing unexpected; the only duplicates are copies of a message id the client
 * already had (which it drops). Beside it, group sends whose channel lives on the killed primary: the
 * listener's sharded subscription is counted as lost and follows the new primary (at most once).
 *
 * The cluster is disposed of, and the schema dropped, in afterAll / afterEach.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { hubChannels, reliableKeys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/slot.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import { connectRecorded, deliveryProblems, range, ReceivedLog } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';
/** Rows committed per tick (one tick every TICK_MS): BUSY_SHARE of them for `busy`. */
const TICK_MS = 20;
const BUSY_SHARE = 3;
const LOAD_BEFORE_KILL_MS = 1_500;
const LOAD_AFTER_FAILOVER_MS = 1_500;

describe('reliable lane on Redis Cluster: the primary of a busy user killed under outbox load', () => {
  const clients = new ClientPool();
  let cluster: RedisCluster | undefined;
  let servers: TestServer[] = [];
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;

  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(() => cluster?.dispose());
  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await Promise.allSettled(servers.map((s) => s.close()));
    await schema?.drop();
    servers = [];
    worker = schema = undefined;
  });

  it(
    'loses nothing: 0 missing, order kept per user, duplicates only by message id',
    { timeout: 60_000 },
    async () => {
      const c = cluster as RedisCluster;
      const redis = { cluster: c.urls };
      schema = await createTestSchema('failover');
      const s = schema;
      const prefix = uniquePrefix('failover');
      const backplanes: StreamsBackplane[] = [];
      for (let i = 0; i < 2; i++) {
        servers.push(
          await startServer({
            backplane: (backplanes[i] = new StreamsBackplane({
              redis,
              channelPrefix: prefix,
              instanceId: `failover-${i}`,
              maxRetryDelayMs: 200,
              // note: a short heartbeat bounds how long a wake-up lost in the failover can delay delivery.
              reliable: {
                heartbeatIntervalMs: 1_000,
                ackTimeoutMs: 5_000,
                retryDelayMs: 100,
                maxRetryDelayMs: 500,
              },
            })),
            authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
          }),
        );
      }
      worker = new OutboxWorker({
        databaseUrl: s.databaseUrl,
        redis,
        channelPrefix: prefix,
        maintenance: false,
        pollIntervalMs: 50,
        ackSyncIntervalMs: 200,
        rebalanceIntervalMs: 500,
      });
      await worker.start();

      const users = ['busy', ...range(1, 7).map((i) => `calm-${i}`)];
      const log = new ReceivedLog();
      await Promise.all(
        users.map((user, i) => connectRecorded(clients, servers[i % 2]!.url(), user, log, TARGET)),
      );
      const expected = new Map<string, string[]>(users.map((u) => [u, []]));
      let seq = 0;
      const commit = async (user: string) => {
        const n = ++seq;
        const client = await s.pool.connect();
        try {
          await client.query('BEGIN');
          const { id } = await enqueue(
            client,
            { userId: user, target: TARGET, args: [{ user, n }] },
            { channelPrefix: prefix },
          );
          await client.query('COMMIT');
          expected.get(user)!.push(`outbox:${id}`);
        } finally {
          client.release();
        }
      };
      let loading = true;
      let tick = 0;
      const load = (async () => {
        while (loading) {
          const started = Date.now();
          for (let i = 0; i < BUSY_SHARE; i++) await commit('busy');
          await commit(users[1 + (tick++ % (users.length - 1))] as string);
          await new Promise((r) => setTimeout(r, Math.max(0, TICK_MS - (Date.now() - started))));
        }
      })();

      // PUB/SUB beside it: a group whose channel lives on the same primary as busy's keys, a listener on
      // hub 1 and a sender on hub 0; its subscription must follow the failover (at most once meanwhile)
      const slot = await c.slotOf(reliableKeys(prefix, HUB).user('busy').inbox);
      const victimBefore = await c.primaryOf(slot);
      const names = hubChannels(prefix, HUB);
      let group = '';
      for (let i = 0; !group; i++) {
        if ((await c.primaryOf(keySlot(names.group(`room${i}`)))) === victimBefore) group = `room${i}`;
      }
      const heard: number[] = [];
      const listener = await clients.connect(servers[1]!.url(), { token: await signToken('listener') });
      listener.on('message', (_from: string, text: string) => heard.push(Number(text)));
      await listener.invoke('JoinGroup', group);
      const speaker = await clients.connect(servers[0]!.url(), { token: await signToken('speaker') });
      let said = 0;
      let failedSays = 0;
      const speaking = (async () => {
        while (loading) {
          await speaker.invoke('SendToGroup', group, String(++said)).catch(() => failedSays++);
          await new Promise((r) => setTimeout(r, 25));
        }
      })();

      await new Promise((r) => setTimeout(r, LOAD_BEFORE_KILL_MS));
      const victim = await c.primaryOf(slot);
      expect(victim).toBe(victimBefore);
      const gapsBefore = backplanes[1]!.health().possibleGaps;
      const deliveredAtKill = log.distinctCount;
      const committedAtKill = seq;
      c.kill(victim);
      const killedAt = Date.now();
      const successor = await c.waitForFailover(slot, victim);
      const failoverMs = Date.now() - killedAt;
      // note: the dead node rejoins as the new primary's replica, so that WAIT can be satisfied again.
      await c.restart(victim);
      const saidAfterFailover = said;
      await new Promise((r) => setTimeout(r, LOAD_AFTER_FAILOVER_MS));
      await waitFor(() => heard.filter((n) => n > saidAfterFailover).length >= 10, {
        timeoutMs: 10_000,
        message: 'group messages sent after the failover to reach the listener again',
      });
      loading = false;
      await Promise.all([load, speaking]);

      const total = seq;
      try {
        await waitFor(() => log.distinctCount === total, { timeoutMs: 25_000, intervalMs: 50 });
      } finally {
        console.info(
          `[cluster failover] ${total} rows committed (${expected.get('busy')!.length} for busy); killed the ` +
            `primary of busy's slot ${slot} (port ${victim.port}) at ${committedAtKill} committed / ` +
            `${deliveredAtKill} delivered; port ${successor.port} took over in ${failoverMs} ms; ` +
            `${log.distinctCount} distinct / ${log.received} copies (${log.duplicates} duplicates dropped by ` +
            `message id); worker stats ${JSON.stringify(worker.stats)}; group: ${heard.length} of ${said} ` +
            `heard (${failedSays} sends failed), possibleGaps +${backplanes[1]!.health().possibleGaps - gapsBefore}`,
        );
      }
      // the listener's sharded subscription lost its node, was counted, and followed the new primary
      expect(backplanes[1]!.health().possibleGaps).toBeGreaterThan(gapsBefore);
      expect(heard).toEqual([...new Set(heard)].sort((a, b) => a - b));
      expect(deliveredAtKill).toBeGreaterThan(0);
      expect(committedAtKill).toBeLessThan(total);
      expect(deliveryProblems(log, expected)).toEqual([]);
      // every copy beyond the first of a message carries a message id the client had already received
      for (const user of users) {
        const ids = new Set(expected.get(user));
        expect(log.copies(user).every((r) => ids.has(r.messageId))).toBe(true);
        expect(log.distinct(user).map((r) => r.messageId)).toEqual(expected.get(user));
      }
    },
  );
});
