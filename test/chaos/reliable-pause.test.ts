/**
 * Reliable lane, an instance paused under load: three `relayhub serve --backplane streams` processes on
 * the shared Redis (unique prefix, stable instance ids), 50 users with official clients (user i on
 * instance i % 3), and a sender in the test process (ReliableProducer, one key per message, retried with
 * the same key on ERR_BACKPLANE_UNAVAILABLE) sending 100 messages per user, interleaved. Once about 20% are
 * sent, the instance holding a third of the users is SIGSTOPped for 5 s (shorter than the lane's instance
 * timeout), then SIGCONTed. Every message must reach its user, first receptions in send order, nothing
 * missing; duplicates are allowed but dropping them by message id must leave exactly the sent sequence.
 *
 * Needs `npm run build`. Every wait is bounded; processes and clients are stopped in afterEach.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { ClientPool } from '../helpers/client.js';
import { MessageTracker } from '../helpers/message-tracker.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import {
  connectUsers,
  onOneRedisAndCluster,
  deliveryProblems,
  range,
  sendPlan,
  waitForDelivery,
} from './reliable-kit.js';

const USERS = 50;
const PER_USER = 100;
const PAUSE_MS = 5_000;

onOneRedisAndCluster((medium, where) => {
  describe(`reliable lane: an instance paused (SIGSTOP) for 5 s under load on ${where}`, () => {
    const instances = new InstancePool();
    const clients = new ClientPool();
    let producer: ReliableProducer | undefined;
    let paused: InstanceProcess | undefined;
    let resumeTimer: NodeJS.Timeout | undefined;
    let prefix: string | undefined;

    afterEach(async () => {
      clearTimeout(resumeTimer);
      paused?.kill('SIGCONT');
      await clients.stopAll();
      await producer?.close();
      await instances.stopAll();
      if (prefix)
        await medium()
          .cleanup(prefix)
          .catch(() => undefined);
      producer = paused = prefix = undefined;
    });

    it('delivers every message in order per user, nothing missing', { timeout: 60_000 }, async () => {
      prefix = uniquePrefix('chaos-pause');
      const channelPrefix = prefix;
      const tag = randomBytes(3).toString('hex');
      const servers = await Promise.all(
        range(0, 2).map((i) =>
          instances.start({
            redisUrl: medium().url,
            args: medium().args,
            channelPrefix,
            instanceId: `pause-${i}`,
            backplane: 'streams',
          }),
        ),
      );
      const tracker = new MessageTracker();
      const users = range(0, USERS - 1).map((i) => `user-${i}`);
      const { connections, totalReconnects } = await connectUsers(
        clients,
        users,
        (i) => (servers[i % 3] as InstanceProcess).url(),
        tracker,
      );

      producer = new ReliableProducer({
        redis: medium().redis,
        channelPrefix,
        hub: '/hubs/demo',
      });
      const victim = servers[1] as InstanceProcess;
      const victimUsers = users.filter((_, i) => i % 3 === 1);
      let pausedAt = 0;
      let resumedAt = 0;
      let sentWhenResumed = 0;
      let deliveredAtResume = 0;
      let sentSoFar = 0;
      const total = USERS * PER_USER;
      let markResumed: () => void = () => undefined;
      const resumed = new Promise<void>((resolve) => (markResumed = resolve));
      const sendStarted = Date.now();
      const stats = await sendPlan({
        producer,
        tracker,
        users,
        perUser: PER_USER,
        tag,
        concurrency: 16,
        // note: about 8 s of sending, so that messages keep flowing through the whole pause.
        ratePerSecond: 650,
        onProgress: (sent) => {
          sentSoFar = sent;
          if (pausedAt !== 0 || sent < total * 0.2) return;
          pausedAt = Date.now();
          paused = victim;
          victim.kill('SIGSTOP');
          // note: the pause itself is the fault, so a timer ends it.
          resumeTimer = setTimeout(() => {
            deliveredAtResume = tracker.counts().delivered;
            victim.kill('SIGCONT');
            resumedAt = Date.now();
            sentWhenResumed = sentSoFar;
            paused = undefined;
            markResumed();
          }, PAUSE_MS);
        },
      });
      const sendMs = Date.now() - sendStarted;
      expect(pausedAt, 'the pause started').toBeGreaterThan(0);
      await resumed;
      await waitForDelivery(tracker, 30_000);
      const caughtUpMs = Date.now() - resumedAt;
      const counts = tracker.counts();
      // what the paused instance's users got while it was stopped (after what was already on the wire)
      const duringPause = victimUsers.flatMap((u) =>
        tracker.receivedBy(u).filter((m) => m.at > pausedAt + 1_000 && m.at < resumedAt),
      ).length;
      const sentToVictimUsers = victimUsers.reduce((n, u) => n + tracker.sentIds(u).length, 0);
      console.info(
        `[reliable-pause on ${where}] ${tracker.summary()}\n  paused ${resumedAt - pausedAt} ms; delivered at resume ` +
          `${deliveredAtResume}/${total}; sender retries=${stats.retries}; client reconnects=` +
          `${totalReconnects()}; sent at resume ${sentWhenResumed}/${total}; sending took ${sendMs} ms; ` +
          `all delivered ${caughtUpMs} ms after the resume; ${victimUsers.length} users on the paused instance`,
      );

      expect(resumedAt - pausedAt).toBeGreaterThanOrEqual(PAUSE_MS);
      // the paused instance's users really waited: they cannot all have been served before the pause ended
      expect(deliveredAtResume, tracker.summary()).toBeLessThan(sentWhenResumed);
      expect(duringPause, 'copies received from the paused instance while it was stopped').toBe(0);
      expect(sentToVictimUsers).toBe(victimUsers.length * PER_USER);
      expect(counts, tracker.summary()).toMatchObject({ sent: total, delivered: total, missing: 0 });
      expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
      for (const user of users) expect(tracker.deduplicated(user), user).toEqual(tracker.sentIds(user));
      // the pause was shorter than the clients' server timeout: nobody had to reconnect
      expect(connections.every((c) => c.state === 'Connected')).toBe(true);
      expect(victim.hasExited, victim.output()).toBe(false);
    });
  });
});
