/**
 * The outbox worker over two Redis endpoints: two private redis-servers `a` and `b` (append-only files,
 * so that a stopped one comes back with its data) and one `relayhub worker --redis-endpoint a=…
 * --redis-endpoint b=…` process. Each user's rows go to the user's inbox endpoint (`inboxEndpointOf`, the
 * rendezvous hash the hubs use too). Hub side: two `relayhub serve --backplane streams` processes on
 * both endpoints, hub A with primary `a` and secondary `b`, hub B the other way round; users' clients
 * alternate between them, whatever their inbox endpoint.
 *
 * Orders are committed at a steady pace while endpoint `a` is stopped for 5 s (SIGTERM, then started
 * again on its port with its data). Meanwhile `b`'s users keep receiving (each message within 2.5 s of its
 * commit) and `a`'s users receive nothing; afterwards every message has arrived at every user, in order,
 * with gapless lane offsets (each message once in the lane).
 *
 * Also: a bad `--redis-endpoint` entry is a startup error that names it (exit 2).
 *
 * Needs `npm run build`. Private redis-servers; shared Postgres (own schema).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { inboxEndpointOf } from '../../src/redis/endpoints.js';
import { runCli } from '../helpers/cli.js';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deliveryProblems,
  range,
  ReceivedLog,
  uniqueApplicationName,
  withApplicationName,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { InstancePool } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait-for.js';

const TARGET = 'orderStatus';
const HUB = '/hubs/demo';
const USERS_PER_ENDPOINT = 3;
const ORDERS = 60;
const PACE_MS = 120;
const DOWN_MS = 5_000;
/** On time for b's users during a's outage (far below the outage; a loaded machine takes ~1 s). */
const LATE_MS = 2_500;

