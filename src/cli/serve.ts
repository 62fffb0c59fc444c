import { randomBytes } from 'node:crypto';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import pg from 'pg';
import type { Logger } from 'pino';
import { DEMO_HUB_PATH, demoHub } from '../example/demo-hub.js';
import { ordersApi } from '../example/orders-api.js';
import { RelayhubError } from '../errors.js';
import { anonymous, jwtAuthenticator } from '../hub/auth.js';
import { createBackplane } from '../backplane/create-backplane.js';
import { HubServer } from '../hub/hub-server.js';
import type { ProtocolName } from '../protocol/hub-protocol.js';
import type { TransportKind } from '../transport/transport.js';
import { DASHBOARD_PATH, dashboard } from '../dashboard/dashboard.js';
import { demoPage } from '../example/demo-page.js';
import { outboxBacklog } from '../outbox/backlog.js';
import { targetFromUrl } from '../redis/connection.js';
import { connectionTokenSecretFrom } from '../hub/connection-token.js';
import { type EndpointConfig, parseEndpointEntries, parsePublicUrls } from '../redis/endpoints.js';

export interface ServeOptions {
  port: number;
  host: string;
  backplane: 'memory' | 'pubsub' | 'streams';
  redisUrl: string;
  /** `--redis-cluster`: `redisUrl` lists Cluster seed nodes (and so does each endpoint's URL). */
  redisCluster: boolean;
  /** `--redis-endpoint` / `REDIS_ENDPOINTS`: entries `NAME[:primary|:secondary]=REDIS_URL`; replaces redisUrl. */
  redisEndpoint?: string[];
  /** `--public-url` / `PUBLIC_URLS`: entries `NAME=BASE_URL`, the public address of endpoint NAME's instances. */
  publicUrl?: string[];
  /** `--self-url` / `SELF_URL`: this instance's public base URL. */
  selfUrl?: string;
  channelPrefix: string;
  instanceId?: string;
  jwtSecret?: string;
  /** Signs connection tokens, the same on every instance (default: derived from `jwtSecret`, if set). */
  connectionTokenSecret?: string;
  databaseUrl: string;
  /** false with --no-metrics. */
  metrics: boolean;
  metricsPort?: number;
  /** Browser origins allowed to call the hubs (comma-separated on the command line). */
  corsOrigins?: string[];
  /** Serve the live dashboard at /relayhub/. */
  dashboard: boolean;
  dashboardToken?: string;
  /** Set by `relayhub demo` only: the demo page and its token endpoint, with every instance's origin. */
  demo?: string[];
  /** Mount the example orders API (`POST /api/orders/:id/status`); needs `streams` and a JWT secret. */
  exampleApp?: boolean;
  /** `maxConnectionsPerAddress` of the server (0: no cap). */
  maxConnectionsPerAddress?: number;
  /** @default every transport (see `HubOptions.transports`) */
  transports?: TransportKind[];
  /** @default every protocol (see `HubOptions.protocols`) */
  protocols?: ProtocolName[];
}

