import { SignJWT } from 'jose';
import { pino } from 'pino';
import { DEMO_HUB_PATH, demoHub } from '../../src/example/demo-hub.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { HubServer, type HubServerOptions } from '../../src/hub/hub-server.js';

export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256';

export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export interface TestServer {
  server: HubServer;
  /** `http://127.0.0.1:<port>` */
  baseUrl: string;
  port: number;
  /** Absolute URL of a hub path on this server. */
  url(path?: string): string;
  close(): Promise<void>;
}

/**
 * Starts a hub server on a free port with the given hubs (the demo hub at /hubs/demo by default) and a
 * silent logger. Close it in afterEach.
 */
export async function startServer(
  options: HubServerOptions = {},
  hubs: Record<string, HubDefinition> = { [DEMO_HUB_PATH]: demoHub },
): Promise<TestServer> {
  const server = new HubServer({ logger: silentLogger, ...options });
  for (const [path, definition] of Object.entries(hubs)) server.mapHub(path, definition);
  const { port } = await server.listen(0, '127.0.0.1');
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    server,
    baseUrl,
    port,
    url: (path = DEMO_HUB_PATH) => baseUrl + path,
    close: () => server.close(),
  };
}

/** An HS256 JWT for `sub`, signed with {@link TEST_JWT_SECRET} unless another secret is given. */
export function signToken(
  sub: string,
  secret = TEST_JWT_SECRET,
  claims: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(secret));
}
