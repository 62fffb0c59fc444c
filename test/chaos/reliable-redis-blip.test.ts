/**
 * Reliable lane, Redis connections cut under load: a private redis-server started by the test, a TCP
 * proxy in front of it, and three `relayhub serve --backplane streams` processes whose --redis-url points
 * at the proxy. The sender (ReliableProducer, one key per message, retried with the same key on
 * ERR_BACKPLANE_UNAVAILABLE) goes through the proxy too, so a send whose answer is lost in the cut is
 * retried and answered as a duplicate. Once about 25% are sent, the proxy cuts every Redis connection
 * (no FIN to either side's application) and holds new ones for 2 s, then lets them through. Every message
 * must reach its user, first receptions in send order, nothing missing, the deduplicated sequence exactly
 * the sent one.
 *
 * Never touches the shared Redis. Needs `npm run build`. Every wait is bounded; processes, the proxy and
 * the private redis-server are stopped in afterEach.
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { ClientPool } from '../helpers/client.js';
import { MessageTracker } from '../helpers/message-tracker.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';
import { Redis } from 'ioredis';
import { CONSUMER_GROUP, reliableKeys } from '../../src/redis/keys.js';
import {
  connectTracked,
  deliveryProblems,
  LossyProxy,
  range,
  sendPlan,
  waitForDelivery,
} from './reliable-kit.js';

const USERS = 48;
const PER_USER = 100;
const OUTAGE_MS = 2_000;

describe('reliable lane: every Redis connection cut, new ones held for 2 s', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  let producer: ReliableProducer | undefined;
  let proxy: TcpProxy | undefined;
  let redis: RedisServer | undefined;
  let lossy: LossyProxy | undefined;
  let inspect: Redis | undefined;
  let releaseTimer: NodeJS.Timeout | undefined;

  afterEach(async () => {
    clearTimeout(releaseTimer);
    await clients.stopAll();
    await producer?.close();
    await instances.stopAll();
    await proxy?.close();
    await lossy?.close();
    inspect?.disconnect();
    await redis?.dispose();
    producer = proxy = lossy = inspect = redis = undefined;
  });

  it(
    'delivers every message in order per user once Redis is reachable again',
    { timeout: 60_000 },
    async () => {
      redis = await startRedisServer();
      proxy = await TcpProxy.start(redis.port);
      const redisUrl = `redis://127.0.0.1:${proxy.port}`;
      const channelPrefix = uniquePrefix('chaos-blip');
      const tag = randomBytes(3).toString('hex');
      const servers = await Promise.all(
        range(0, 2).map((i) =>
          instances.start({ redisUrl, channelPrefix, instanceId: `blip-${i}`, backplane: 'streams' }),
        ),
      );
      const tracker = new MessageTracker();
      const users = range(0, USERS - 1).map((i) => `user-${i}`);
      const connections: HubConnection[] = await Promise.all(
        users.map((user, i) =>
          connectTracked(clients, (servers[i % 3] as InstanceProcess).url(), user, tracker),
        ),
      );

      producer = new ReliableProducer({
        redisUrl,
        channelPrefix,
        hub: '/hubs/demo',
        connectTimeoutMs: 1_000,
        maxRetryDelayMs: 100,
      });
      const cutProxy = proxy;
      const total = USERS * PER_USER;
      let cutAt = 0;
      let releasedAt = 0;
      let sentAtCut = 0;
      let heldAtRelease = 0;
      let markReleased: () => void = () => undefined;
      const released = new Promise<void>((resolve) => (markReleased = resolve));
      const sendStarted = Date.now();
      const stats = await sendPlan({
        producer,
        tracker,
        users,
        perUser: PER_USER,
        tag,
        concurrency: 16,
        // note: about 7 s of sending, so that messages keep flowing before, during and after the outage.
        ratePerSecond: 700,
        onProgress: (sent) => {
          if (cutAt !== 0 || sent < total * 0.25) return;
          cutAt = Date.now();
          sentAtCut = sent;
          cutProxy.hold();
          cutProxy.dropAll();
          // note: the outage itself is the fault, so a timer ends it.
          releaseTimer = setTimeout(() => {
            heldAtRelease = cutProxy.heldCount;
            releasedAt = Date.now();
            cutProxy.release();
            markReleased();
          }, OUTAGE_MS);
        },
      });
      const sendMs = Date.now() - sendStarted;
      expect(cutAt, 'the cut happened').toBeGreaterThan(0);
      await released;
      await waitForDelivery(tracker, 30_000);
      const deliveredMs = Date.now() - releasedAt;
      const counts = tracker.counts();
      console.info(
        `[reliable-redis-blip] ${tracker.summary()}\n  cut at ${sentAtCut}/${total} sent for ` +
          `${releasedAt - cutAt} ms; ${heldAtRelease} connections held at release; sending took ${sendMs} ms; ` +
          `sender retries=${stats.retries}, answered as duplicates=${stats.duplicateAnswers}; all delivered ` +
          `${deliveredMs} ms after the release`,
      );

      expect(releasedAt - cutAt).toBeGreaterThanOrEqual(OUTAGE_MS);
      // the outage was real: the sender had to retry, and the instances tried to reconnect while held
      expect(stats.retries).toBeGreaterThan(0);
      expect(heldAtRelease).toBeGreaterThan(0);
      expect(counts, tracker.summary()).toMatchObject({ sent: total, delivered: total, missing: 0 });
      expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
      for (const user of users) expect(tracker.deduplicated(user), user).toEqual(tracker.sentIds(user));
      // the clients talk to the instances directly: none of them lost its connection
      await waitFor(() => connections.every((c) => c.state === 'Connected'), { timeoutMs: 1_000 });
    },
  );
  it(
    'delivers messages whose wake-ups were read by an instance but lost with the connection',
    {
      timeout: 60_000,
    },
    async () => {
      // the cut the previous test makes at random, made certain: Redis runs the commands (the send, the
      // instance's XREADGROUP that takes the wake-up), then every answer is lost and the connections are cut
      const USERS_HERE = 12;
      redis = await startRedisServer();
      lossy = await LossyProxy.start(redis.port);
      inspect = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      const channelPrefix = uniquePrefix('chaos-lost');
      const keys = reliableKeys(channelPrefix, '/hubs/demo');
      const tag = randomBytes(3).toString('hex');
      const ids = [0, 1].map((i) => `lost-${i}`);
      const servers = await Promise.all(
        ids.map((instanceId) =>
          instances.start({ redisUrl: lossy!.url, channelPrefix, instanceId, backplane: 'streams' }),
        ),
      );
      const tracker = new MessageTracker();
      const users = range(0, USERS_HERE - 1).map((i) => `user-${i}`);
      await Promise.all(
        users.map((user, i) =>
          connectTracked(clients, (servers[i % 2] as InstanceProcess).url(), user, tracker),
        ),
      );
      producer = new ReliableProducer({
        redisUrl: lossy.url,
        channelPrefix,
        hub: '/hubs/demo',
        connectTimeoutMs: 1_000,
        maxRetryDelayMs: 100,
      });
      const plan = { producer, tracker, users, perUser: 1, tag, concurrency: USERS_HERE };
      const pendingWakeUps = async () => {
        let sum = 0;
        for (const id of ids) {
          const [count] = (await inspect!.xpending(keys.deliveries(id), CONSUMER_GROUP)) as [number];
          sum += Number(count);
        }
        return sum;
      };

      // one message each, delivered and acknowledged: every user's session is idle
      await sendPlan(plan);
      await waitForDelivery(tracker, 10_000);
      await waitFor(async () => (await pendingWakeUps()) === 0, {
        timeoutMs: 5_000,
        message: 'the instances to acknowledge their wake-ups',
      });

      // answers are lost from now on; the next message of each user is appended and its wake-up read
      lossy.dropReplies();
      const sending = sendPlan({ ...plan, firstSeq: 2 });
      // note: each instance's blocking read takes what is there when it wakes (often one entry) and then
      // waits forever for its lost answer; the wake-ups it took are pending for it in Redis
      let takenAtCut = 0;
      await waitFor(
        async () => {
          const applied = await Promise.all(users.map((u) => inspect!.get(keys.user(u).seq)));
          takenAtCut = await pendingWakeUps();
          return applied.every((seq) => seq === '2') && takenAtCut >= 1;
        },
        { timeoutMs: 5_000, message: 'the sends to be applied and their wake-ups read, answers dropped' },
      );
      const cutLossy = lossy;
      cutLossy.hold();
      cutLossy.cut();
      const released = new Promise<void>((resolve) => {
        // note: the outage itself is the fault, so a timer ends it.
        releaseTimer = setTimeout(() => {
          cutLossy.release();
          resolve();
        }, OUTAGE_MS);
      });
      const stats = await sending;
      await released;
      try {
        await waitForDelivery(tracker, 10_000);
      } finally {
        console.info(
          `[reliable-redis-blip: lost answers] ${tracker.summary()}\n  dropped ${lossy.droppedBytes} bytes of ` +
            `answers; sender retries=${stats.retries}, answered as duplicates=${stats.duplicateAnswers}; ` +
            `wake-ups taken before the cut: ${takenAtCut}, still pending: ${await pendingWakeUps().catch(() => -1)}`,
        );
      }
      // every first attempt had been applied: its retry was answered as a duplicate, with the same offset
      expect(stats.duplicateAnswers).toBe(USERS_HERE);
      expect(tracker.counts(), tracker.summary()).toMatchObject({ sent: 2 * USERS_HERE, missing: 0 });
      expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
      await waitFor(async () => (await pendingWakeUps()) === 0, {
        timeoutMs: 5_000,
        message: 'the instances to acknowledge the wake-ups they lost',
      });
    },
  );
});
