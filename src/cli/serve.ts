import pg from 'pg';
import type { Logger } from 'pino';
import type { Backplane } from '../backplane/backplane.js';
import { MemoryBackplane } from '../backplane/memory/memory-backplane.js';
import { PubSubBackplane } from '../backplane/pubsub/pubsub-backplane.js';
import { StreamsBackplane } from '../backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH, demoHub } from '../example/demo-hub.js';
import { ordersApi } from '../example/orders-api.js';
import { anonymous, jwtAuthenticator } from '../hub/auth.js';
import { HubServer } from '../hub/hub-server.js';

export interface ServeOptions {
  port: number;
  host: string;
  backplane: 'memory' | 'pubsub' | 'streams';
  redisUrl: string;
  channelPrefix: string;
  instanceId?: string;
  jwtSecret?: string;
  databaseUrl: string;
  /** false with --no-metrics. */
  metrics: boolean;
  metricsPort?: number;
}

function createBackplane(options: ServeOptions, logger: Logger): Backplane {
  if (options.backplane === 'memory') return new MemoryBackplane();
  const redis = {
    redisUrl: options.redisUrl,
    channelPrefix: options.channelPrefix,
    logger,
    ...(options.instanceId ? { instanceId: options.instanceId } : {}),
  };
  return options.backplane === 'pubsub' ? new PubSubBackplane(redis) : new StreamsBackplane(redis);
}

/** `relayhub serve`: the example hub on one instance, until SIGTERM or SIGINT closes it gracefully. */
export async function serve(options: ServeOptions, logger: Logger): Promise<void> {
  if (!options.jwtSecret) {
    logger.warn('JWT_SECRET is not set: connections are anonymous and clients.user() reaches nobody.');
  }
  // note: the orders API enqueues into the outbox, which only the streams backplane's lane delivers.
  const pool =
    options.backplane === 'streams'
      ? new pg.Pool({ connectionString: options.databaseUrl, max: 4 })
      : undefined;
  pool?.on('error', (error) => logger.warn({ err: error }, 'postgres pool error'));
  const server = new HubServer({
    authenticate: options.jwtSecret ? jwtAuthenticator({ secret: options.jwtSecret }) : anonymous,
    backplane: createBackplane(options, logger),
    logger,
    metrics: !options.metrics
      ? false
      : options.metricsPort !== undefined
        ? { port: options.metricsPort, host: options.host }
        : true,
    ...(pool ? { fallback: ordersApi(pool) } : {}),
  });
  server.mapHub(DEMO_HUB_PATH, demoHub);
  let address: { port: number };
  try {
    address = await server.listen(options.port, options.host);
  } catch (error) {
    await server.close().catch(() => undefined);
    await pool?.end();
    throw error;
  }
  logger.info({ port: address.port, hub: DEMO_HUB_PATH, backplane: options.backplane }, 'relayhub listening');
  // note: scripts and tests read this line to learn the port when they pass --port 0.
  process.stdout.write(`relayhub listening on port ${address.port}\n`);
  if (server.metricsAddress) {
    process.stdout.write(`relayhub metrics on port ${server.metricsAddress.port}\n`);
  }
  onShutdown(logger, async () => {
    await server.close();
    await pool?.end();
  });
}

/** Runs `close` on the first SIGTERM/SIGINT and exits 0 when it is done; a second signal exits at once. */
export function onShutdown(logger: Logger, close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
