import { type Job, Queue, Worker } from 'bullmq';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { ReliableKeys } from '../redis/keys.js';
import { sweepDeadInstances } from '../backplane/streams/dead-instances.js';
import {
  isClusterTarget,
  openClient,
  type RedisClient,
  type RedisTarget,
  targetOf,
} from '../redis/connection.js';

/** A message the outbox gave up on: still unacked when its TTL passed. */
export interface OutboxDeadLetter {
  outboxId: string;
  userId: string;
  target: string;
  args: unknown[];
  messageId: string;
  reason: string;
}

/** The app's dead-letter handler (e.g. send an email instead); throwing makes BullMQ retry with backoff. */
export type DeadLetterHandler = (letter: OutboxDeadLetter) => void | Promise<void>;

export interface MaintenanceOptions {
  /**
   * How often rows still unacked at their TTL are dead-lettered (and rows an older worker marked acked,
   * `acked_at`, deleted; the ack sync deletes acked rows itself). @default 10_000
   */
  purgeIntervalMs: number;
  /** How often dead instances' routing and stale workers are swept. @default 15_000 */
  sweepIntervalMs: number;
  /** Attempts of the dead-letter handler per letter. @default 5 */
  deadLetterAttempts: number;
  /** First retry delay of the dead-letter handler (doubling). @default 1_000 */
  deadLetterBackoffMs: number;
}

export const DEFAULT_MAINTENANCE_OPTIONS: Readonly<MaintenanceOptions> = Object.freeze({
  purgeIntervalMs: 10_000,
  sweepIntervalMs: 15_000,
  deadLetterAttempts: 5,
  deadLetterBackoffMs: 1_000,
});

interface MaintenanceDeps extends Partial<MaintenanceOptions> {
  /** Where the hubs' Redis is (BullMQ gets connections of its own there); else `redisUrl`. */
  target?: RedisTarget;
  redisUrl?: string;
  /** The deployment's channel prefix: only its rows are purged and dead-lettered. */
  prefix: string;
  /** The hubs whose rows this worker serves. */
  hubs: readonly string[];
  pool: pg.Pool;
  /** Each hub lane on each endpoint, with a connection there (for the dead-instance sweep). */
  lanes: readonly { redis: RedisClient; keys: ReliableKeys }[];
  log: Logger;
  onDeadLetter?: DeadLetterHandler;
}

const PURGE_BATCH = 5_000;
/**
 * Batches of acked rows one purge deletes at most (it goes on while batches come back full): 100k rows
 * per purge interval, far above what the relay acks, so that the table does not grow under load.
 */
const PURGE_MAX_BATCHES = 20;

/**
 * The worker's scheduled maintenance on BullMQ (never the hot relay path): `purge` deletes rows marked acked and
 * turns rows still unacked at their TTL into dead-letter jobs; `sweep` removes the routing of dead hub
 * instances and forgets workers gone for an hour. Jobs are deduplicated by BullMQ's job schedulers, so
 * several workers share one schedule.
 */
export class Maintenance {
  readonly #deps: MaintenanceDeps;
  readonly #options: MaintenanceOptions;
  readonly #connection: RedisClient;
  readonly #target: RedisTarget;
  #queue: Queue | undefined;
  #deadLetters: Queue | undefined;
  #workers: Worker[] = [];
  #closing: Promise<void> | undefined;

