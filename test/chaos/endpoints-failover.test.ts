/**
 * Failover between two Redis endpoints, with `relayhub serve` processes configured the CLI way
 * (REDIS_ENDPOINTS, PUBLIC_URLS): two private redis-servers `a` and `b`; hub A has primary a and
 * secondary b, hub B primary b and secondary a. Alice is on A, Bob on B, and both keep sending each
 * other numbered user messages (every 20 ms) while Redis a is stopped and started again.
 *
 * - stopping a: A notices within the documented bound (250 ms after the connection drops; the test allows
 *   2.5 s), moves its listening to b, counts the gap, and messages flow again between Alice and Bob;
 * - starting a again: A returns to it (listening a, not b), messages keep flowing;
 * - in both transitions no message is received twice;
 * - while a is down, a new official client negotiating at A is redirected to B (PUBLIC_URLS) and
 *   receives messages there.
 *
 * Never touches the shared Redis. Needs `npm run build`.
 */
import type { HubConnection } from '@microsoft/signalr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { uniquePrefix } from '../helpers/redis.js';
import { freePort, type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

interface EndpointHealth {
  name: string;
  online: boolean;
  listening: boolean;
  outages: number;
  possibleGaps: number;
}

interface Health {
  status: string;
  connections: number;
  backplane: { possibleGaps: number; endpoints: EndpointHealth[] };
}

const healthOf = async (instance: InstanceProcess): Promise<Health> =>
  (await (await fetch(instance.url('/healthz'))).json()) as Health;

const endpoint = (health: Health, name: string) =>
  health.backplane.endpoints.find((e) => e.name === name) as EndpointHealth;

/** The bound the test allows for noticing a stopped Redis (documented: 250 ms after the drop). */
const DETECTION_BOUND_MS = 2_500;

describe('endpoints failover: hub A (primary a, secondary b) and hub B (primary b, secondary a)', () => {
  const channelPrefix = uniquePrefix('endpoints-failover');
  const instances = new InstancePool();
  const clients = new ClientPool();
  let a: RedisServer;
  let b: RedisServer;
  let hubA: InstanceProcess;
  let hubB: InstanceProcess;
  let alice: HubConnection;
  let bob: HubConnection;
  let aliceGot: unknown[][];
  let bobGot: unknown[][];

  beforeAll(async () => {
    [a, b] = await Promise.all([startRedisServer(), startRedisServer()]);
    // note: PUBLIC_URLS names both ports before either instance listens: free ports are picked first,
    // and picked again when another process took one meanwhile.
    for (let attempt = 1; ; attempt++) {
      const [portA, portB] = [await freePort(), await freePort()];
      const publicUrls = `a=http://127.0.0.1:${portA} b=http://127.0.0.1:${portB}`;
      const start = (port: number, endpoints: string) =>
        instances.start({
          redisUrl: a.url,
          channelPrefix,
          args: ['--port', String(port)],
          env: { REDIS_ENDPOINTS: endpoints, PUBLIC_URLS: publicUrls },
        });
      try {
        [hubA, hubB] = await Promise.all([
          start(portA, `a=${a.url} b:secondary=${b.url}`),
          start(portB, `a:secondary=${a.url}\nb=${b.url}`),
        ]);
        break;
      } catch (error) {
        await instances.stopAll();
        if (attempt === 3 || !String(error).includes('EADDRINUSE')) throw error;
      }
    }
    expect(hubA.output()).toContain('endpoints a:primary b:secondary');
    alice = await clients.connect(hubA.url(), { token: await signToken('alice') });
    bob = await clients.connect(hubB.url(), { token: await signToken('bob') });
    aliceGot = record(alice, 'message');
    bobGot = record(bob, 'message');
  }, 30_000);

  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
    await Promise.all([a?.dispose(), b?.dispose()]);
  });

  it('stopping a: traffic flows again over b within the bound, gap counted; starting a: A returns to it; nothing twice', async () => {
    const sentAt = new Map<string, number>();
    let seq = 0;
    let pumping = true;
    const pump = (async () => {
      while (pumping) {
        const n = ++seq;
        for (const [from, to] of [
          [bob, 'alice'],
          [alice, 'bob'],
        ] as const) {
          const text = `${to}-${n}`;
          sentAt.set(text, Date.now());
          // note: a send that no endpoint took fails; it is simply not expected
          from.invoke('SendToUser', to, text).catch(() => sentAt.delete(text));
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const received = (got: unknown[][], text: string) => got.some((args) => args[1] === text);
    /** The first message to `to`, sent at or after `since`, that arrived: the flow works from then on. */
    const flowingSince = (got: unknown[][], to: string, since: number) =>
      got.some((args) => {
        const text = String(args[1]);
        return text.startsWith(`${to}-`) && (sentAt.get(text) ?? 0) >= since;
      });
    try {
      await waitFor(() => flowingSince(aliceGot, 'alice', 0) && flowingSince(bobGot, 'bob', 0), {
        message: 'messages to flow before the outage',
      });
      const before = await healthOf(hubA);
      expect(endpoint(before, 'a')).toMatchObject({ online: true, listening: true, outages: 0 });

      const stoppedAt = Date.now();
      await a.stop();
      await waitFor(
        async () => {
          const health = await healthOf(hubA);
          return !endpoint(health, 'a').online && endpoint(health, 'b').listening;
        },
        { timeoutMs: DETECTION_BOUND_MS, intervalMs: 20, message: 'A to notice a is down and listen on b' },
      );
      const noticedMs = Date.now() - stoppedAt;
      await waitFor(
        () => flowingSince(aliceGot, 'alice', stoppedAt) && flowingSince(bobGot, 'bob', stoppedAt),
        { timeoutMs: DETECTION_BOUND_MS, message: 'messages to flow again over b' },
      );
      const resumedMs = Date.now() - stoppedAt;
      const down = await healthOf(hubA);
      expect(endpoint(down, 'a')).toMatchObject({ online: false, listening: false, outages: 1 });
      expect(endpoint(down, 'a').possibleGaps).toBeGreaterThanOrEqual(1);
      expect(down.backplane.possibleGaps).toBeGreaterThanOrEqual(1);
      // A serves through a secondary only: still up, but degraded
      expect(down.status).toBe('degraded');
      expect(endpoint(await healthOf(hubB), 'b')).toMatchObject({ online: true, listening: true });

      const restartedAt = Date.now();
      await a.start();
      await waitFor(
        async () => {
          const health = await healthOf(hubA);
          return endpoint(health, 'a').listening && !endpoint(health, 'b').listening;
        },
        { timeoutMs: 10_000, intervalMs: 20, message: 'A to return to a' },
      );
      const returnedAt = Date.now();
      await waitFor(
        () => flowingSince(aliceGot, 'alice', returnedAt) && flowingSince(bobGot, 'bob', returnedAt),
        { message: 'messages to flow after A returned to a' },
      );
      // each change logged once by A: a offline, a online again
      const logged = (message: string) =>
        hubA
          .output()
          .split('\n')
          .filter((line) => line.includes(`"msg":"${message}"`) && line.includes('"endpoint":"a"')).length;
      expect(logged('Redis endpoint offline')).toBe(1);
      expect(logged('Redis endpoint online again')).toBe(1);
      const back = await healthOf(hubA);
      expect(endpoint(back, 'a')).toMatchObject({ online: true, listening: true, outages: 1 });
      expect(back.status).toBe('ok');
      console.info(
        `endpoints failover: noticed in ${noticedMs} ms, flowing again ${resumedMs} ms after the stop, back on a ${returnedAt - restartedAt} ms after the restart`,
      );
    } finally {
      pumping = false;
      await pump;
    }
    // every message sent after A was back on a arrived; none arrived twice, in either direction
    const last = seq;
    await waitFor(() => received(aliceGot, `alice-${last}`) && received(bobGot, `bob-${last}`), {
      message: 'the last messages to arrive',
    });
    for (const [got, to] of [
      [aliceGot, 'alice'],
      [bobGot, 'bob'],
    ] as const) {
      const texts = got.map((args) => String(args[1])).filter((t) => t.startsWith(`${to}-`));
      expect(texts.length, `${to} received a message twice`).toBe(new Set(texts).size);
    }
  }, 40_000);

  it('while a is down, a new client negotiating at A is redirected to B and receives messages', async () => {
    await a.stop();
    try {
      await waitFor(async () => !endpoint(await healthOf(hubA), 'a').online, {
        timeoutMs: DETECTION_BOUND_MS,
        message: 'A to notice a is down',
      });
      const token = await signToken('carol');
      const raw = await fetch(`${hubA.url()}/negotiate?negotiateVersion=1`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
      });
      expect(raw.status).toBe(200);
      expect(await raw.json()).toEqual({ url: hubB.url(), accessToken: token });

      const onB = (await healthOf(hubB)).connections;
      const onA = (await healthOf(hubA)).connections;
      const carol = await clients.connect(hubA.url(), { token });
      const carolGot = record(carol, 'message');
      expect((await healthOf(hubB)).connections).toBe(onB + 1);
      expect((await healthOf(hubA)).connections).toBe(onA);
      // from Alice on A (listening on b now) to Carol on B
      await alice.invoke('SendToUser', 'carol', 'hello carol');
      await waitFor(() => carolGot.some((args) => args[0] === 'alice' && args[1] === 'hello carol'), {
        message: 'Carol, redirected to B, to receive a message from A',
      });
      await carol.stop();
    } finally {
      await a.start();
    }
    await waitFor(async () => endpoint(await healthOf(hubA), 'a').listening, {
      timeoutMs: 10_000,
      message: 'A to return to a',
    });
  }, 30_000);
});
