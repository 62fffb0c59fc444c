import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { ClientPool } from '../helpers/client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { onOneRedisAndCluster } from '../helpers/redis-cluster.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

// note: keyless sends (no idempotency key) on one Redis and on a Redis Cluster.
onOneRedisAndCluster((medium, where) => {
  describe(`reliable lane smoke on ${where}`, () => {
    const clients = new ClientPool();
    const servers: TestServer[] = [];
    afterEach(async () => {
      await clients.stopAll();
      await Promise.all(servers.splice(0).map((s) => s.close()));
    });

    it('delivers in order across instances, acked by the handler, and replays to a user who was offline', async () => {
      const channelPrefix = uniquePrefix('rl');
      for (let i = 0; i < 2; i++) {
        servers.push(
          await startServer({
            backplane: new StreamsBackplane({ redis: medium().redis, channelPrefix }),
            authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
          }),
        );
      }
      const hubA = servers[0]!.server.hub('/hubs/demo');
      const hubB = servers[1]!.server.hub('/hubs/demo');
      const token = await signToken('alice');
      const got: unknown[][] = [];
      const alice = await clients.connect(servers[1]!.url(), { token });
      alice.on('note', (...args: unknown[]) => {
        got.push(args);
        return true;
      });
      for (let i = 1; i <= 20; i++) await hubA.reliable.user('alice').send('note', i);
      await waitFor(() => got.length === 20);
      expect(got.map((a) => a[0])).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(got[0]![1]).toMatchObject({ offset: 1 });
      // note: the lane is at least once: a reconnect that reads the inbox before the ack of 20 is in Redis
      // gets 20 again. Wait for the acks to land, so that "acked ones never again" is what is checked.
      await waitFor(async () => (await hubB.reliable.metrics()).acked === 20, {
        message: async () => `acked ${(await hubB.reliable.metrics()).acked}`,
      });
      await alice.stop();
      for (let i = 21; i <= 25; i++) await hubA.reliable.user('alice').send('note', i);
      const again = await clients.connect(servers[0]!.url(), { token });
      const later: unknown[] = [];
      again.on('note', (n: unknown) => {
        later.push(n);
        return true;
      });
      await waitFor(() => later.length >= 5, { message: () => `got ${JSON.stringify(later)}` });
      expect(later).toEqual([21, 22, 23, 24, 25]);
    });
  });
});
