import { defineConfig } from 'vitest/config';

/**
 * The chaos files run a second time with the reliable lane's window at 1 (`RELIABLE_WINDOW`, read by every
 * StreamsBackplane of the test process and inherited by the instances it spawns): the same guarantees
 * must hold with one message in flight per user as with the default window. A representative subset, to
 * keep the suite's time bounded (about a minute more); the pause and cluster-failover files run at the
 * default window only (the instance pause is covered at window 1 by the outbox end-to-end file).
 */
const WINDOW_1_FILES = [
  'test/chaos/reliable-kill.test.ts',
  'test/chaos/reliable-redis-blip.test.ts',
  'test/chaos/reliable-offline.test.ts',
  'test/chaos/reliable-retention.test.ts',
  'test/chaos/outbox-worker-kill.test.ts',
  'test/chaos/outbox-redis-restart.test.ts',
  'test/chaos/outbox-stale-acks.test.ts',
  'test/chaos/outbox-e2e.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // note: integration tests spawn servers and clients; two cores do not gain from more workers.
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'window-1', include: WINDOW_1_FILES, env: { RELIABLE_WINDOW: '1' } },
      },
    ],
  },
});
