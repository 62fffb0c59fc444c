import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { ordersApi } from '../../src/example/orders-api.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('outbox smoke', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    await worker?.close();
    await schema?.drop();
  });

  it('delivers an order status committed through the example API and records the ack', async () => {
    schema = await createTestSchema('smoke');
    const jwt = jwtAuthenticator({ secret: TEST_JWT_SECRET });
    const channelPrefix = uniquePrefix('outbox');
    server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix }),
      authenticate: jwt,
      fallback: ordersApi(schema.pool, { authenticate: jwt, channelPrefix }),
    });
    worker = new OutboxWorker({
      databaseUrl: schema.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix,
      maintenance: false,
    });
    await worker.start();
    const got: unknown[][] = [];
    const token = await signToken('alice');
    const alice = clients.add(buildClient(server.url(), { token }));
    alice.on('orderStatus', (...args: unknown[]) => {
      got.push(args);
      return true;
    });
    await alice.start();
    const response = await fetch(`${server.baseUrl}/api/orders/42/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ userId: 'alice', status: 'shipped' }),
    });
    expect(response.status).toBe(200);
    const { outboxId } = (await response.json()) as { outboxId: string };
    await waitFor(() => got.length === 1);
    expect(got[0]).toEqual([
      { orderId: '42', status: 'shipped' },
      { messageId: `outbox:${outboxId}`, offset: 1 },
    ]);
    await waitFor(async () => {
      // note: the row was there (its message arrived); the ack sync deletes it once the client acked.
      const { rows } = await schema!.pool.query('SELECT 1 FROM relayhub_outbox WHERE id = $1', [outboxId]);
      return rows.length === 0;
    });
    const bad = await fetch(`${server.baseUrl}/api/orders/42/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ userId: 'alice', status: 'x', extra: 1 }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: 'Unknown field(s): extra.' });
  });
});
