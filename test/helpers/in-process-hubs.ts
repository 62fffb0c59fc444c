/**
 * In-process hub servers for one test, with the JWT authenticator of the test clients: `start` them, read
 * Redis through `inspect()`, and `close()` in afterEach stops the clients, the servers, the inspecting
 * connection and deletes the test's keys (its unique prefix only).
 */
import { Redis } from 'ioredis';
import type { Backplane } from '../../src/backplane/backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { ClientPool } from './client.js';
import { deletePrefix, REDIS_URL } from './redis.js';
import { startServer, TEST_JWT_SECRET, type TestServer } from './server.js';

export interface InProcessHubs {
  readonly clients: ClientPool;
  /** Starts a hub server on `backplane`; `prefix` is the test's key prefix, deleted by close(). */
  start(backplane: Backplane, prefix: string): Promise<TestServer>;
  /** A connection to the shared Redis, for assertions. */
  inspect(): Redis;
  close(): Promise<void>;
}

export function inProcessHubs(): InProcessHubs {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  const prefixes = new Set<string>();
  let redis: Redis | undefined;
  return {
    clients,
    async start(backplane, prefix) {
      prefixes.add(prefix);
      const server = await startServer({
        backplane,
        authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      });
      servers.push(server);
      return server;
    },
    inspect() {
      redis ??= new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
      return redis;
    },
    async close() {
      await clients.stopAll();
      await Promise.allSettled(servers.splice(0).map((s) => s.close()));
      redis?.disconnect();
      redis = undefined;
      await Promise.allSettled([...prefixes].map((p) => deletePrefix(REDIS_URL, p)));
      prefixes.clear();
    },
  };
}
