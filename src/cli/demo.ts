import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { connectRedis, openRedis } from '../backplane/pubsub/redis-connection.js';
import { DEMO_HUB_PATH } from '../example/demo-hub.js';
import { onShutdown } from './serve.js';
import { runMigrate } from './worker.js';

/**
 * The secret `relayhub demo` signs its tokens with; never use it in production. At least 32 bytes, as
 * `jwtAuthenticator` requires for HS256.
 */
export const DEMO_JWT_SECRET = 'relayhub-dev-secret-change-me-never-use-in-production';

/** How long the tokens `relayhub demo` prints stay valid. */
const DEMO_TOKEN_LIFETIME = '12h';

export interface DemoOptions {
  port: number;
  host: string;
  redisUrl: string;
  databaseUrl: string;
  channelPrefix: string;
  jwtSecret?: string;
}

/**
 * `relayhub demo` (what `npm start` runs): checks that Redis and Postgres are there, applies the
 * migrations, starts two `relayhub serve` processes on the streams backplane (ports `port` and `port + 1`)
 * and one `relayhub worker`, and prints tokens to connect with.
 */
export async function runDemo(options: DemoOptions, logger: Logger): Promise<void> {
  const probe = openRedis({ redisUrl: options.redisUrl, connectTimeoutMs: 2_000 }, 'relayhub:demo:probe');
  try {
    await connectRedis(probe, options.redisUrl, 2_000);
  } finally {
    probe.disconnect();
  }
  await runMigrate({ databaseUrl: options.databaseUrl });
  const secret = options.jwtSecret ?? DEMO_JWT_SECRET;
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const ports = [options.port, options.port + 1];
  const env = {
    ...process.env,
    REDIS_URL: options.redisUrl,
    DATABASE_URL: options.databaseUrl,
    CHANNEL_PREFIX: options.channelPrefix,
    JWT_SECRET: secret,
  };
  const children: ChildProcess[] = [
    ...ports.map((port, i) =>
      spawn(process.execPath, [cli, 'serve'], {
        stdio: 'inherit',
        env: {
          ...env,
          PORT: String(port),
          HOST: options.host,
          BACKPLANE: 'streams',
          EXAMPLE_APP: 'true',
          INSTANCE_ID: `demo-hub-${i + 1}`,
        },
      }),
    ),
    spawn(process.execPath, [cli, 'worker'], {
      stdio: 'inherit',
      env: { ...env, INSTANCE_ID: 'demo-worker-1' },
    }),
  ];
  const key = new TextEncoder().encode(secret);
  const lines = ['', 'relayhub demo: two hub instances (streams backplane) and an outbox worker', ''];
  for (const port of ports) lines.push(`  hub: http://localhost:${port}${DEMO_HUB_PATH}`);
  const tokens = new Map<string, string>();
  for (const user of ['alice', 'bob']) {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime(DEMO_TOKEN_LIFETIME)
      .sign(key);
    tokens.set(user, token);
    lines.push(`  token for ${user} (valid ${DEMO_TOKEN_LIFETIME}): ${token}`);
  }
  lines.push(
    '',
    '  new HubConnectionBuilder().withUrl(hubUrl, { accessTokenFactory: () => token }).build()',
    '',
    "  update alice's order 42 (her clients get orderStatus; a token may post only for its own user):",
    `  curl -X POST http://localhost:${ports[0]}/api/orders/42/status \\`,
    `    -H 'Authorization: Bearer ${tokens.get('alice')}' \\`,
    `    -H 'Content-Type: application/json' -d '{"userId":"alice","status":"shipped"}'`,
    '',
  );
  process.stdout.write(`${lines.join('\n')}\n`);
  const exited = children.map((child) => new Promise<void>((resolve) => child.once('exit', () => resolve())));
  for (const child of children) {
    child.once('exit', (code) => {
      if (code !== 0 && code !== null) logger.error({ code }, 'a demo hub instance exited');
    });
  }
  onShutdown(logger, async () => {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(exited);
  });
}
