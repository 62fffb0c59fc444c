import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // note: integration tests spawn servers and clients; two cores do not gain from more workers.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
