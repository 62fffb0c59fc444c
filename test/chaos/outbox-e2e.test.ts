/**
 * End to end through the example app: three `relayhub serve --backplane streams --example-app --database-url …`
 * processes (each mounts the orders API) and two `relayhub worker` processes on one outbox; 24 users with
 * official @microsoft/signalr clients spread over the three hubs. Each user's order goes through 15 status
 * updates, POSTed one after another (to the two hubs that are not paused) at a steady pace; meanwhile one hub is SIGSTOPped for
 * 5 s (its clients' connections hang; its users' messages wait in their inboxes). Every update reaches its
 * user, in order per user, zero missing; both workers relay (each owns partitions). Copies received
 * before deduplication are counted and reported.
 *
 * Needs `npm run build`. Shared Redis (unique prefix, keys deleted afterwards) and Postgres (own schema).
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ClientPool } from '../helpers/client.js';
import {
  connectRecorded,
  deletePrefix,
  deliveryProblems,
  partitionsHeld,
  range,
  ReceivedLog,
  uniqueApplicationName,
  withApplicationName,
} from '../helpers/outbox.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

/** The process state letter from /proc (`T`: stopped by a signal). */
const processState = (pid: number): string =>
  /^\d+ \(.*\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? '?';

/** Resolves once `value()` has not changed for `ms` (a condition, not a fixed sleep). */
async function holdsStill(value: () => number, ms: number): Promise<void> {
  let last = value();
  let since = Date.now();
  await waitFor(
    () => {
      const now = value();
      if (now !== last) [last, since] = [now, Date.now()];
      return Date.now() - since >= ms;
    },
    { timeoutMs: 5_000, message: 'the count held still' },
  );
}

const USERS = 24;
const UPDATES = 15;
const STOP_MS = 5_000;

describe('outbox chaos: end to end through the example app', () => {
  const processes = new InstancePool();
  const clients = new ClientPool();
  let stopped: InstanceProcess | undefined;
  let schema: TestSchema | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    stopped?.kill('SIGCONT');
    await clients.stopAll();
    await processes.stopAll();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
    stopped = schema = prefix = undefined;
  });

  it(
    'delivers every order update in order per user while a hub is SIGSTOPped for 5 s',
    { timeout: 55_000 },
    async () => {
      schema = await createTestSchema('e2e');
      prefix = uniquePrefix('outbox-e2e');
      const s = schema;
      const p = prefix;
      const [hubs, workerNames] = await Promise.all([
        Promise.all(
          range(0, 2).map((i) =>
            processes.start({
              redisUrl: REDIS_URL,
              channelPrefix: p,
              backplane: 'streams',
              databaseUrl: s.databaseUrl,
              instanceId: `${p}-hub-${i}`,
              args: ['--example-app'],
            }),
          ),
        ),
        Promise.all(
          range(1, 2).map(async (i) => {
            const name = uniqueApplicationName(`e2e-w${i}`);
            await processes.startWorker({
              redisUrl: REDIS_URL,
              channelPrefix: p,
              databaseUrl: withApplicationName(s.databaseUrl, name),
              instanceId: name,
            });
            return name;
          }),
        ),
      ]);
      const users = range(1, USERS).map((i) => `buyer${i}`);
      const log = new ReceivedLog();
      await Promise.all(
        users.map((user, i) =>
          connectRecorded(clients, hubs[i % 3]!.url(), user, log, 'orderStatus', {
            reconnectDelays: [0, 100, 500, 1_000],
          }),
        ),
      );
      const victim = hubs[0]!;
      // note: POSTs go to the hubs that are never paused. A POST to the victim could race its SIGSTOP, and
      // after SIGCONT its overdue keep-alive timers close idle sockets the client is reusing at that moment
      // (`TypeError: fetch failed`). What is asserted is delivery to the victim's users, not its API.
      const live = () => hubs.filter((h) => h !== victim);

      const expected = new Map<string, string[]>(users.map((u) => [u, []]));
      let posted = 0;
      let postedWhileStopped = 0;
      let turn = 0;
      const started = Date.now();
      const post = async (user: string, update: number): Promise<void> => {
        const targets = live();
        const hub = targets[turn++ % targets.length]!;
        const response = await fetch(hub.url(`/api/orders/order-${user}/status`), {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${await signToken(user)}` },
          body: JSON.stringify({ userId: user, status: `s${update}` }),
        });
        const body = (await response.json()) as { outboxId?: string; error?: string };
        if (response.status !== 200 || !body.outboxId) {
          throw new Error(`POST for ${user} #${update} answered ${response.status} ${JSON.stringify(body)}`);
        }
        expected.get(user)!.push(`outbox:${body.outboxId}`);
        posted++;
        if (stopped) postedWhileStopped++;
      };
      // note: each user's updates are sequential (so commit order is update order); users run side by side,
      // paced to about 40 POSTs per second so that the updates span the stop.
      const producing = Promise.all(
        users.map(async (user, i) => {
          for (const update of range(1, UPDATES)) {
            const due = started + ((update - 1) * USERS + i) * 25;
            const wait = due - Date.now();
            // a deliberate pace, not a synchronization
            if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
            await post(user, update);
          }
        }),
      );
      // note: a failed assertion below must not leave the producers' rejection unhandled.
      producing.catch(() => undefined);
      // the fault: once a fifth of the updates are posted, hub 0 is frozen for 5 s (a deliberate duration)
      await waitFor(() => posted >= (USERS * UPDATES) / 5, { timeoutMs: 15_000, message: 'a fifth posted' });
      stopped = victim;
      victim.kill('SIGSTOP');
      const victimUsers = users.filter((_, i) => i % 3 === 0);
      const receivedByVictimUsers = () => victimUsers.reduce((n, u) => n + log.distinct(u).length, 0);
      // note: what the victim wrote just before it froze is still on its way through the sockets (more of
      // it on a loaded machine): the snapshot waits until the process is stopped and that count holds.
      await waitFor(() => processState(victim.pid) === 'T', { timeoutMs: 2_000, message: 'victim stopped' });
      await holdsStill(receivedByVictimUsers, 300);
      const stoppedAt = { posted, received: log.distinctCount, byVictimUsers: receivedByVictimUsers() };
      await new Promise((resolve) => setTimeout(resolve, STOP_MS));
      const receivedDuringStop = log.distinctCount - stoppedAt.received;
      // the frozen hub's users got nothing meanwhile (the others did)
      expect(receivedByVictimUsers()).toBe(stoppedAt.byVictimUsers);
      victim.kill('SIGCONT');
      stopped = undefined;
      await producing;

      const total = USERS * UPDATES;
      try {
        await waitFor(() => log.distinctCount === total, { timeoutMs: 20_000, intervalMs: 50 });
      } catch {
        throw new Error(
          `not every update arrived (${log.distinctCount} of ${total}):\n` +
            deliveryProblems(log, expected).slice(0, 10).join('\n'),
        );
      }
      const held = await partitionsHeld(s.pool, workerNames);
      console.info(
        `e2e: ${total} order updates via 3 hubs (hub 0 SIGSTOPped ${STOP_MS} ms after ${stoppedAt.posted} ` +
          `posted; ${postedWhileStopped} posted and ${receivedDuringStop} received meanwhile); ${log.received} ` +
          `copies received, ${log.duplicates} duplicate(s) before dedup; partitions held ` +
          `${workerNames.map((n) => held.get(n)?.length).join('/')}`,
      );
      expect(deliveryProblems(log, expected)).toEqual([]);
      for (const user of users) {
        expect(log.distinct(user).map((r) => (r.payload as { status: string }).status)).toEqual(
          range(1, UPDATES).map((u) => `s${u}`),
        );
        expect(log.distinct(user).map((r) => r.offset)).toEqual(range(1, UPDATES));
      }
      expect(postedWhileStopped).toBeGreaterThan(0);
      for (const name of workerNames) expect(held.get(name)?.length ?? 0).toBeGreaterThan(0);
      // every hub stayed up, and the frozen one caught up
      for (const hub of hubs) expect(hub.hasExited).toBe(false);
    },
  );
});