describe('outbox chaos: a worker over two Redis endpoints, one down for 5 s', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  const servers: RedisServer[] = [];
  let schema: TestSchema | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await processes.stopAll();
    await Promise.allSettled(servers.splice(0).map((s) => s.dispose()));
    await schema?.drop();
    schema = undefined;
  });

  it(
    'keeps the other endpoint flowing, and delivers every message in order once it is back',
    { timeout: 50_000 },
    async () => {
      schema = await createTestSchema('endpoints');
      const s = schema;
      const [a, b] = [await startRedisServer({ persist: true }), await startRedisServer({ persist: true })];
      servers.push(a!, b!);
      const endpoints = [
        { name: 'a', server: a! },
        { name: 'b', server: b! },
      ];
      const prefix = uniquePrefix('outbox-endpoints');
      // hub A: primary a, secondary b; hub B: primary b, secondary a (the hub backplane over endpoints)
      const hubs = await Promise.all(
        endpoints.map((e, k) => {
          const other = endpoints[1 - k]!;
          return processes.start({
            redisUrl: e.server.url,
            channelPrefix: prefix,
            backplane: 'streams',
            instanceId: `${prefix}-hub-${e.name}`,
            args: [
              '--redis-endpoint',
              `${e.name}=${e.server.url}`,
              '--redis-endpoint',
              `${other.name}:secondary=${other.server.url}`,
            ],
          });
        }),
      );
      expect(hubs[0]!.output()).toContain('endpoints a:primary b:secondary');
      expect(hubs[1]!.output()).toContain('endpoints b:primary a:secondary');
      const name = uniqueApplicationName('endpoints');
      const worker = await processes.startWorker({
        redisUrl: a!.url,
        channelPrefix: prefix,
        databaseUrl: withApplicationName(s.databaseUrl, name),
        instanceId: name,
        args: endpoints.flatMap((e) => ['--redis-endpoint', `${e.name}=${e.server.url}`]),
      });
      expect(worker.output()).toContain('endpoints a, b');

      // users whose inbox endpoint is a, and users whose is b
      const byEndpoint = new Map<string, string[]>([
        ['a', []],
        ['b', []],
      ]);
      for (let i = 0; [...byEndpoint.values()].some((u) => u.length < USERS_PER_ENDPOINT); i++) {
        const user = `buyer-${i}`;
        const list = byEndpoint.get(inboxEndpointOf(user, endpoints).name)!;
        if (list.length < USERS_PER_ENDPOINT) list.push(user);
      }
      const users = [...byEndpoint.values()].flat();
      const log = new ReceivedLog();
      // each user on either hub, whatever its inbox endpoint
      await Promise.all(
        users.map((user, i) =>
          connectRecorded(clients, hubs[i % 2]!.url(), user, log, TARGET, {
            reconnectDelays: [0, 100, 500, 1_000],
          }),
        ),
      );

      const expected = new Map<string, string[]>(users.map((u) => [u, []]));
      const committedAt = new Map<string, number>();
      let committed = 0;
      const c = await s.pool.connect();
      const producing = (async () => {
        try {
          for (const n of range(1, ORDERS)) {
            const started = Date.now();
            await c.query('BEGIN');
            const ids: string[] = [];
            for (const user of users) {
              const { id } = await enqueue(
                c,
                { userId: user, target: TARGET, args: [{ n }] },
                { channelPrefix: prefix, hub: HUB },
              );
              expected.get(user)!.push(`outbox:${id}`);
              ids.push(`outbox:${id}`);
            }
            await c.query('COMMIT');
            for (const id of ids) committedAt.set(id, Date.now());
            committed = n;
            // a deliberate pace, not a synchronization: the orders span the outage
            const wait = PACE_MS - (Date.now() - started);
            if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          }
        } finally {
          c.release();
        }
      })();
      producing.catch(() => undefined);

      const [usersA, usersB] = [byEndpoint.get('a')!, byEndpoint.get('b')!];
      const received = (list: string[]) => list.reduce((sum, u) => sum + log.distinct(u).length, 0);
      await waitFor(() => received(usersA) >= 5 * USERS_PER_ENDPOINT, {
        timeoutMs: 10_000,
        message: "a's users received their first orders",
      });
      await a!.stop();
      const downAt = { committed, a: received(usersA), b: received(usersB), at: Date.now() };
      // the outage: a deliberate duration
      await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
      const during = { committed, a: received(usersA), b: received(usersB), at: Date.now() };
      await a!.start();

      await producing;
      const total = ORDERS * users.length;
      try {
        await waitFor(() => log.distinctCount === total, { timeoutMs: 20_000, intervalMs: 50 });
      } catch {
        throw new Error(
          `not every order arrived (${log.distinctCount} of ${total}):\n` +
            deliveryProblems(log, expected).slice(0, 10).join('\n'),
        );
      }
      // b's users during the outage: how late their messages committed in it arrived, and how many of those
      // committed early enough to arrive on time (LATE_MS) arrived before the outage ended
      let worstB = 0;
      let dueInOutage = 0;
      let arrivedInOutage = 0;
      for (const user of usersB) {
        for (const r of log.distinct(user)) {
          const commit = committedAt.get(r.messageId) ?? 0;
          if (commit < downAt.at || commit > during.at) continue;
          worstB = Math.max(worstB, r.at - commit);
          if (commit > during.at - LATE_MS) continue;
          dueInOutage++;
          if (r.at <= during.at) arrivedInOutage++;
        }
      }
      console.info(
        `endpoints: ${total} orders for ${users.length} users over 2 endpoints; endpoint a stopped ${DOWN_MS} ms ` +
          `(orders ${downAt.committed} -> ${during.committed} committed meanwhile): a's users received ` +
          `${during.a - downAt.a} meanwhile, b's ${during.b - downAt.b} (worst commit -> receipt ${worstB} ms); ` +
          `${log.received} copies, ${log.duplicates} duplicate(s) before dedup`,
      );
      expect(during.committed - downAt.committed).toBeGreaterThan(20);
      // nothing reached a's users while their endpoint was down; b's kept flowing, on time
      expect(during.a).toBe(downAt.a);
      expect(dueInOutage).toBeGreaterThanOrEqual(10 * USERS_PER_ENDPOINT);
      expect(arrivedInOutage).toBe(dueInOutage);
      expect(worstB).toBeLessThan(LATE_MS);
      // afterwards: every message, in commit order, each once in its user's lane
      expect(deliveryProblems(log, expected)).toEqual([]);
      for (const user of users) {
        expect(log.distinct(user).map((r) => r.offset)).toEqual(range(1, ORDERS));
        expect(log.distinct(user).map((r) => (r.payload as { n: number }).n)).toEqual(range(1, ORDERS));
      }
      for (const hub of hubs) expect(hub.hasExited).toBe(false);
      expect(worker.hasExited).toBe(false);
    },
  );

  it('refuses a bad --redis-endpoint entry at startup, naming it (exit 2)', async () => {
    const run = await runCli([
      'worker',
      '--redis-endpoint',
      'a=redis://127.0.0.1:1',
      '--redis-endpoint',
      'b:tertiary=redis://127.0.0.1:2',
    ]);
    expect(run.code).toBe(2);
    expect(run.output).toContain("Bad Redis endpoint entry 'b:tertiary=redis://127.0.0.1:2'");
    const env = await runCli(['worker'], {
      REDIS_ENDPOINTS: 'good=redis://127.0.0.1:1 bad=http://127.0.0.1:2',
    });
    expect(env.code).toBe(2);
    expect(env.output).toContain("Bad Redis endpoint entry 'bad=http://127.0.0.1:2'");
  });
});
