/**
 * Reliable lane, an instance killed under load: three `relayhub serve --backplane streams` processes on
 * the shared Redis (unique prefix, stable instance ids), 48 users with official clients that reconnect
 * automatically (short delays), and a sender in the test process (ReliableProducer, one key per message)
 * sending 100 messages per user. Each client reaches its instance through a forwarder (one per instance)
 * that routes new connections to that instance while it lives and to the live ones otherwise, since the
 * official client reconnects to the URL it started with. Once about 30% are sent, one instance is
 * SIGKILLed: its clients reconnect to the others, which replay each user's inbox from the last
 * acknowledged offset. Every message must reach its user, first receptions in send order, nothing
 * missing; duplicates (a message handled whose ack died with the instance) must be droppable by id.
 *
 * Needs `npm run build`. Every wait is bounded; processes, forwarders and clients are stopped in afterEach.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { ClientPool } from '../helpers/client.js';
import { MessageTracker } from '../helpers/message-tracker.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  connectUsers,
  onOneRedisAndCluster,
  deliveryProblems,
  FailoverProxy,
  range,
  sendPlan,
  waitForDelivery,
} from './reliable-kit.js';

const USERS = 48;
const PER_USER = 100;

onOneRedisAndCluster((medium, where) => {
  describe(`reliable lane: an instance killed (SIGKILL) under load on ${where}`, () => {
    const instances = new InstancePool();
    const clients = new ClientPool();
    const proxies: FailoverProxy[] = [];
    let producer: ReliableProducer | undefined;
    let prefix: string | undefined;

    afterEach(async () => {
      await clients.stopAll();
      await producer?.close();
      await Promise.allSettled(proxies.splice(0).map((p) => p.close()));
      await instances.stopAll();
      if (prefix)
        await medium()
          .cleanup(prefix)
          .catch(() => undefined);
      producer = prefix = undefined;
    });

    it(
      'replays every unacked message to the killed instance’s users wherever they reconnect',
      {
        timeout: 60_000,
      },
      async () => {
        prefix = uniquePrefix('chaos-kill');
        const channelPrefix = prefix;
        const tag = randomBytes(3).toString('hex');
        const servers = await Promise.all(
          range(0, 2).map((i) =>
            instances.start({
              redisUrl: medium().url,
              args: medium().args,
              channelPrefix,
              instanceId: `kill-${i}`,
              backplane: 'streams',
            }),
          ),
        );
        const killed = new Set<number>();
        const live = () => servers.filter((s) => !killed.has(s.port)).map((s) => s.port);
        for (const server of servers) proxies.push(await FailoverProxy.start(server.port, live));

        const tracker = new MessageTracker();
        const users = range(0, USERS - 1).map((i) => `user-${i}`);
        const { connections, reconnects, totalReconnects } = await connectUsers(
          clients,
          users,
          (i) => (proxies[i % 3] as FailoverProxy).url('/hubs/demo'),
          tracker,
          { reconnectDelays: [0, 50, 100, 200, 500, 1_000] },
        );

        producer = new ReliableProducer({
          redis: medium().redis,
          channelPrefix,
          hub: '/hubs/demo',
        });
        const victim = servers[0] as InstanceProcess;
        const victimUsers = users.filter((_, i) => i % 3 === 0);
        const total = USERS * PER_USER;
        let killedAt = 0;
        let sentAtKill = 0;
        let deliveredAtKill = 0;
        const sendStarted = Date.now();
        const stats = await sendPlan({
          producer,
          tracker,
          users,
          perUser: PER_USER,
          tag,
          concurrency: 16,
          // note: about 7 s of sending, so that messages keep flowing while the clients fail over.
          ratePerSecond: 700,
          onProgress: (sent) => {
            if (killedAt !== 0 || sent < total * 0.3) return;
            killedAt = Date.now();
            sentAtKill = sent;
            deliveredAtKill = tracker.counts().delivered;
            killed.add(victim.port);
            victim.kill('SIGKILL');
          },
        });
        const sendMs = Date.now() - sendStarted;
        expect(killedAt, 'the kill happened').toBeGreaterThan(0);
        await waitFor(() => victim.hasExited, { timeoutMs: 5_000, message: 'the killed instance to exit' });
        expect(await victim.exited).toMatchObject({ signal: 'SIGKILL' });
        await waitForDelivery(tracker, 30_000);
        const deliveredMs = Date.now() - killedAt;
        await waitFor(() => connections.every((c) => c.state === 'Connected'), {
          timeoutMs: 10_000,
          message: 'every client connected again',
        });
        const counts = tracker.counts();
        const victimProxy = proxies[0] as FailoverProxy;
        console.info(
          `[reliable-kill on ${where}] ${tracker.summary()}\n  killed at ${sentAtKill}/${total} sent, ${deliveredAtKill} ` +
            `delivered; sending took ${sendMs} ms; all delivered ${deliveredMs} ms after the kill; ` +
            `sender retries=${stats.retries}; reconnects=${totalReconnects()}; ` +
            `victim forwarder routes=${JSON.stringify([...victimProxy.routed])}`,
        );

        // the killed instance's users reconnected, through their forwarder, to the live instances
        for (const user of victimUsers) expect(reconnects.get(user) ?? 0, user).toBeGreaterThanOrEqual(1);
        expect([...victimProxy.routed.keys()].filter((port) => port !== victim.port).length).toBeGreaterThan(
          0,
        );
        expect(counts, tracker.summary()).toMatchObject({ sent: total, delivered: total, missing: 0 });
        expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
        for (const user of users) expect(tracker.deduplicated(user), user).toEqual(tracker.sentIds(user));
      },
    );
  });
});
