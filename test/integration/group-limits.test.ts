/**
 * Groups per connection are bounded (`maxGroupsPerConnection`, and the demo hub's own `authorizeGroupJoin`),
 * refusals reach the caller with their reason, and a connection that leaves many groups (by
 * disconnecting) costs a few UNSUBSCRIBE commands, not one per group, and leaves no subscription behind.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { DEMO_HUB_PATH, DEMO_MAX_GROUPS } from '../../src/example/demo-hub.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool } from '../helpers/client.js';
import { openCountingCompletions, record, sendInFrames } from '../helpers/raw-client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/group-limits-test';
const hub: HubDefinition = {
  methods: { Join: (ctx, group: string) => ctx.groups.add(ctx.connectionId, group) },
};

describe('groups per connection', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  it('refuses a join past maxGroupsPerConnection with a HubError the caller reads', async () => {
    server = await startServer({ maxGroupsPerConnection: 3 });
    const c = await clients.connect(server.url());
    for (const g of ['a', 'b', 'c']) await c.invoke('JoinGroup', g);
    await c.invoke('JoinGroup', 'a'); // note: joining a group it is in again takes no new place.
    await expect(c.invoke('JoinGroup', 'd')).rejects.toThrow(
      /HubException: Connection '.+' is already in 3 groups \(maxGroupsPerConnection\); leave one first\./,
    );
    await c.invoke('LeaveGroup', 'a');
    await c.invoke('JoinGroup', 'd');
  });

  it('refuses a group name with braces in any hub (hashtag integrity), saying why', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    await expect(c.invoke('Join', 'a}b')).rejects.toThrow(
      "HubException: Group names may not contain '{' or '}'.",
    );
  });

  it("the demo hub's authorizeGroupJoin refuses bad names and more than its own cap, saying why", async () => {
    server = await startServer({});
    const c = await clients.connect(server.url(DEMO_HUB_PATH));
    await expect(c.invoke('JoinGroup', 'has space')).rejects.toThrow(
      'HubException: Group names are 1 to 64 letters, digits or . _ : @ - (got 9 characters).',
    );
    await expect(c.invoke('JoinGroup', 'x'.repeat(65))).rejects.toThrow('HubException: Group names are');
    for (let i = 0; i < DEMO_MAX_GROUPS; i++) await c.invoke('JoinGroup', `room-${i}`);
    await expect(c.invoke('JoinGroup', 'one-more')).rejects.toThrow(
      `HubException: A connection may join at most ${DEMO_MAX_GROUPS} groups in the demo hub.`,
    );
  });
});

describe('a connection with many groups disconnects (pubsub, private Redis)', () => {
  const GROUPS = 2_500;
  let redis: RedisServer;
  let admin: Redis;
  let server: TestServer;
  const prefix = uniquePrefix('groups');

  beforeAll(async () => {
    redis = await startRedisServer();
    admin = new Redis(redis.url);
    server = await startServer(
      {
        maxGroupsPerConnection: GROUPS,
        backplane: new PubSubBackplane({ redisUrl: redis.url, channelPrefix: prefix }),
      },
      { [HUB]: hub },
    );
  });

  afterAll(async () => {
    admin.disconnect();
    await server.close();
    await redis.dispose();
  });

  const unsubscribeCalls = async (): Promise<number> => {
    const info = await admin.info('commandstats');
    return Number(/cmdstat_unsubscribe:calls=(\d+)/.exec(info)?.[1] ?? 0);
  };
  const channels = async (): Promise<number> => (await admin.pubsub('CHANNELS', `${prefix}:*`)).length;

  it('unsubscribes in a few batched commands and leaves only the hub-wide channels', async () => {
    const baseline = await channels();
    const { ws, completions } = await openCountingCompletions(server.url(HUB));
    const joins = Array.from({ length: GROUPS }, (_, i) =>
      record({ type: 1, invocationId: `j${i}`, target: 'Join', arguments: [`g${i}`] }),
    );
    sendInFrames(ws, joins, 500);
    await waitFor(() => completions() === GROUPS, { timeoutMs: 15_000 });
    expect(await channels()).toBe(baseline + GROUPS + 1); // its groups and its connection channel
    const before = await unsubscribeCalls();
    ws.terminate();
    await waitFor(async () => (await channels()) === baseline, { timeoutMs: 5_000 });
    // note: one command per 1,000 channels (2,501 channels: 3), where there was one per group.
    expect((await unsubscribeCalls()) - before).toBeLessThanOrEqual(3);
  });
});
