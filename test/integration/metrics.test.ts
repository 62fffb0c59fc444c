import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBackplane } from '../../src/backplane/memory/memory-backplane.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { workerMetrics } from '../../src/metrics/worker-metrics.js';
import { closeServer, listenMetrics } from '../../src/metrics/metrics-endpoint.js';
import { ClientPool } from '../helpers/client.js';
import { metricValue, parseMetrics, scrape } from '../helpers/metrics.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const hub = DEMO_HUB_PATH;

describe('metrics', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await clients.stopAll();
    await Promise.all(servers.splice(0).map((s) => s.close()));
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('counts connections, sends, receives, invocations, backplane and reliable-lane figures', async () => {
    const channelPrefix = uniquePrefix('metrics');
    cleanups.push(() => deletePrefix(REDIS_URL, channelPrefix));
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({
          backplane: new StreamsBackplane({
            redisUrl: REDIS_URL,
            channelPrefix,
            reliable: { maxAttempts: 2, retryDelayMs: 10 },
          }),
          authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
        }),
      );
    }
    const [a, b] = servers as [TestServer, TestServer];
    const alice = await clients.connect(a.url(), { token: await signToken('alice') });
    const bob = await clients.connect(a.url(), { token: await signToken('bob') });
    await clients.connect(b.url(), { token: await signToken('carol') });
    let release: (() => void) | undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    alice.on('held', async () => {
      await held;
      return true;
    });

    // 1 JoinGroup + 2 SendToGroup + 1 SendToAll + 3 Echo + 1 failing JoinGroup + 1 unknown = 9 invocations
    await alice.invoke('JoinGroup', 'g');
    await alice.invoke('SendToGroup', 'g', 'one');
    await alice.invoke('SendToGroup', 'g', 'two');
    await bob.invoke('SendToAll', 'hi');
    for (let i = 0; i < 3; i++) await bob.invoke('Echo', i);
    await expect(bob.invoke('JoinGroup', '')).rejects.toThrow(/non-empty/);
    await expect(bob.invoke('NoSuchMethod')).rejects.toThrow(/unknown hub method/);
    const reliable = a.server.hub(hub).reliable;
    await reliable.user('alice').send('held', 1);
    // bob has no handler for 'missing': a nack, redelivered once (maxAttempts 2), then a dead letter
    await reliable.user('bob').send('missing');

    let samples = await scrape(`${a.baseUrl}/metrics`);
    const value = (name: string, labels: Record<string, string> = {}) => metricValue(samples, name, labels);
    expect(value('relayhub_connections', { hub })).toBe(2);
    expect(value('relayhub_messages_sent_total', { hub, route: 'groups' })).toBe(2);
    expect(value('relayhub_messages_sent_total', { hub, route: 'all' })).toBe(1);
    expect(value('relayhub_messages_sent_total', { hub, route: 'users' })).toBe(0);
    expect(value('relayhub_messages_sent_total', { hub, route: 'reliable' })).toBe(2);
    expect(value('relayhub_invocations_total', { hub, method: 'Echo', outcome: 'ok' })).toBe(3);
    expect(value('relayhub_invocations_total', { hub, method: 'JoinGroup', outcome: 'ok' })).toBe(1);
    expect(value('relayhub_invocations_total', { hub, method: 'JoinGroup', outcome: 'error' })).toBe(1);
    expect(value('relayhub_invocations_total', { hub, method: 'SendToUser', outcome: 'ok' })).toBe(0);
    expect(value('relayhub_client_errors_total', { hub, kind: 'unknownMethod' })).toBe(1);
    expect(value('relayhub_invocations_total', { hub, method: 'NoSuchMethod' })).toBeUndefined();
    expect(value('relayhub_backplane_up', { endpoint: REDIS_URL })).toBe(1);
    expect(value('relayhub_backplane_possible_gaps_total')).toBe(0);
    expect(value('relayhub_backplane_channel_subscribers', { hub })).toBe(2);
    // the broadcast and reply channels, g, alice's and bob's user and connection channels
    expect(value('relayhub_backplane_subscriptions')).toBe(7);
    expect(value('process_cpu_user_seconds_total')).toBeGreaterThan(0);

    await waitFor(async () => {
      samples = await scrape(`${a.baseUrl}/metrics`);
      return (
        value('relayhub_reliable_dead_letters_total', { hub }) === 1 &&
        (value('relayhub_reliable_lag_seconds', { hub }) ?? 0) >= 0.2
      );
    });
    expect(value('relayhub_reliable_redeliveries_total', { hub })).toBe(1);
    // the 9 invocations and bob's 2 nacks (completions with an error); pings are not counted
    expect(value('relayhub_messages_received_total', { hub })).toBe(11);
    expect(value('relayhub_reliable_pending', { hub })).toBe(1);
    expect(value('relayhub_reliable_acked_total', { hub })).toBe(1); // the dead letter's position

    release?.();
    await waitFor(async () => {
      samples = await scrape(`${a.baseUrl}/metrics`);
      return value('relayhub_reliable_acked_total', { hub }) === 2;
    });
    expect(value('relayhub_reliable_lag_seconds', { hub })).toBe(0);
    expect(value('relayhub_messages_received_total', { hub })).toBe(12); // alice's ack
    await waitFor(async () => {
      samples = await scrape(`${a.baseUrl}/metrics`);
      return value('relayhub_reliable_pending', { hub }) === 0;
    });
    // instance b holds carol only
    const other = await scrape(`${b.baseUrl}/metrics`);
    expect(metricValue(other, 'relayhub_connections', { hub })).toBe(1);
    expect(metricValue(other, 'relayhub_messages_received_total', { hub })).toBe(0);
  });

  it('moves to its own port, or is turned off', async () => {
    const own = await startServer({
      backplane: new MemoryBackplane(),
      metrics: { port: 0, host: '127.0.0.1' },
    });
    servers.push(own);
    const off = await startServer({ metrics: false });
    servers.push(off);
    expect((await fetch(`${own.baseUrl}/metrics`)).status).toBe(404);
    const port = own.server.metricsAddress?.port;
    const samples = await scrape(`http://127.0.0.1:${port}/metrics`);
    expect(metricValue(samples, 'relayhub_backplane_up', { endpoint: 'memory' })).toBe(1);
    expect((await fetch(`${off.baseUrl}/metrics`)).status).toBe(404);
    expect(parseMetrics(await off.server.metrics()).length).toBeGreaterThan(0);
  });

  it("reports the worker's backlog, the oldest unrelayed row and the rows relayed", async () => {
    const schema: TestSchema = await createTestSchema('metrics');
    cleanups.push(() => schema.drop());
    const channelPrefix = uniquePrefix('metrics-w');
    cleanups.push(() => deletePrefix(REDIS_URL, channelPrefix));
    const worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix,
      maintenance: false,
      // note: no pass but the first until wake(): the idle wait ends at the next poll or ack sync
      pollIntervalMs: 60_000,
      ackSyncIntervalMs: 60_000,
      hotForMs: 0,
    });
    cleanups.push(() => worker.close());
    const { server, address } = await listenMetrics(workerMetrics(worker), 0, '127.0.0.1');
    cleanups.push(() => closeServer(server));
    const url = `http://127.0.0.1:${address.port}/metrics`;
    await worker.start();
    await waitFor(async () => metricValue(await scrape(url), 'relayhub_outbox_relayed_total') === 0);
    // note: a plain INSERT sends no NOTIFY, and the worker polls once a minute: the rows wait.
    await waitFor(() => worker.stats.passes > 0);
    await schema.pool.query(
      `INSERT INTO relayhub_outbox (channel_prefix, hub, user_id, partition, target, args, created_at, expires_at)
       SELECT $1, '/hubs/demo', 'u' || i, 0, 'note', '[]', now() - interval '5 seconds', now() + interval '1 hour'
       FROM generate_series(1, 3) AS i`,
      [channelPrefix],
    );
    // note: one scrape for every figure (the worker's rebalance pass may relay the rows any moment)
    let before: Awaited<ReturnType<typeof scrape>> = [];
    await waitFor(async () => {
      before = await scrape(url);
      return metricValue(before, 'relayhub_outbox_backlog') === 3;
    });
    expect(metricValue(before, 'relayhub_outbox_oldest_unrelayed_seconds')).toBeGreaterThanOrEqual(5);
    expect(metricValue(before, 'relayhub_outbox_relayed_total')).toBe(0);
    worker.wake();
    await waitFor(async () => metricValue(await scrape(url), 'relayhub_outbox_relayed_total') === 3);
    const after = await scrape(url);
    expect(metricValue(after, 'relayhub_outbox_backlog')).toBe(0);
    expect(metricValue(after, 'relayhub_outbox_oldest_unrelayed_seconds')).toBe(0);
  });
});
