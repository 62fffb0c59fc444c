import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StallProbe } from '../../src/backplane/pubsub/stall-probe.js';

/** A stand-in for an ioredis connection whose PINGs the test answers (or not). */
function fakeRedis() {
  const pending: { resolve(): void; reject(error: Error): void }[] = [];
  const redis = {
    status: 'ready',
    ping: () => new Promise<void>((resolve, reject) => pending.push({ resolve, reject })),
  };
  return { redis: redis as unknown as Redis, pending, setStatus: (s: string) => (redis.status = s) };
}

describe('StallProbe', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('reports a stall once a PING waits longer than the interval, and recovery once it is answered', async () => {
    const { redis, pending } = fakeRedis();
    const probe = new StallProbe(redis, 1_000);
    expect(probe.stalled).toBe(false);
    await vi.advanceTimersByTimeAsync(1_000); // first PING goes out
    expect(pending).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(900);
    expect(probe.stalled).toBe(false);
    await vi.advanceTimersByTimeAsync(200);
    expect(probe.stalled).toBe(true);
    expect(pending).toHaveLength(1); // note: one PING at a time
    pending[0]?.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(probe.stalled).toBe(false);
    probe.close();
  });

  it('stays stalled after a PING failed (a command timeout) until one succeeds', async () => {
    const { redis, pending } = fakeRedis();
    const probe = new StallProbe(redis, 1_000);
    await vi.advanceTimersByTimeAsync(1_000);
    pending[0]?.reject(new Error('Command timed out'));
    await vi.advanceTimersByTimeAsync(0);
    expect(probe.stalled).toBe(true);
    await vi.advanceTimersByTimeAsync(1_000);
    pending[1]?.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(probe.stalled).toBe(false);
    probe.close();
  });

  it('sends nothing while the connection is not ready (its status says so) and nothing after close', async () => {
    const { redis, pending, setStatus } = fakeRedis();
    const probe = new StallProbe(redis, 1_000);
    setStatus('reconnecting');
    await vi.advanceTimersByTimeAsync(3_000);
    expect(pending).toHaveLength(0);
    setStatus('ready');
    probe.close();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(pending).toHaveLength(0);
  });
});
