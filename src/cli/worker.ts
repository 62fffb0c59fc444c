import pg from 'pg';
import type { Logger } from 'pino';
import { migrate } from '../outbox/migrate.js';
import { OutboxWorker, postgresUnavailable } from '../worker/outbox-worker.js';
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
  logger.info({ worker: worker.workerId, hub: options.hub }, 'outbox worker started');
  process.stdout.write(`relayhub worker ${worker.workerId} started\n`);
  onShutdown(logger, () => worker.close());
}

/** `relayhub migrate`: applies what is missing and prints what it applied. */
export async function runMigrate(options: { databaseUrl: string }): Promise<void> {
  const client = new pg.Client({ connectionString: options.databaseUrl });
  try {
    await client.connect();
  } catch (error) {
    throw postgresUnavailable(options.databaseUrl, error);
  }
  try {
    const applied = await migrate(client);
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'up to date\n');
  } finally {
    await client.end();
  }
}