  constructor(deps: MaintenanceDeps) {
    this.#deps = deps;
    this.#options = {
      purgeIntervalMs: deps.purgeIntervalMs ?? DEFAULT_MAINTENANCE_OPTIONS.purgeIntervalMs,
      sweepIntervalMs: deps.sweepIntervalMs ?? DEFAULT_MAINTENANCE_OPTIONS.sweepIntervalMs,
      deadLetterAttempts: deps.deadLetterAttempts ?? DEFAULT_MAINTENANCE_OPTIONS.deadLetterAttempts,
      deadLetterBackoffMs: deps.deadLetterBackoffMs ?? DEFAULT_MAINTENANCE_OPTIONS.deadLetterBackoffMs,
    };
    // note: BullMQ wants retries without limit (and an offline queue) on its connections; it is off the
    // hot path. On a Cluster it duplicates this one for its blocking reads.
    this.#target = targetOf({
      ...(deps.target ? { redis: deps.target } : {}),
      ...(deps.redisUrl ? { redisUrl: deps.redisUrl } : {}),
    });
    this.#connection = openClient({ redis: this.#target }, 'relayhub:bullmq', { queueWhileOffline: true });
    this.#connection.on('error', (error: Error) => deps.log.debug({ err: error }, 'bullmq redis error'));
  }

  async start(): Promise<void> {
    // note: on a Cluster every key of a BullMQ queue must share a slot: its prefix is one {hashtag}.
    const prefix = isClusterTarget(this.#target)
      ? `{${this.#deps.prefix}:bull}`
      : `${this.#deps.prefix}:bull`;
    const connection = this.#connection;
    this.#queue = new Queue('relayhub-maintenance', { connection, prefix });
    this.#deadLetters = new Queue('relayhub-dead-letters', {
      connection,
      prefix,
      defaultJobOptions: {
        attempts: this.#options.deadLetterAttempts,
        backoff: { type: 'exponential', delay: this.#options.deadLetterBackoffMs },
        removeOnComplete: 1_000,
        removeOnFail: 10_000,
      },
    });
    await this.#queue.upsertJobScheduler(
      'purge',
      { every: this.#options.purgeIntervalMs },
      { name: 'purge' },
    );
    await this.#queue.upsertJobScheduler(
      'sweep',
      { every: this.#options.sweepIntervalMs },
      { name: 'sweep' },
    );
    const log = this.#deps.log;
    this.#workers = [
      new Worker('relayhub-maintenance', (job) => this.#run(job), { connection, prefix, concurrency: 1 }),
      new Worker(
        'relayhub-dead-letters',
        async (job: Job<OutboxDeadLetter>) => {
          if (this.#deps.onDeadLetter) await this.#deps.onDeadLetter(job.data);
          else log.warn({ letter: job.data }, 'message dead-lettered (no onDeadLetter handler configured)');
        },
        { connection, prefix, concurrency: 4 },
      ),
    ];
    for (const worker of this.#workers) {
      worker.on('failed', (job, error) => log.warn({ err: error, job: job?.name }, 'maintenance job failed'));
      worker.on('error', (error) => log.debug({ err: error }, 'maintenance worker error'));
    }
  }

  async #run(job: Job): Promise<unknown> {
    return job.name === 'purge' ? this.purge() : this.sweep();
  }

  /**
   * Deletes rows marked acked (`acked_at`: written by workers before the ack sync deleted acked rows itself,
   * during a rolling upgrade); dead-letters and deletes rows still unacked at their TTL (this deployment's
   * hubs only).
   */
  async purge(): Promise<{ purged: number; deadLettered: number }> {
    const pool = this.#deps.pool;
    const scope = [this.#deps.prefix, this.#deps.hubs];
    let purged = 0;
    for (let batch = 0; batch < PURGE_MAX_BATCHES; batch++) {
      const { rowCount } = await pool.query(
        `DELETE FROM relayhub_outbox WHERE id IN (
           SELECT id FROM relayhub_outbox WHERE acked_at IS NOT NULL AND channel_prefix = $1 AND hub = ANY($2)
           LIMIT ${PURGE_BATCH})`,
        scope,
      );
      purged += rowCount ?? 0;
      if ((rowCount ?? 0) < PURGE_BATCH) break;
    }
    const client = await pool.connect();
    let deadLettered = 0;
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{
        id: string;
        user_id: string;
        target: string;
        args: unknown[];
        message_key: string | null;
        fail_reason: string | null;
      }>(
        `SELECT id, user_id, target, args, message_key, fail_reason FROM relayhub_outbox
         WHERE expires_at < now() AND acked_at IS NULL AND channel_prefix = $1 AND hub = ANY($2)
         ORDER BY id LIMIT ${PURGE_BATCH} FOR UPDATE SKIP LOCKED`,
        scope,
      );
      if (rows.length > 0) {
        await this.#deadLetters?.addBulk(
          rows.map((row) => ({
            name: 'dead-letter',
            data: {
              outboxId: row.id,
              userId: row.user_id,
              target: row.target,
              args: row.args,
              messageId: row.message_key ?? `outbox:${row.id}`,
              reason: row.fail_reason ?? 'not acknowledged before its TTL',
            } satisfies OutboxDeadLetter,
            // note: a job id per row, so that a purge retried after a crash does not add it twice.
            opts: { jobId: `outbox-${row.id}` },
          })),
        );
        await client.query('DELETE FROM relayhub_outbox WHERE id = ANY($1::bigint[])', [
          rows.map((r) => r.id),
        ]);
        deadLettered = rows.length;
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    return { purged, deadLettered };
  }

  /** Removes dead hub instances' delivery streams (of every lane) and this prefix's workers not seen for an hour. */
  async sweep(): Promise<{ deadInstances: string[] }> {
    // note: an endpoint that is down is swept at a later run; the others are swept now.
    const swept = await Promise.allSettled(this.#deps.lanes.map((l) => sweepDeadInstances(l.redis, l.keys)));
    const deadInstances = swept.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
    const [first] = swept;
    if (first?.status === 'rejected' && swept.every((r) => r.status === 'rejected')) throw first.reason;
    await this.#deps.pool.query(
      `DELETE FROM relayhub_workers WHERE channel_prefix = $1 AND seen_at < now() - interval '1 hour'`,
      [this.#deps.prefix],
    );
    return { deadInstances };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const results = await Promise.allSettled([
        ...this.#workers.map((w) => w.close()),
        this.#queue?.close(),
        this.#deadLetters?.close(),
      ]);
      this.#connection.disconnect();
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    })();
    return this.#closing;
  }
}
