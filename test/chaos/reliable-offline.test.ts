/**
 * Reliable lane, users who are away: two in-process hub instances on the streams backplane (shared Redis,
 * unique prefix). Messages sent while a user has no connection anywhere arrive, in order and exactly once,
 * at the user's next connection, whether it goes to the instance the user had before or to the other one;
 * what the user acknowledged before is not delivered again. A second connection of a user that connects
 * later (on the same instance or the other one) does not receive the acknowledged messages again, and both
 * connections receive what comes next.
 *
 * Every wait is bounded; clients and servers are stopped in afterEach.
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { reliableKeys } from '../../src/redis/keys.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { MessageTracker } from '../helpers/message-tracker.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  deletePrefix,
  deliveryProblems,
  type Note,
  range,
  sendPlan,
  trackReliable,
  waitForDelivery,
} from './reliable-kit.js';

const HUB = '/hubs/demo';
const USERS = 6;

describe('reliable lane: messages sent while a user is offline', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  let redis: Redis | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
    redis?.disconnect();
    if (prefix) await deletePrefix(REDIS_URL, prefix).catch(() => undefined);
    redis = prefix = undefined;
  });

  it('arrive in order at the next connect, on the same or another instance; acked ones never again', async () => {
    prefix = uniquePrefix('chaos-offline');
    const channelPrefix = prefix;
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({
          backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix, instanceId: `offline-${i}` }),
          authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
        }),
      );
    }
    const [a, b] = servers as [TestServer, TestServer];
    const idOf = (server: TestServer) => (server === a ? 'offline-0' : 'offline-1');
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const inspect = redis;
    const keys = reliableKeys(channelPrefix, HUB);
    const tracker = new MessageTracker();
    const tag = randomBytes(3).toString('hex');
    const users = range(0, USERS - 1).map((i) => `user-${i}`);
    const hub = a.server.hub(HUB);
    const send = (firstSeq: number, perUser: number) =>
      sendPlan({
        producer: { send: (message) => hub.reliable.send(message) },
        tracker,
        users,
        perUser,
        firstSeq,
        tag,
        concurrency: USERS,
      });

    let round = 0;
    /** Connects `user` to `server` under a label of its own, recording what this connection gets. */
    const connect = async (
      server: TestServer,
      user: string,
    ): Promise<{ conn: HubConnection; label: string }> => {
      const label = `${user}#${++round}`;
      const conn = buildClient(server.url(), { token: await signToken(user) });
      trackReliable(conn, user, tracker, label);
      clients.add(conn);
      await conn.start();
      return { conn, label };
    };
    const seqsOf = (user: string, label: string) =>
      tracker.receivedBy(user, label).map((m) => (m.payload as Note).seq);
    const ackedOffset = async (user: string) =>
      Number((await inspect.get(keys.user(user).acked))?.split(' ')[0] ?? 0);
    const allAcked = (offset: number) =>
      waitFor(async () => (await Promise.all(users.map(ackedOffset))).every((o) => o === offset), {
        timeoutMs: 5_000,
        message: `every user to have acknowledged offset ${offset}`,
      });
    const allGone = () =>
      waitFor(
        async () =>
          (await Promise.all(users.map((u) => inspect.scard(keys.user(u).presence)))).every((n) => n === 0),
        {
          timeoutMs: 5_000,
          message: 'every user to be offline (no presence left)',
        },
      );
    const home = (i: number) => (i % 2 === 0 ? a : b);
    const away = (i: number) => (i % 2 === 0 ? b : a);

    // online: 1..5, acknowledged
    let first = await Promise.all(users.map((u, i) => connect(home(i), u)));
    await send(1, 5);
    await waitForDelivery(tracker, 10_000);
    await allAcked(5);
    await Promise.all(first.map(({ conn }) => conn.stop()));
    await allGone();

    // offline: 6..15; back on the same instance: exactly 6..15, in order
    await send(6, 10);
    first = await Promise.all(users.map((u, i) => connect(home(i), u)));
    await waitForDelivery(tracker, 10_000);
    users.forEach((u, i) => expect(seqsOf(u, first[i]!.label), u).toEqual(range(6, 15)));
    await allAcked(15);
    await Promise.all(first.map(({ conn }) => conn.stop()));
    await allGone();

    // offline: 16..25; back on the other instance: exactly 16..25, in order
    await send(16, 10);
    const moved = await Promise.all(users.map((u, i) => connect(away(i), u)));
    await waitForDelivery(tracker, 10_000);
    users.forEach((u, i) => expect(seqsOf(u, moved[i]!.label), u).toEqual(range(16, 25)));
    await allAcked(25);

    // a second connection, later, while the first is still there: on the same instance for even users,
    // on the other instance for odd users
    const sameInstance = (i: number) => i % 2 === 0;
    const second = await Promise.all(users.map((u, i) => connect(sameInstance(i) ? away(i) : home(i), u)));
    /** Waits until each listed connection got `seq`; says who is still short when it gives up. */
    const allGot = (seq: number, who: (i: number) => string[]) =>
      waitFor(
        () => {
          const short = users.flatMap((u, i) =>
            who(i)
              .filter((label) => !seqsOf(u, label).includes(seq))
              .map((label) => `${label} got ${JSON.stringify(seqsOf(u, label).slice(-3))}`),
          );
          if (short.length > 0) throw new Error(`still waiting: ${short.join('; ')}`);
          return true;
        },
        { timeoutMs: 5_000, message: `the connections to get ${seq}` },
      );
    // on one instance, every connection of the user gets it; across instances the first ack wins (acks
    // are per user: docs/ARCHITECTURE.md), so the other instance may skip it
    await send(26, 1);
    await allGot(26, (i) => (sameInstance(i) ? [moved[i]!.label, second[i]!.label] : []));
    await allAcked(26);
    // the odd users' first connections leave: the later connection, alone now, gets what comes next
    await Promise.all(moved.filter((_, i) => !sameInstance(i)).map(({ conn }) => conn.stop()));
    await waitFor(
      async () => {
        const members = await Promise.all(users.map((u) => inspect.smembers(keys.user(u).presence)));
        return members.every((m, i) => m.length === 1 && m[0] === idOf(sameInstance(i) ? away(i) : home(i)));
      },
      { timeoutMs: 5_000, message: "the odd users' first instance to drop their presence" },
    );
    await send(27, 1);
    await allGot(27, (i) => (sameInstance(i) ? [moved[i]!.label, second[i]!.label] : [second[i]!.label]));
    await allAcked(27);
    console.info(`[reliable-offline] ${tracker.summary()}`);
    users.forEach((u, i) => {
      // the later connection starts after what was acknowledged: nothing up to 25 ever reached it
      const later = seqsOf(u, second[i]!.label);
      if (sameInstance(i)) {
        expect(later, u).toEqual([26, 27]);
        expect(seqsOf(u, moved[i]!.label), u).toEqual(range(16, 27));
      } else {
        expect([[26, 27], [27]], `${u}: ${JSON.stringify(later)}`).toContainEqual(later);
        expect([range(16, 25), range(16, 26)], u).toContainEqual(seqsOf(u, moved[i]!.label));
      }
    });
    expect(tracker.counts(), tracker.summary()).toMatchObject({ sent: USERS * 27, missing: 0 });
    expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
  });

  it('a user who hops between instances mid-stream (overlapping connections) gets everything in order', async () => {
    prefix = uniquePrefix('chaos-hop');
    const channelPrefix = prefix;
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({
          backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix, instanceId: `hop-${i}` }),
          authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
        }),
      );
    }
    const tracker = new MessageTracker();
    const tag = randomBytes(3).toString('hex');
    const users = range(0, USERS - 1).map((i) => `user-${i}`);
    const PER_USER = 60;
    const HOPS = 4;
    const hub = (servers[0] as TestServer).server.hub(HUB);
    const connectTo = async (server: TestServer, user: string) => {
      const conn = buildClient(server.url(), { token: await signToken(user) });
      trackReliable(conn, user, tracker);
      clients.add(conn);
      await conn.start();
      return conn;
    };
    const current = await Promise.all(users.map((u, i) => connectTo(servers[i % 2] as TestServer, u)));
    let hops = 0;
    const sending = sendPlan({
      producer: { send: (message) => hub.reliable.send(message) },
      tracker,
      users,
      perUser: PER_USER,
      tag,
      concurrency: USERS,
      // note: about 1.5 s of sending, so that the hops happen while messages flow.
      ratePerSecond: 250,
    });
    // each user hops to the other instance after each few new messages: it connects there first, then
    // stops the connection it had, so for a moment both instances deliver to it
    const hopping = Promise.all(
      users.map(async (user, i) => {
        let at = i % 2;
        for (let hop = 0; hop < HOPS; hop++) {
          const seen = tracker.deduplicated(user).length;
          await waitFor(() => tracker.deduplicated(user).length >= Math.min(seen + 8, PER_USER), {
            timeoutMs: 10_000,
            message: () => `${user} to receive more before hop ${hop + 1}:\n${tracker.summary()}`,
          });
          at = 1 - at;
          const previous = current[i] as HubConnection;
          current[i] = await connectTo(servers[at] as TestServer, user);
          await previous.stop();
          hops++;
        }
      }),
    );
    await Promise.all([sending, hopping]);
    await waitForDelivery(tracker, 10_000);
    console.info(`[reliable-offline: hops] ${tracker.summary()}\n  hops=${hops}`);
    expect(hops).toBe(USERS * HOPS);
    expect(tracker.counts(), tracker.summary()).toMatchObject({ sent: USERS * PER_USER, missing: 0 });
    expect(deliveryProblems(tracker), tracker.summary()).toEqual([]);
    for (const user of users) expect(tracker.deduplicated(user), user).toEqual(tracker.sentIds(user));
  });
});
