/**
 * One app with two hubs (`/hubs/demo` and `/hubs/orders`, both on one in-process server, streams
 * backplane) and one `relayhub worker --hub /hubs/demo --hub /hubs/orders` process: rows enqueued through
 * `createOutbox` (default hub `/hubs/demo`, per message `hub: '/hubs/orders'`) reach the clients of the
 * hub they were enqueued for, in order, and never the other hub's clients (the same user is connected to
 * both). The worker registers once per hub it serves.
 *
 * Needs `npm run build`. Shared Redis (unique prefix, keys deleted afterwards) and Postgres (own schema).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH, demoHub } from '../../src/example/demo-hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { createOutbox } from '../../src/outbox/enqueue.js';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deletePrefix,
  deliveryProblems,
  range,
  ReceivedLog,
  uniqueApplicationName,
  withApplicationName,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const ORDERS_HUB = '/hubs/orders';
const USERS = ['ann', 'ben', 'cal'];
const PER_USER_PER_HUB = 20;

describe('outbox: one app, two hubs', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await processes.stopAll();
    await server?.close();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    server = schema = prefix = undefined;
  });

  it('delivers each row to the clients of the hub it was enqueued for, and only to them', async () => {
    schema = await createTestSchema('hubs');
    prefix = uniquePrefix('outbox-hubs');
    const s = schema;
    server = await startServer(
      {
        backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      },
      { [DEMO_HUB_PATH]: demoHub, [ORDERS_HUB]: demoHub },
    );
    const name = uniqueApplicationName('hubs');
    const worker = await processes.startWorker({
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      databaseUrl: withApplicationName(s.databaseUrl, name),
      instanceId: name,
      hub: DEMO_HUB_PATH,
      args: ['--hub', ORDERS_HUB],
    });
    expect(worker.output()).toContain(`hub ${DEMO_HUB_PATH}, ${ORDERS_HUB}`);
    const logs: Record<string, ReceivedLog> = {
      [DEMO_HUB_PATH]: new ReceivedLog(),
      [ORDERS_HUB]: new ReceivedLog(),
    };
    await Promise.all(
      USERS.flatMap((user) =>
        Object.entries(logs).map(([hub, log]) =>
          connectRecorded(clients, server!.url(hub), user, log, TARGET),
        ),
      ),
    );

    const outbox = createOutbox({ channelPrefix: prefix });
    expect(outbox.hub).toBe(DEMO_HUB_PATH);
    const expected: Record<string, Map<string, string[]>> = {
      [DEMO_HUB_PATH]: new Map(USERS.map((u) => [u, [] as string[]])),
      [ORDERS_HUB]: new Map(USERS.map((u) => [u, [] as string[]])),
    };
    const c = await s.pool.connect();
    try {
      await c.query('BEGIN');
      for (const n of range(1, PER_USER_PER_HUB)) {
        for (const user of USERS) {
          // alternately the default hub and the orders hub, in one transaction
          const demo = await outbox.enqueue(c, { userId: user, target: TARGET, args: [{ hub: 'demo', n }] });
          expected[DEMO_HUB_PATH]!.get(user)!.push(`outbox:${demo.id}`);
          const orders = await outbox.enqueue(c, {
            userId: user,
            target: TARGET,
            args: [{ hub: 'orders', n }],
            hub: ORDERS_HUB,
          });
          expected[ORDERS_HUB]!.get(user)!.push(`outbox:${orders.id}`);
        }
      }
      await c.query('COMMIT');
    } finally {
      c.release();
    }

    const total = USERS.length * PER_USER_PER_HUB;
    await waitFor(() => Object.values(logs).every((log) => log.distinctCount === total), {
      timeoutMs: 10_000,
      message: () =>
        `every message on its hub (got ${Object.values(logs).map((l) => l.distinctCount)} of ${total} each)`,
    });
    for (const hub of [DEMO_HUB_PATH, ORDERS_HUB]) {
      expect(deliveryProblems(logs[hub]!, expected[hub]!)).toEqual([]);
      for (const user of USERS) {
        expect(logs[hub]!.distinct(user).map((r) => (r.payload as { hub: string }).hub)).toEqual(
          range(1, PER_USER_PER_HUB).map(() => (hub === ORDERS_HUB ? 'orders' : 'demo')),
        );
      }
    }
    const { rows } = await s.pool.query<{ hub: string }>(
      'SELECT hub FROM relayhub_workers WHERE id = $1 AND channel_prefix = $2 ORDER BY hub',
      [name, prefix],
    );
    expect(rows.map((r) => r.hub)).toEqual([DEMO_HUB_PATH, ORDERS_HUB]);
  });
});