/** `relayhub serve`: the example hub on one instance, until SIGTERM or SIGINT closes it gracefully. */
export async function serve(options: ServeOptions, logger: Logger): Promise<void> {
  // note: validated (ERR_CONFIG) before anything connects, so that a bad secret fails in one line.
  const authenticate = options.jwtSecret ? jwtAuthenticator({ secret: options.jwtSecret }) : anonymous;
  if (options.exampleApp && options.backplane !== 'streams') {
    // note: the orders API enqueues into the outbox, which only the streams backplane's lane delivers.
    throw new RelayhubError('ERR_CONFIG', 'The example app needs the streams backplane.', {
      remedy: 'Add --backplane streams (BACKPLANE=streams), or drop --example-app.',
    });
  }
  if (options.exampleApp && !options.jwtSecret) {
    throw new RelayhubError('ERR_CONFIG', 'The example orders API authenticates with the hub JWT.', {
      remedy: 'Set JWT_SECRET (or --jwt-secret), or drop --example-app.',
    });
  }
  const endpoints = endpointsOf(options);
  const pool = options.exampleApp
    ? new pg.Pool({ connectionString: options.databaseUrl, max: 4 })
    : undefined;
  pool?.on('error', (error) => logger.warn({ err: error }, 'postgres pool error'));
  const instanceId = options.instanceId ?? `hub-${randomBytes(3).toString('hex')}`;
  const routes: ((req: IncomingMessage, res: ServerResponse) => boolean)[] = [];
  const orders = pool
    ? ordersApi(pool, { authenticate, logger, channelPrefix: options.channelPrefix })
    : undefined;
  const fallback: RequestListener = (req, res) => {
    for (const route of routes) if (route(req, res)) return;
    if (orders) return orders(req, res);
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"Not found."}');
  };
  // note: shared by every instance that shares JWT_SECRET, so that WebSockets need no sticky sessions.
  const connectionTokenSecret =
    options.connectionTokenSecret ??
    (options.jwtSecret ? connectionTokenSecretFrom(options.jwtSecret) : undefined);
  const server = new HubServer({
    authenticate,
    ...(connectionTokenSecret === undefined ? {} : { connectionTokenSecret }),
    backplane:
      options.backplane === 'memory'
        ? 'memory'
        : createBackplane(options.backplane, {
            ...(endpoints
              ? { endpoints, ...(options.selfUrl !== undefined ? { selfUrl: options.selfUrl } : {}) }
              : { redis: targetFromUrl(options.redisUrl, options.redisCluster) }),
            channelPrefix: options.channelPrefix,
            instanceId,
            logger,
          }),
    logger,
    metrics: !options.metrics
      ? false
      : options.metricsPort !== undefined
        ? { port: options.metricsPort, host: options.host }
        : true,
    fallback,
    ...(options.maxConnectionsPerAddress === undefined
      ? {}
      : { maxConnectionsPerAddress: options.maxConnectionsPerAddress }),
    ...(options.transports ? { transports: options.transports } : {}),
    ...(options.protocols ? { protocols: options.protocols } : {}),
    // note: the orders API needs Postgres; /healthz says when it cannot reach it.
    ...(pool ? { healthChecks: { postgres: () => pool.query('SELECT 1') } } : {}),
    ...(options.corsOrigins?.length ? { cors: { origins: options.corsOrigins } } : {}),
  });
  if (options.demo) {
    if (!options.jwtSecret) throw new RelayhubError('ERR_CONFIG', 'The demo page needs JWT_SECRET.');
    routes.push(demoPage({ jwtSecret: options.jwtSecret, instanceId, instances: options.demo }));
  }
  const dashboardToken = options.dashboardToken ?? randomBytes(12).toString('base64url');
  if (options.dashboard) {
    routes.push(
      dashboard({
        token: dashboardToken,
        instanceId,
        stats: () => server.stats(),
        ...(pool ? { outbox: () => outboxBacklog(pool, { channelPrefix: options.channelPrefix }) } : {}),
        peers: (options.demo ?? []).filter((origin) => !origin.endsWith(`:${options.port}`)),
      }),
    );
  }
  server.mapHub(DEMO_HUB_PATH, demoHub);
  let address: { port: number };
  try {
    address = await server.listen(options.port, options.host);
  } catch (error) {
    await server.close().catch(() => undefined);
    await pool?.end();
    throw error;
  }
  // note: said once it runs, so that a failed start prints exactly one line.
  if (!options.jwtSecret) {
    logger.warn('JWT_SECRET is not set: connections are anonymous and clients.user() reaches nobody.');
  }
  if (connectionTokenSecret === undefined && options.backplane !== 'memory') {
    logger.warn(
      'Neither CONNECTION_TOKEN_SECRET nor JWT_SECRET is set: each instance signs connection tokens with its own key, so a WebSocket must reach the instance that answered its negotiate (sticky sessions).',
    );
  }
  // note: scripts and tests read this line to learn the port when they pass --port 0; it is the one
  // record of the event (no log line repeats it).
  process.stdout.write(
    `relayhub listening on port ${address.port} (hub ${DEMO_HUB_PATH}, backplane ${options.backplane}, instance ${instanceId}${endpoints ? `, endpoints ${endpoints.map((e) => `${e.name}:${e.type}`).join(' ')}` : ''}${pool ? ', example app' : ''})\n`,
  );
  if (server.metricsAddress) {
    process.stdout.write(`relayhub metrics on port ${server.metricsAddress.port}\n`);
  }
  if (options.dashboard && !options.demo) {
    process.stdout.write(
      `relayhub dashboard: http://localhost:${address.port}${DASHBOARD_PATH}?token=${dashboardToken}\n`,
    );
  }
  onShutdown(
    logger,
    async () => {
      await server.close();
      await pool?.end();
    },
    `relayhub ${instanceId}`,
  );
}

/**
 * The endpoints of `--redis-endpoint` / `REDIS_ENDPOINTS` with their `--public-url` / `PUBLIC_URLS`;
 * undefined when none is given (one Redis at `--redis-url`). A bad entry throws `ERR_CONFIG` naming it.
 */
export function endpointsOf(
  options: Pick<ServeOptions, 'backplane' | 'redisCluster' | 'redisEndpoint' | 'publicUrl' | 'selfUrl'>,
): EndpointConfig[] | undefined {
  const entries = parseEndpointEntries(options.redisEndpoint ?? []);
  const urls = parsePublicUrls(options.publicUrl ?? []);
  if (entries.length === 0) {
    if (urls.size > 0 || options.selfUrl !== undefined) {
      throw new RelayhubError('ERR_CONFIG', 'PUBLIC_URLS and SELF_URL apply to Redis endpoints.', {
        remedy: 'Set REDIS_ENDPOINTS (or --redis-endpoint), or drop them.',
      });
    }
    return undefined;
  }
  if (options.backplane === 'memory') {
    throw new RelayhubError('ERR_CONFIG', "Redis endpoints need the 'pubsub' or 'streams' backplane.", {
      remedy: 'Add --backplane pubsub (or streams), or drop REDIS_ENDPOINTS.',
    });
  }
  for (const [name, url] of urls) {
    if (!entries.some((entry) => entry.name === name)) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `Bad public URL entry '${name}=${url}': no endpoint is named '${name}'.`,
        {
          remedy: `Name one of the endpoints: ${entries.map((entry) => entry.name).join(', ')}.`,
        },
      );
    }
  }
  return entries.map((entry) => {
    const publicUrl = urls.get(entry.name);
    return {
      name: entry.name,
      type: entry.type,
      redis: targetFromUrl(entry.url, options.redisCluster),
      ...(publicUrl !== undefined ? { publicUrl } : {}),
    };
  });
}

/**
 * Runs `close` on the first SIGTERM/SIGINT (or when the `relayhub demo` that started this process is
 * gone), prints `<name> stopped` and exits 0; a second signal exits at once with 1.
 */
export function onShutdown(logger: Logger, close: () => Promise<void>, name = 'relayhub'): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.debug({ signal }, 'shutting down');
    close().then(
      () => {
        process.stdout.write(`${name} stopped (${signal})\n`);
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // note: the demo starts its processes with an IPC channel; it closes when the demo dies, even by SIGKILL.
  if (process.send) process.once('disconnect', () => stop('the demo exited'));
}
