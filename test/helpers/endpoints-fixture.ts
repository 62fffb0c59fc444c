/**
 * What a test of the outbox worker over private redis-servers sets up and must dispose of after each test:
 * the servers, other things to close (workers, clients; closed last first) and a Postgres schema of its own.
 */
import { afterEach } from 'vitest';
import { createTestSchema, type TestSchema } from './postgres.js';
import { type RedisServer, startRedisServer } from './redis-server.js';

export interface EndpointsFixture {
  /** Starts private redis-servers, disposed of after the test. */
  redisServers(count: number): Promise<RedisServer[]>;
  /** Closed after the test, the last added first, before the servers go. */
  closeAfter(...close: (() => Promise<unknown> | void)[]): void;
  /** A schema of its own (migrated), dropped after the test. */
  schema(label: string): Promise<TestSchema>;
}

/** Call inside a `describe` block: registers the clean-up with `afterEach`. */
export function endpointsFixture(): EndpointsFixture {
  const servers: RedisServer[] = [];
  const closers: (() => Promise<unknown> | void)[] = [];
  let schema: TestSchema | undefined;
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await Promise.allSettled(servers.splice(0).map((s) => s.dispose()));
    await schema?.drop();
    schema = undefined;
  });
  return {
    async redisServers(count) {
      const started: RedisServer[] = [];
      for (let i = 0; i < count; i++) started.push(await startRedisServer());
      servers.push(...started);
      return started;
    },
    closeAfter(...close) {
      closers.push(...close);
    },
    async schema(label) {
      schema = await createTestSchema(label);
      return schema;
    },
  };
}
