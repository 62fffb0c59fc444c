/**
 * Memory after a connection that joined many groups disconnects (PUB/SUB on the shared Redis, unique
 * prefix): the registry's indexes, the backplane's routes and the subscriber's channel set must all let go,
 * so that the server's heap returns near its baseline and no subscription is left. The server runs in a
 * child process with `--expose-gc` (test/fixtures/memory-instance.mjs, needs `npm run build`).
 */
import { Redis } from 'ioredis';
import type WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCountingCompletions, record, sendInFrames } from '../helpers/raw-client.js';
import { type Heap, type MemoryInstance, mb, startMemoryInstance } from '../helpers/memory-instance.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';

const GROUPS = 5_000;
/** What may stay on the heap after the disconnect (the JIT, allocator noise); the groups cost far more. */
const MAX_HEAP_LEFT = 3 * 1024 * 1024;

describe('memory after a connection with many groups disconnects', () => {
  const prefix = uniquePrefix('group-mem');
  let instance: MemoryInstance;
  let admin: Redis;

  beforeAll(async () => {
    instance = await startMemoryInstance(['--redis-url', REDIS_URL, '--channel-prefix', prefix]);
    admin = new Redis(REDIS_URL);
  });

  afterAll(() => {
    instance.kill();
    admin.disconnect();
  });

  const channels = async (): Promise<number> => (await admin.pubsub('CHANNELS', `${prefix}:*`)).length;

  /** Connects to /hubs/groups, joins `count` groups, and leaves the socket open. */
  async function joinMany(count: number, tag: string): Promise<WebSocket> {
    const { ws, completions } = await openCountingCompletions(`${instance.base}/hubs/groups`);
    const joins = Array.from({ length: count }, (_, i) =>
      record({ type: 1, invocationId: `j${i}`, target: 'Join', arguments: [`${tag}-${i}`] }),
    );
    sendInFrames(ws, joins, 500);
    await waitFor(() => completions() === count, { timeoutMs: 20_000, message: `${count} joins` });
    return ws;
  }

  it('returns near the baseline heap and leaves no subscription', async () => {
    const idle = await channels();
    // note: a warm-up round (JIT, first subscriptions) before the baseline.
    (await joinMany(200, 'warm')).terminate();
    await waitFor(async () => (await channels()) === idle);
    const baseline: Heap = await instance.heap();

    const ws = await joinMany(GROUPS, 'g');
    const peak = await instance.heap();
    expect(await channels()).toBe(idle + GROUPS + 1);
    ws.terminate();
    await waitFor(async () => (await channels()) === idle, { timeoutMs: 10_000 });
    const after = await waitFor(
      async () => {
        const now = await instance.heap();
        return now.heapUsed - baseline.heapUsed < MAX_HEAP_LEFT ? now : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 250 },
    );
    console.info(
      `groups: ${GROUPS} joined: heap +${mb(peak.heapUsed - baseline.heapUsed)} MB; after the disconnect ` +
        `+${mb((after as Heap).heapUsed - baseline.heapUsed)} MB`,
    );
  });
});
