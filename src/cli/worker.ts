import type { Server } from 'node:http';
import pg from 'pg';
import { closeServer, listenMetrics } from '../metrics/metrics-endpoint.js';
import { workerMetrics } from '../metrics/worker-metrics.js';
import type { Logger } from 'pino';
import { migrate } from '../outbox/migrate.js';
import { postgresUnavailable } from '../unavailable.js';
import { OutboxWorker } from '../worker/outbox-worker.js';
import { targetFromUrl } from '../redis/connection.js';
import { DEFAULT_OUTBOX_HUB } from '../outbox/enqueue.js';
import { endpointsOf, onShutdown } from './serve.js';

export interface WorkerCliOptions {
  redisUrl: string;
  /** `--redis-cluster`: `redisUrl` lists Cluster seed nodes. */
  redisCluster: boolean;
  databaseUrl: string;
  channelPrefix: string;
  /** `--hub`, repeatable (or `HUBS`). @default ['/hubs/demo'] */
  hub?: string[];
  /** `--redis-endpoint` entries (or `REDIS_ENDPOINTS`): `NAME[:type]=REDIS_URL`, whitespace-separated. */
  redisEndpoint?: string[];
  instanceId?: string;
  migrate: boolean;
  metricsPort?: number;
}

/** `relayhub worker`: relays until SIGTERM, then finishes the batch in hand and exits. */
export async function runWorker(options: WorkerCliOptions, logger: Logger): Promise<void> {
  const hubs = options.hub && options.hub.length > 0 ? options.hub : [DEFAULT_OUTBOX_HUB];
  // note: a bad entry is an ERR_CONFIG naming it (exit 2), before anything connects.
  const endpoints =
    endpointsOf({
      backplane: 'streams',
      redisCluster: options.redisCluster,
      redisEndpoint: options.redisEndpoint,
    }) ?? [];
  const worker = new OutboxWorker({
    databaseUrl: options.databaseUrl,
    redis: targetFromUrl(options.redisUrl, options.redisCluster),
    ...(endpoints.length > 0 ? { endpoints } : {}),
    channelPrefix: options.channelPrefix,
    hubs,
    migrate: options.migrate,
    logger,
    ...(options.instanceId ? { workerId: options.instanceId } : {}),
  });
  await worker.start();
  const where = endpoints.length > 0 ? `, endpoints ${endpoints.map((e) => e.name).join(', ')}` : '';
  process.stdout.write(
    `relayhub worker ${worker.workerId} started (prefix ${options.channelPrefix}, hub ${hubs.join(', ')}${where})\n`,
  );
  let metrics: Server | undefined;
  if (options.metricsPort !== undefined) {
    const served = await listenMetrics(workerMetrics(worker), options.metricsPort);
    metrics = served.server;
    process.stdout.write(`relayhub worker metrics on port ${served.address.port}\n`);
  }
  onShutdown(
    logger,
    async () => {
      if (metrics) await closeServer(metrics);
      await worker.close();
    },
    `relayhub worker ${worker.workerId}`,
  );
}

/** `relayhub migrate`: applies what is missing and prints what it applied. */
export async function runMigrate(options: { databaseUrl: string }, { quiet = false } = {}): Promise<void> {
  const client = new pg.Client({ connectionString: options.databaseUrl });
  try {
    await client.connect();
  } catch (error) {
    throw postgresUnavailable(options.databaseUrl, error);
  }
  try {
    const applied = await migrate(client);
    if (applied.length > 0 || !quiet) {
      process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'up to date\n');
    }
  } finally {
    await client.end();
  }
}
