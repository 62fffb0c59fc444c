import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { connectRedis, openRedis } from '../backplane/pubsub/redis-connection.js';
import { DASHBOARD_PATH } from '../dashboard/dashboard.js';
import { DEMO_HUB_PATH } from '../example/demo-hub.js';
import { redactUrl } from '../redact.js';
import { runMigrate } from './worker.js';

/**
 * The secret `relayhub demo` signs its tokens with; never use it in production. At least 32 bytes, as
 * `jwtAuthenticator` requires for HS256.
 */
export const DEMO_JWT_SECRET = 'relayhub-dev-secret-change-me-never-use-in-production';

/** How long the tokens `relayhub demo` prints stay valid. */
const DEMO_TOKEN_LIFETIME = '12h';
/** The dashboard token of `relayhub demo` (development only). */
export const DEMO_DASHBOARD_TOKEN = 'relayhub-demo-dashboard';

export interface DemoOptions {
  port: number;
  host: string;
  redisUrl: string;
  databaseUrl: string;
  channelPrefix: string;
  jwtSecret?: string;
}

/** What `relayhub demo --help` says it runs. */
export const DEMO_DESCRIPTION = `run the demo: two hub instances (streams backplane) on --port and --port + 1, an outbox worker
(metrics on --port + 2), the demo web page at http://localhost:<port>/ and the dashboard at /relayhub/.
Needs Redis (REDIS_URL) and Postgres (DATABASE_URL); applies the migrations; signs development tokens
with a fixed secret (never use it in production). Ctrl-C stops everything.`;

/** Signals this close together are one Ctrl-C. */
const SAME_SIGNAL_MS = 500;

interface Child {
  name: string;
  process: ChildProcess;
  exited: Promise<number | null>;
}

/**
 * `relayhub demo` (what `npm start` runs): checks that Redis and Postgres are there, applies the
 * migrations, starts two `relayhub serve` processes on the streams backplane (ports `port` and `port + 1`)
 * and one `relayhub worker`, and prints the page, the dashboard, tokens and a curl that updates an order.
 */
export async function runDemo(options: DemoOptions, logger: Logger): Promise<void> {
  const probe = openRedis({ redisUrl: options.redisUrl, connectTimeoutMs: 2_000 }, 'relayhub:demo:probe');
  // note: without a listener ioredis prints "Unhandled error event" with a stack before our one line.
  probe.on('error', () => undefined);
  try {
    await connectRedis(probe, options.redisUrl, 2_000);
  } finally {
    probe.disconnect();
  }
  await runMigrate({ databaseUrl: options.databaseUrl }, { quiet: true });
  const secret = options.jwtSecret ?? DEMO_JWT_SECRET;
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const ports = [options.port, options.port + 1];
  const origins = ports.map((port) => `http://localhost:${port}`);
  const env = {
    ...process.env,
    REDIS_URL: options.redisUrl,
    DATABASE_URL: options.databaseUrl,
    CHANNEL_PREFIX: options.channelPrefix,
    JWT_SECRET: secret,
    LOG_FORMAT: process.env.LOG_FORMAT ?? 'text',
  };
  const start = (name: string, args: string[], extra: Record<string, string>): Child => {
    // note: detached = its own process group, so that Ctrl-C reaches only the demo, which then stops
    // each process once with SIGTERM; the IPC channel stops them if the demo itself dies.
    const child = spawn(process.execPath, [cli, ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      detached: true,
      env: { ...env, ...extra, INSTANCE_ID: name },
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { name, process: child, exited };
  };
  const children: Child[] = [
    ...ports.map((port, i) =>
      start(`demo-hub-${i + 1}`, ['serve', '--demo', origins.join(','), '--dashboard'], {
        PORT: String(port),
        HOST: options.host,
        BACKPLANE: 'streams',
        EXAMPLE_APP: 'true',
        CORS_ORIGINS: origins.join(','),
        DASHBOARD_TOKEN: DEMO_DASHBOARD_TOKEN,
      }),
    ),
    start('demo-worker-1', ['worker', '--metrics-port', String(options.port + 2)], {}),
  ];
  let stopping = false;
  for (const child of children) {
    void child.exited.then((code) => {
      if (!stopping) logger.warn({ code }, `${child.name} exited; the others keep running`);
    });
  }
  const sign = (user: string) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime(DEMO_TOKEN_LIFETIME)
      .sign(new TextEncoder().encode(secret));
  const alice = await sign('alice');
  const lines = [
    '',
    `relayhub demo: two hub instances (streams backplane), an outbox worker; Redis ${redactUrl(options.redisUrl)}, Postgres ${redactUrl(options.databaseUrl)}`,
    '',
    `  demo page:  ${origins[0]}/            (as bob: ${origins[0]}/?user=bob)`,
    `  dashboard:  ${origins[0]}${DASHBOARD_PATH}?token=${DEMO_DASHBOARD_TOKEN}`,
    `  hubs:       ${origins.map((o) => o + DEMO_HUB_PATH).join('  ')}`,
    `  metrics:    ${origins.map((o) => `${o}/metrics`).join('  ')}  http://localhost:${options.port + 2}/metrics (worker)`,
    `  token for alice (valid ${DEMO_TOKEN_LIFETIME}): ${alice}`,
    `  token for bob (valid ${DEMO_TOKEN_LIFETIME}):   ${await sign('bob')}`,
    '',
    "  update alice's order (she sees it live on the page; a token may post only for its own user):",
    `  curl -X POST ${origins[0]}/api/orders/A-1001/status -H 'Authorization: Bearer ${alice}' \\`,
    `       -H 'Content-Type: application/json' -d '{"userId":"alice","status":"shipped"}'`,
    '',
    '  Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  let stoppingAt = 0;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      // note: under `npm start` one Ctrl-C arrives twice (from the terminal, and forwarded by npm) within
      // milliseconds; only a second press is a request to stop at once.
      if (Date.now() - stoppingAt < SAME_SIGNAL_MS) return;
      for (const child of children) child.process.kill('SIGKILL');
      process.exit(1);
    }
    stopping = true;
    stoppingAt = Date.now();
    for (const child of children) child.process.kill('SIGTERM');
    const codes = await Promise.all(children.map((child) => child.exited));
    const clean = codes.every((code) => code === 0 || code === null);
    process.stdout.write(`relayhub demo stopped (${signal})\n`);
    process.exit(clean ? 0 : 1);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
