import pg from 'pg';
import type { Logger } from 'pino';
import type { Backplane } from '../backplane/backplane.js';
import { MemoryBackplane } from '../backplane/memory/memory-backplane.js';
import { PubSubBackplane } from '../backplane/pubsub/pubsub-backplane.js';
import { StreamsBackplane } from '../backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH, demoHub } from '../example/demo-hub.js';
import { ordersApi } from '../example/orders-api.js';
import { RelayhubError } from '../errors.js';
import { anonymous, jwtAuthenticator } from '../hub/auth.js';
import { HubServer } from '../hub/hub-server.js';
import type { ProtocolName } from '../protocol/hub-protocol.js';
import type { TransportKind } from '../transport/transport.js';
import { targetFromUrl } from '../redis/connection.js';

export interface ServeOptions {
  port: number;
  host: string;
  backplane: 'memory' | 'pubsub' | 'streams';
  redisUrl: string;
  /** `--redis-cluster`: `redisUrl` lists Cluster seed nodes. */
  redisCluster: boolean;
  channelPrefix: string;
  instanceId?: string;
  jwtSecret?: string;
  databaseUrl: string;
  /** Mount the example orders API (`POST /api/orders/:id/status`); needs `streams` and a JWT secret. */
  exampleApp?: boolean;
  /** `maxConnectionsPerAddress` of the server (0: no cap). */
  maxConnectionsPerAddress?: number;
  /** @default every transport (see `HubOptions.transports`) */
  transports?: TransportKind[];
  /** @default every protocol (see `HubOptions.protocols`) */
  protocols?: ProtocolName[];
}

function createBackplane(options: ServeOptions, logger: Logger): Backplane {
  if (options.backplane === 'memory') return new MemoryBackplane();
  const redis = {
    redis: targetFromUrl(options.redisUrl, options.redisCluster),
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
  const pool = options.exampleApp
    ? new pg.Pool({ connectionString: options.databaseUrl, max: 4 })
    : undefined;
  pool?.on('error', (error) => logger.warn({ err: error }, 'postgres pool error'));
  const server = new HubServer({
    authenticate,
    backplane: createBackplane(options, logger),
    logger,
    ...(options.maxConnectionsPerAddress === undefined
      ? {}
      : { maxConnectionsPerAddress: options.maxConnectionsPerAddress }),
    ...(pool ? { fallback: ordersApi(pool, { authenticate }) } : {}),
    ...(options.transports ? { transports: options.transports } : {}),
    ...(options.protocols ? { protocols: options.protocols } : {}),
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
  logger.info(
    { port: address.port, hub: DEMO_HUB_PATH, backplane: options.backplane, exampleApp: !!pool },
    'relayhub listening',
  );
  // note: scripts and tests read this line to learn the port when they pass --port 0.
  process.stdout.write(`relayhub listening on port ${address.port}\n`);
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
