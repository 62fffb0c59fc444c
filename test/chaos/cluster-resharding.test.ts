/**
 * Sharded PUB/SUB through a resharding: a private Redis Cluster, two in-process hubs on the pubsub
 * backplane (sharded), a receiver on hub B in a group, and a sender on hub A sending to the group and to
 * the receiver's user every 20 ms. While messages flow, the slots of the group's and the user's channels
 * are moved to other primaries (Redis pushes `sunsubscribe` to the subscribers of a moved slot): hub B
 * subscribes again on the new owners without a restart, the loss is counted in `health().possibleGaps`,
 * and messages sent after the move reach the receiver again. PUB/SUB is at most once: what was sent
 * during the move may be missed, and is counted.
 */
import type { HubConnection } from '@microsoft/signalr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { hubChannels } from '../../src/redis/keys.js';
import { ClientPool } from '../helpers/client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type ClusterNode, type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const SEND_EVERY_MS = 20;
/** Messages that must arrive after the move, per channel, to show the subscription followed it. */
const AFTER_MOVE = 25;

describe('sharded PUB/SUB on Redis Cluster: a slot moved while messages flow', () => {
  const clients = new ClientPool();
  let cluster: RedisCluster | undefined;
  let servers: TestServer[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(() => cluster?.dispose());
  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(servers.map((s) => s.close()));
    servers = [];
  });

  it(
    'subscriptions follow the slots to their new primaries; the loss is counted',
    { timeout: 45_000 },
    async () => {
      const c = cluster as RedisCluster;
      const channelPrefix = uniquePrefix('reshard');
      const backplanes = [0, 1].map(
        (i) => new PubSubBackplane({ redis: { cluster: c.urls }, channelPrefix, instanceId: `reshard-${i}` }),
      );
      for (const backplane of backplanes) {
        servers.push(
          await startServer({ backplane, authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }) }),
        );
      }
      expect(backplanes.map((b) => b.mode)).toEqual(['sharded', 'sharded']);
      const [a, b] = servers as [TestServer, TestServer];
      const group = `room-${channelPrefix}`;
      const receiverUser = `reader-${channelPrefix}`;
      const got: { group: number[]; user: number[] } = { group: [], user: [] };
      const receiver: HubConnection = await clients.connect(b.url(), {
        token: await signToken(receiverUser),
      });
      receiver.on('message', (_from: string, text: string) => {
        const [kind, n] = text.split(':') as ['group' | 'user', string];
        got[kind].push(Number(n));
      });
      await receiver.invoke('JoinGroup', group);
      const sender = await clients.connect(a.url(), { token: await signToken(`writer-${channelPrefix}`) });

      let n = 0;
      let sending = true;
      // note: at most once: a send that fails while its slot moves is counted, not retried.
      const failed: string[] = [];
      const loop = (async () => {
        while (sending) {
          n++;
          await Promise.all([
            sender.invoke('SendToGroup', group, `group:${n}`).catch((e: Error) => failed.push(e.message)),
            sender
              .invoke('SendToUser', receiverUser, `user:${n}`)
              .catch((e: Error) => failed.push(e.message)),
          ]);
          await new Promise((r) => setTimeout(r, SEND_EVERY_MS));
        }
      })();
      await waitFor(() => got.group.length >= 10 && got.user.length >= 10, { message: 'the flow to start' });

      const names = hubChannels(channelPrefix, '/hubs/demo');
      const channels = [names.group(group), names.user(receiverUser)];
      const gapsBefore = backplanes[1]!.health().possibleGaps;
      const moved: { slot: number; from: ClusterNode; to: ClusterNode }[] = [];
      for (const channel of channels) {
        const slot = await c.slotOf(channel);
        const from = await c.primaryOf(slot);
        const to = (await c.primaries()).find((p) => p !== from) as ClusterNode;
        await c.moveSlot(slot, to);
        moved.push({ slot, from, to });
      }
      const sentAtMove = n;
      const stalled = async () => {
        const lines = [
          `sent ${n}, failed ${failed.length} ${failed.slice(0, 2)}; last group ${got.group.at(-1)} user ${got.user.at(-1)}`,
        ];
        for (const [i, channel] of channels.entries()) {
          const owner = await c.primaryOf(moved[i]!.slot);
          const subs = await Promise.all(
            c.nodes.map(
              async (node) =>
                `${node.port}:${JSON.stringify(await c.call(node, 'PUBSUB', 'SHARDNUMSUB', channel).catch(String))}`,
            ),
          );
          lines.push(`${channel} slot ${moved[i]!.slot} owner ${owner.port}: ${subs.join(' ')}`);
        }
        return lines.join('\n');
      };
      await waitFor(
        () =>
          got.group.filter((m) => m > sentAtMove).length >= AFTER_MOVE &&
          got.user.filter((m) => m > sentAtMove).length >= AFTER_MOVE,
        { timeoutMs: 15_000, message: 'messages sent after the move to arrive on both channels' },
      ).catch(async (error: Error) => {
        throw new Error(`${error.message}\n${await stalled()}`);
      });
      sending = false;
      await loop;

      const gaps = backplanes[1]!.health().possibleGaps - gapsBefore;
      const missed = (list: number[]) => n - new Set(list).size;
      console.info(
        `[cluster resharding] moved slots ${moved.map((m) => `${m.slot}: ${m.from.port}->${m.to.port}`).join(', ')} ` +
          `at message ${sentAtMove} of ${n}; missed during the move: group ${missed(got.group)}, user ` +
          `${missed(got.user)}; possibleGaps +${gaps}; failed sends ${failed.length} ${failed.slice(0, 2)}`,
      );
      expect(gaps).toBeGreaterThanOrEqual(1);
      // the subscriptions now live on the new owners
      for (const [i, channel] of channels.entries()) {
        const reply = (await c.call(moved[i]!.to, 'PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
        expect(Number(reply[1]), channel).toBeGreaterThanOrEqual(1);
      }
      // each channel's messages arrive in send order, each once
      for (const list of [got.group, got.user]) {
        expect(list).toEqual([...list].sort((x, y) => x - y));
        expect(new Set(list).size).toBe(list.length);
      }
      expect(backplanes[1]!.health().status).toBe('ready');
    },
  );
});
