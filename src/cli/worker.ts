import type { Server } from 'node:http';
import pg from 'pg';
import { closeServer, listenMetrics } from '../metrics/metrics-endpoint.js';
import { workerMetrics } from '../metrics/worker-metrics.js';
import type { Logger } from 'pino';
import { migrate } from '../outbox/migrate.js';
import { postgresUnavailable } from '../unavailable.js';
import { OutboxWorker } from '../worker/outbox-worker.js';
import { targetFromUrl } from '../redis/connection.js';
import { onShutdown } from './serve.js';

export interface WorkerCliOptions {
  redisUrl: string;
  /** `--redis-cluster`: `redisUrl` lists Cluster seed nodes. */
  redisCluster: boolean;
  databaseUrl: string;
  channelPrefix: string;
  hub: string;
  instanceId?: string;
  migrate: boolean;
  metricsPort?: number;
}

/** `relayhub worker`: relays until SIGTERM, then finishes the batch in hand and exits. */
export async function runWorker(options: WorkerCliOptions, logger: Logger): Promise<void> {
  const worker = new OutboxWorker({
    databaseUrl: options.databaseUrl,
    redis: targetFromUrl(options.redisUrl, options.redisCluster),
    channelPrefix: options.channelPrefix,
    hub: options.hub,
    migrate: options.migrate,
    logger,
    ...(options.instanceId ? { workerId: options.instanceId } : {}),
  });
  await worker.start();
  process.stdout.write(`relayhub worker ${worker.workerId} started (hub ${options.hub})\n`);
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
