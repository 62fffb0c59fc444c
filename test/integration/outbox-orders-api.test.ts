/**
 * The example app's `POST /api/orders/:orderId/status`: 401 without a valid JWT, 403 for another user's
 * order (unless a service token), 409 for moving an order to another user, 415 for a non-JSON body, 400
 * for a malformed percent-encoding; bad JSON, a body that is not an object, unknown
 * fields, missing or empty fields, a user id the outbox refuses, and a body over the size limit answer 400
 * with a message and write nothing; other paths 404, other methods 405; a valid body answers 200, upserts
 * the example_orders row and enqueues the orderStatus message in the same transaction (delivered in order
 * to the user's official client); Postgres unreachable answers 503.
 *
 * In-process hub (streams backplane, shared Redis, unique prefix) with the orders API and a worker.
 */
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { ORDERS_ANY_USER_CLAIM, ordersApi } from '../../src/example/orders-api.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { ClientPool } from '../helpers/client.js';
import { connectRecorded, deletePrefix, ReceivedLog } from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const jwt = jwtAuthenticator({ secret: TEST_JWT_SECRET });

describe('example orders API', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  const pools: pg.Pool[] = [];
  let worker: OutboxWorker | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await worker?.close();
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
    await Promise.allSettled(pools.splice(0).map((p) => p.end()));
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    worker = schema = prefix = undefined;
  });

  async function setup(): Promise<{ schema: TestSchema; server: TestServer }> {
    schema = await createTestSchema('orders');
    prefix = uniquePrefix('outbox-orders');
    const server = await startServer({
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwt,
      fallback: ordersApi(schema.pool, { authenticate: jwt, channelPrefix: prefix }),
    });
    servers.push(server);
    return { schema, server };
  }

  /** POSTs `body` as JSON with a token for `as` (a service token when 'service'; none when null). */
  async function post(
    server: TestServer,
    path: string,
    body: string,
    as: string | null = 'service',
    headers: Record<string, string> = { 'content-type': 'application/json' },
  ): Promise<{ status: number; body: unknown }> {
    const token =
      as === 'service'
        ? await signToken('orders-service', TEST_JWT_SECRET, { [ORDERS_ANY_USER_CLAIM]: 'any' })
        : as === null
          ? undefined
          : await signToken(as);
    const response = await fetch(`${server.baseUrl}${path}`, {
      method: 'POST',
      headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body,
    });
    return { status: response.status, body: await response.json() };
  }

  async function counts(s: TestSchema): Promise<{ orders: number; outbox: number }> {
    const { rows } = await s.pool.query<{ orders: number; outbox: number }>(
      `SELECT (SELECT count(*)::int FROM example_orders) AS orders, (SELECT count(*)::int FROM relayhub_outbox) AS outbox`,
    );
    return rows[0]!;
  }

  it('answers 400 with a message for bad bodies and writes nothing', async () => {
    const { schema: s, server } = await setup();
    const path = '/api/orders/o-1/status';
    const cases: [string, string][] = [
      ['{', 'The body is not valid JSON.'],
      ['', 'The body is not valid JSON.'],
      ['[1,2]', 'The body must be a JSON object with userId and status.'],
      ['null', 'The body must be a JSON object with userId and status.'],
      ['"shipped"', 'The body must be a JSON object with userId and status.'],
      ['{"userId":"u","status":"s","extra":1,"more":2}', 'Unknown field(s): extra, more.'],
      ['{"status":"s"}', "'userId' must be a non-empty string."],
      ['{"userId":"","status":"s"}', "'userId' must be a non-empty string."],
      ['{"userId":7,"status":"s"}', "'userId' must be a non-empty string."],
      ['{"userId":"u"}', "'status' must be a non-empty string."],
      ['{"userId":"u","status":""}', "'status' must be a non-empty string."],
      ['{"userId":"u","status":["s"]}', "'status' must be a non-empty string."],
      [
        '{"userId":"u{1}","status":"s"}',
        'Outbox message has a userId that is not 1-256 characters without braces or whitespace.',
      ],
      [
        '{"userId":"a b","status":"s"}',
        'Outbox message has a userId that is not 1-256 characters without braces or whitespace.',
      ],
    ];
    for (const [body, error] of cases) {
      expect(await post(server, path, body), body).toEqual({ status: 400, body: { error } });
    }
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
  });

  it('answers 400 to a body over 16 KiB', async () => {
    const { schema: s, server } = await setup();
    const body = JSON.stringify({ userId: 'u', status: 'x'.repeat(20_000) });
    expect(await post(server, '/api/orders/o-1/status', body)).toEqual({
      status: 400,
      body: { error: 'The body is larger than 16384 bytes.' },
    });
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
    // the server is still fine afterwards
    expect((await post(server, '/api/orders/o-1/status', '{"userId":"u","status":"ok"}')).status).toBe(200);
  });

  it('answers 404 off the route and 405 to other methods', async () => {
    const { server } = await setup();
    for (const path of ['/api/orders/o-1', '/api/orders/o-1/status/x', '/api/other', '/']) {
      expect(await post(server, path, '{}'), path).toEqual({ status: 404, body: { error: 'Not found.' } });
    }
    const get = await fetch(`${server.baseUrl}/api/orders/o-1/status`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect(await get.json()).toEqual({ error: 'Use POST.' });
  });

  it('answers 200, upserts the order and delivers its status updates in order', async () => {
    const { schema: s, server } = await setup();
    worker = new OutboxWorker({
      databaseUrl: s.databaseUrl,
      redisUrl: REDIS_URL,
      channelPrefix: prefix!,
      maintenance: false,
    });
    await worker.start();
    const log = new ReceivedLog();
    await connectRecorded(clients, server.url(), 'olga', log, 'orderStatus');

    const statuses = ['placed', 'paid', 'shipped'];
    const ids: string[] = [];
    for (const status of statuses) {
      const response = await post(
        server,
        '/api/orders/A%2F17/status',
        JSON.stringify({ userId: 'olga', status }),
      );
      expect(response.status).toBe(200);
      const body = response.body as { orderId: string; status: string; outboxId: string };
      expect(body).toEqual({ orderId: 'A/17', status, outboxId: expect.stringMatching(/^\d+$/) });
      ids.push(body.outboxId);
      const { rows } = await s.pool.query('SELECT order_id, user_id, status, updated_at FROM example_orders');
      expect(rows).toEqual([{ order_id: 'A/17', user_id: 'olga', status, updated_at: expect.any(Date) }]);
    }
    const { rows: outbox } = await s.pool.query<{
      id: string;
      user_id: string;
      target: string;
      args: unknown;
    }>('SELECT id, user_id, target, args FROM relayhub_outbox ORDER BY id');
    expect(outbox).toEqual(
      statuses.map((status, i) => ({
        id: ids[i],
        user_id: 'olga',
        target: 'orderStatus',
        args: [{ orderId: 'A/17', status }],
      })),
    );
    await waitFor(() => log.distinctCount === 3, { message: 'the three updates' });
    expect(log.copies('olga').map((r) => [r.payload, r.messageId, r.offset])).toEqual(
      statuses.map((status, i) => [{ orderId: 'A/17', status }, `outbox:${ids[i]}`, i + 1]),
    );
  });

  it('answers 401 without a token or with a bad one, and writes nothing', async () => {
    const { schema: s, server } = await setup();
    const path = '/api/orders/o-1/status';
    const body = '{"userId":"u","status":"s"}';
    const refused = {
      status: 401,
      body: { error: 'A bearer token (the same JWT as the hub) is required.' },
    };
    expect(await post(server, path, body, null)).toEqual(refused);
    const wrongSecret = await signToken('u', 'another-secret-that-is-long-enough-for-hs256');
    const noExp = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('u')
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    for (const token of [wrongSecret, noExp, 'garbage']) {
      const response = await fetch(`${server.baseUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
      });
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe('Bearer');
      expect(await response.json()).toEqual(refused.body);
    }
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
  });

  it('lets a user post only for itself; a service token with the claim posts for anyone', async () => {
    const { schema: s, server } = await setup();
    const path = '/api/orders/o-7/status';
    expect(await post(server, path, '{"userId":"carol","status":"placed"}', 'mallory')).toEqual({
      status: 403,
      body: {
        error:
          'This token may post orders only for its own user (sub); a service token needs the claim "relayhub:orders": "any".',
      },
    });
    // note: a claim with another value is no service token.
    const almost = await signToken('svc', TEST_JWT_SECRET, { [ORDERS_ANY_USER_CLAIM]: 'all' });
    const response = await fetch(`${server.baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${almost}` },
      body: '{"userId":"carol","status":"placed"}',
    });
    expect(response.status).toBe(403);
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
    expect((await post(server, path, '{"userId":"carol","status":"placed"}', 'carol')).status).toBe(200);
    expect((await post(server, path, '{"userId":"carol","status":"paid"}', 'service')).status).toBe(200);
    expect(await counts(s)).toEqual({ orders: 1, outbox: 2 });
  });

  it('refuses to move an existing order to another user with 409, even for a service token', async () => {
    const { schema: s, server } = await setup();
    const path = '/api/orders/o-9/status';
    expect((await post(server, path, '{"userId":"dave","status":"placed"}', 'dave')).status).toBe(200);
    const moved = {
      status: 409,
      body: { error: "Order 'o-9' belongs to another user; an order cannot be moved to another user." },
    };
    expect(await post(server, path, '{"userId":"erin","status":"mine now"}', 'erin')).toEqual(moved);
    expect(await post(server, path, '{"userId":"erin","status":"mine now"}', 'service')).toEqual(moved);
    const { rows } = await s.pool.query('SELECT user_id, status FROM example_orders');
    expect(rows).toEqual([{ user_id: 'dave', status: 'placed' }]);
    const { rows: outbox } = await s.pool.query('SELECT user_id FROM relayhub_outbox');
    expect(outbox).toEqual([{ user_id: 'dave' }]);
  });

  it('answers 415 to any Content-Type but application/json', async () => {
    const { schema: s, server } = await setup();
    const path = '/api/orders/o-1/status';
    const body = '{"userId":"u","status":"s"}';
    const unsupported = {
      status: 415,
      body: { error: "Send the body as 'Content-Type: application/json'." },
    };
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', '']) {
      expect(await post(server, path, body, 'u', type ? { 'content-type': type } : {}), type).toEqual(
        unsupported,
      );
    }
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
    const withCharset = { 'content-type': 'Application/JSON; charset=utf-8' };
    expect((await post(server, path, body, 'u', withCharset)).status).toBe(200);
  });

  it('answers 400 (not 503) to a malformed percent-encoding in the order id', async () => {
    const { schema: s, server } = await setup();
    for (const path of ['/api/orders/%E0%A4%A/status', '/api/orders/%/status', '/api/orders/%C3/status']) {
      expect(await post(server, path, '{"userId":"u","status":"s"}', 'u'), path).toEqual({
        status: 400,
        body: { error: 'Bad request target.' },
      });
    }
    expect(await counts(s)).toEqual({ orders: 0, outbox: 0 });
  });

  it('answers 503 when Postgres is unreachable, and nothing is sent', async () => {
    const pool = new pg.Pool({
      connectionString: 'postgres://postgres@127.0.0.1:1/nothing',
      connectionTimeoutMillis: 2_000,
    });
    pool.on('error', () => undefined);
    pools.push(pool);
    const server = await startServer({ fallback: ordersApi(pool, { authenticate: jwt }) });
    servers.push(server);
    expect(await post(server, '/api/orders/o-1/status', '{"userId":"u","status":"s"}')).toEqual({
      status: 503,
      body: { error: 'The order could not be saved; nothing was sent. Retry later.' },
    });
  });
});
