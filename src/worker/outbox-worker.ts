import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { type Logger, pino } from 'pino';
import type { ReliableSendResult } from '../backplane/backplane.js';
import { DEFAULT_CHANNEL_PREFIX, type ReliableKeys, reliableKeys } from '../redis/keys.js';
import { DEFAULT_REDIS_URL, describe } from '../backplane/pubsub/redis-connection.js';
import {
  type Durability,
  durabilityFor,
  type LaneScripts,
  laneScripts,
  type Retention,
  sendReliable,
} from '../backplane/streams/reliable-producer.js';
import { DEFAULT_RELIABLE_OPTIONS } from '../backplane/streams/streams-lane.js';
import { RelayhubError } from '../errors.js';
import { postgresUnavailable } from '../unavailable.js';
import {
  connectClient,
  openClient,
  type RedisClient,
  type RedisTarget,
  targetOf,
} from '../redis/connection.js';
import { OUTBOX_CHANNEL, USER_ID } from '../outbox/enqueue.js';
import { type OutboxBacklog, outboxBacklog } from '../outbox/backlog.js';
import { migrate } from '../outbox/migrate.js';
import { type DeadLetterHandler, Maintenance, type MaintenanceOptions } from './maintenance.js';
import { PartitionOwner } from './partition-owner.js';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

export interface OutboxWorkerOptions {
  /** @default 'postgres://postgres@127.0.0.1:5432/test' */
  databaseUrl?: string;
  /** @default 'redis://127.0.0.1:6379' */
  redisUrl?: string;
  /**
   * Where Redis is (one node, a Cluster, or an ioredis `Cluster`); takes precedence over `redisUrl`.
   * @default { url: redisUrl }
   */
  redis?: RedisTarget;
  /**
   * Replicas that must confirm (`WAIT`) a relayed row before it counts as relayed, so that a primary
   * failover cannot take it back; a row they do not confirm in time is relayed again (same message id).
   * @default 1 on a Cluster, 0 on one node
   */
  replicas?: number;
  /** @default 1_000 */
  replicaTimeoutMs?: number;
  /** @default 'relayhub' */
  channelPrefix?: string;
  /** The hub whose users the outbox rows are for. @default '/hubs/demo' */
  hub?: string;
  /** @default a random id */
  workerId?: string;
  /** Rows claimed per relay pass. @default 200 */
  batchSize?: number;
  /** Polling interval when no NOTIFY wakes the worker. @default 1_000 */
  pollIntervalMs?: number;
  /** Polling interval for `hotForMs` after a pass that found rows (producers skip NOTIFYs in bursts). @default 20 */
  hotPollIntervalMs?: number;
  /** How long the worker polls at `hotPollIntervalMs` after it last found rows. @default 1_000 */
  hotForMs?: number;
  /** How often acks are read back from Redis and recorded on the rows. @default 1_000 */
  ackSyncIntervalMs?: number;
  /** How often the worker re-announces itself and rebalances partitions. @default 2_000 */
  rebalanceIntervalMs?: number;
  /** A worker not seen for this long no longer counts toward the fair share. @default 10_000 */
  liveWindowMs?: number;
  /** Users relayed in parallel within a pass (each user's rows stay sequential). @default 32 */
  relayConcurrency?: number;
  /** Rows whose encoded arguments are larger are set aside as poison. @default 524_288 */
  maxPayloadBytes?: number;
  /** The lane's retention, as the hubs use it. @default DEFAULT_RELIABLE_OPTIONS' maxLength and maxAgeMs */
  retention?: Partial<Retention>;
  /** Apply the migrations at start. @default false */
  migrate?: boolean;
  /** Run the BullMQ maintenance jobs (purge, sweeps) and the dead-letter queue. @default true */
  maintenance?: boolean | Partial<MaintenanceOptions>;
  /** Called (with retries and backoff, through BullMQ) for each message still unacked at its TTL. */
  onDeadLetter?: DeadLetterHandler;
  /** @default a silent logger */
  logger?: Logger;
}

interface Row {
  id: string;
  user_id: string;
  target: string;
  args: unknown;
  message_key: string | null;
}

/**
 * Relays committed outbox rows into the users' Redis inboxes: per owned partition, in id order, each
 * user's rows one after another; marks them relayed with their lane offset; records acks read back from
 * Redis; notices a Redis that lost its memory and relays every unacked row again. Safe to kill at any
 * point: a row relayed twice carries the same message id, and the lane drops the second copy.
 */
export class OutboxWorker {
  readonly workerId: string;
  readonly #o: Required<
    Omit<
      OutboxWorkerOptions,
      'onDeadLetter' | 'retention' | 'maintenance' | 'workerId' | 'redis' | 'replicas' | 'replicaTimeoutMs'
    >
  >;
  readonly #target: RedisTarget;
  readonly #durability: Durability;
  readonly #retention: Retention;
  readonly #log: Logger;
  readonly #keys: ReliableKeys;
  readonly #redis: RedisClient;
  readonly #scripts: LaneScripts & RedisClient;
  readonly #owner: PartitionOwner;
  readonly #pool: pg.Pool;
  readonly #maintenance: Maintenance | undefined;
  readonly #stop = new AbortController();
  #client: pg.Client | undefined;
  #listener: pg.Client | undefined;
  #epoch: string | undefined;
  #lastRebalance = 0;
  #lastAckSync = 0;
  #lastRowsAt = 0;
  #wake: (() => void) | undefined;
  #woken = false;
  #running: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  readonly stats = { relayed: 0, poison: 0, acked: 0, rerelayed: 0, passes: 0 };

  constructor(options: OutboxWorkerOptions = {}) {
    this.workerId = options.workerId ?? `worker-${randomBytes(4).toString('hex')}`;
    this.#o = {
      databaseUrl: options.databaseUrl ?? DEFAULT_DATABASE_URL,
      redisUrl: options.redisUrl ?? DEFAULT_REDIS_URL,
      channelPrefix: options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX,
      hub: options.hub ?? '/hubs/demo',
      batchSize: options.batchSize ?? 200,
      pollIntervalMs: options.pollIntervalMs ?? 1_000,
      hotPollIntervalMs: options.hotPollIntervalMs ?? 20,
      hotForMs: options.hotForMs ?? 1_000,
      ackSyncIntervalMs: options.ackSyncIntervalMs ?? 1_000,
      rebalanceIntervalMs: options.rebalanceIntervalMs ?? 2_000,
      liveWindowMs: options.liveWindowMs ?? 10_000,
      relayConcurrency: options.relayConcurrency ?? 32,
      maxPayloadBytes: options.maxPayloadBytes ?? 524_288,
      migrate: options.migrate ?? false,
      logger: options.logger ?? pino({ level: 'silent' }),
    };
    this.#retention = {
      maxLength: options.retention?.maxLength ?? DEFAULT_RELIABLE_OPTIONS.maxLength,
      maxAgeMs: options.retention?.maxAgeMs ?? DEFAULT_RELIABLE_OPTIONS.maxAgeMs,
    };
    this.#log = this.#o.logger.child({ worker: this.workerId });
    this.#keys = reliableKeys(this.#o.channelPrefix, this.#o.hub);
    this.#target = targetOf({
      redisUrl: this.#o.redisUrl,
      ...(options.redis ? { redis: options.redis } : {}),
    });
    this.#durability = durabilityFor(this.#target, {
      ...(options.replicas !== undefined ? { replicas: options.replicas } : {}),
      ...(options.replicaTimeoutMs !== undefined ? { replicaTimeoutMs: options.replicaTimeoutMs } : {}),
    });
    this.#redis = openClient({ redis: this.#target }, `relayhub:${this.workerId}`, {
      autoPipelining: true,
    });
    this.#redis.on('error', (error: Error) => this.#log.debug({ err: error }, 'redis error'));
    this.#scripts = laneScripts(this.#redis);
    this.#owner = new PartitionOwner(this.workerId, this.#o.liveWindowMs);
    this.#pool = new pg.Pool({ connectionString: this.#o.databaseUrl, max: 2 });
    this.#pool.on('error', (error) => this.#log.warn({ err: error }, 'postgres pool error'));
    if (options.maintenance !== false) {
      this.#maintenance = new Maintenance({
        target: this.#target,
        prefix: this.#o.channelPrefix,
        pool: this.#pool,
        redis: this.#redis,
        keys: this.#keys,
        log: this.#log,
        ...(typeof options.maintenance === 'object' ? options.maintenance : {}),
        ...(options.onDeadLetter ? { onDeadLetter: options.onDeadLetter } : {}),
      });
    }
  }

  /** Connects (failing with one clear sentence when Postgres or Redis is not there) and starts relaying. */
  async start(): Promise<void> {
    try {
      const client = await this.#connectPg();
      if (this.#o.migrate) {
        const applied = await migrate(client);
        if (applied.length > 0) this.#log.info({ applied }, 'migrations applied');
      }
    } catch (error) {
      await this.close();
      throw error instanceof RelayhubError ? error : postgresUnavailable(this.#o.databaseUrl, error);
    }
    try {
      await connectClient(this.#redis, this.#target, 5_000);
      await this.#maintenance?.start();
    } catch (error) {
      await this.close();
      throw error;
    }
    this.#running = this.#loop();
  }

  /** Wakes the relay loop now (NOTIFY does this; tests and benchmarks may too). */
  wake(): void {
    this.#woken = true;
    this.#wake?.();
  }

  async #connectPg(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const client = new pg.Client({ connectionString: this.#o.databaseUrl });
    client.on('error', (error) => {
      this.#log.warn({ err: error }, 'postgres connection lost; partitions released');
      if (this.#client === client) this.#dropClient();
    });
    await client.connect();
    this.#client = client;
    this.#owner.lost();
    this.#lastRebalance = 0;
    return client;
  }

  #dropClient(): void {
    const client = this.#client;
    this.#client = undefined;
    this.#owner.lost();
    client?.end().catch(() => undefined);
  }

  async #ensureListener(): Promise<void> {
    if (this.#listener) return;
    const listener = new pg.Client({ connectionString: this.#o.databaseUrl });
    listener.on('notification', () => this.wake());
    listener.on('error', (error) => {
      this.#log.debug({ err: error }, 'LISTEN connection lost; polling until it is back');
      if (this.#listener === listener) this.#listener = undefined;
      listener.end().catch(() => undefined);
    });
    await listener.connect();
    await listener.query(`LISTEN ${OUTBOX_CHANNEL}`);
    this.#listener = listener;
  }

  async #loop(): Promise<void> {
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      try {
        const client = await this.#connectPg();
        await this.#ensureListener().catch((error: unknown) =>
          this.#log.debug({ err: error }, 'LISTEN unavailable; polling'),
        );
        const now = Date.now();
        if (now - this.#lastRebalance >= this.#o.rebalanceIntervalMs) {
          await this.#owner.rebalance(client);
          this.#lastRebalance = now;
          await this.#checkEpoch(client, true);
        } else {
          await this.#checkEpoch(client, false);
        }
        const claimed = await this.#relayPass(client);
        if (Date.now() - this.#lastAckSync >= this.#o.ackSyncIntervalMs) {
          await this.#syncAcks();
          this.#lastAckSync = Date.now();
        }
        failures = 0;
        if (claimed > 0) this.#lastRowsAt = Date.now();
        if (claimed < this.#o.batchSize) await this.#idle();
      } catch (error) {
        if (this.#stop.signal.aborted) break;
        failures++;
        this.#log.warn({ err: error }, 'relay pass failed; retrying');
        if (isConnectionError(error)) this.#dropClient();
        await this.#sleep(Math.min(5_000, 100 * 2 ** failures));
      }
    }
  }

  /** Waits for a NOTIFY, the poll interval, or the next ack sync, whichever comes first. */
  #idle(): Promise<void> {
    if (this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    const untilAckSync = this.#o.ackSyncIntervalMs - (Date.now() - this.#lastAckSync);
    const hot = Date.now() - this.#lastRowsAt < this.#o.hotForMs;
    const poll = hot ? this.#o.hotPollIntervalMs : this.#o.pollIntervalMs;
    return this.#sleep(Math.max(0, Math.min(poll, untilAckSync)));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#stop.signal;
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        this.#woken = false;
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
      signal.addEventListener('abort', done, { once: true });
      if (signal.aborted) done();
    });
  }

  /**
   * Reads the Redis epoch (setting one when there is none). When it changed, Redis lost its memory:
   * every relayed, unacked row of the owned partitions is relayed again. `always` re-checks the owned
   * partitions even when the epoch did not change (after a rebalance brought new partitions).
   */
  async #checkEpoch(client: pg.ClientBase, always: boolean): Promise<void> {
    let epoch = await this.#redis.get(this.#keys.epoch);
    if (!epoch) {
      await this.#redis.set(this.#keys.epoch, randomBytes(8).toString('hex'), 'NX');
      epoch = (await this.#redis.get(this.#keys.epoch)) as string;
    }
    const changed = this.#epoch !== undefined && epoch !== this.#epoch;
    if (changed) this.#log.warn({ epoch }, 'Redis lost its memory: relaying every unacked row again');
    if (changed || always || this.#epoch === undefined) {
      const owned = this.#owner.owned;
      if (owned.length > 0) {
        const { rowCount } = await client.query(
          `UPDATE relayhub_outbox SET relayed_at = NULL, relay_epoch = NULL, lane_offset = NULL
           WHERE partition = ANY($1) AND relayed_at IS NOT NULL AND acked_at IS NULL
             AND relay_epoch IS DISTINCT FROM $2`,
          [owned, epoch],
        );
        if (rowCount) {
          this.stats.rerelayed += rowCount;
          this.#log.info({ rows: rowCount }, 'rows relayed under an old Redis epoch will be relayed again');
        }
      }
    }
    this.#epoch = epoch;
  }

  /** Claims one batch of committed, unrelayed rows of the owned partitions and relays it. */
  async #relayPass(client: pg.ClientBase): Promise<number> {
    const owned = this.#owner.owned;
    if (owned.length === 0) return 0;
    this.stats.passes++;
    await client.query('BEGIN');
    try {
      // note: a flag per row, never `id > cursor`: a row whose transaction commits after a higher id was
      // relayed is still unrelayed, so the next pass finds it.
      const { rows } = await client.query<Row>(
        `SELECT id, user_id, target, args, message_key FROM relayhub_outbox
         WHERE partition = ANY($1) AND relayed_at IS NULL AND failed_at IS NULL
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [owned, this.#o.batchSize],
      );
      const relayed: { id: string; offset: number }[] = [];
      const poison: { id: string; reason: string }[] = [];
      let failure: unknown;
      const byUser = new Map<string, Row[]>();
      for (const row of rows) {
        const list = byUser.get(row.user_id);
        if (list) list.push(row);
        else byUser.set(row.user_id, [row]);
      }
      await eachLimited([...byUser.values()], this.#o.relayConcurrency, async (userRows) => {
        for (const row of userRows) {
          const reason = this.#poisonReason(row);
          if (reason) {
            poison.push({ id: row.id, reason });
            continue;
          }
          try {
            const sent: ReliableSendResult = await sendReliable(
              this.#scripts,
              this.#keys,
              this.#retention,
              {
                userId: row.user_id,
                target: row.target,
                args: row.args as unknown[],
                key: row.message_key ?? `outbox:${row.id}`,
              },
              this.#durability,
            );
            relayed.push({ id: row.id, offset: sent.offset });
          } catch (error) {
            // note: the user's later rows wait too, so that their order holds.
            failure ??= error;
            return;
          }
        }
      });
      if (relayed.length > 0) {
        await client.query(
          `UPDATE relayhub_outbox SET relayed_at = now(), relay_epoch = $1, lane_offset = u.o
           FROM unnest($2::bigint[], $3::bigint[]) AS u(id, o) WHERE relayhub_outbox.id = u.id`,
          [this.#epoch, relayed.map((r) => r.id), relayed.map((r) => r.offset)],
        );
      }
      if (poison.length > 0) {
        await client.query(
          `UPDATE relayhub_outbox SET failed_at = now(), fail_reason = u.r
           FROM unnest($1::bigint[], $2::text[]) AS u(id, r) WHERE relayhub_outbox.id = u.id`,
          [poison.map((p) => p.id), poison.map((p) => p.reason)],
        );
        for (const p of poison) this.#log.warn({ id: p.id, reason: p.reason }, 'poison outbox row set aside');
      }
      await client.query('COMMIT');
      this.stats.relayed += relayed.length;
      this.stats.poison += poison.length;
      if (failure) throw failure;
      return rows.length;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }

  #poisonReason(row: Row): string | undefined {
    if (!USER_ID.test(row.user_id)) return 'user id is not 1-256 characters without braces or whitespace';
    if (row.target.length === 0) return 'empty target';
    if (!Array.isArray(row.args)) return 'args is not a JSON array';
    const bytes = Buffer.byteLength(JSON.stringify(row.args));
    if (bytes > this.#o.maxPayloadBytes) return `args are ${bytes} bytes, over maxPayloadBytes`;
    return undefined;
  }

  /** Reads the users' acked offsets from Redis and records the acks on their rows, in one batch. */
  async #syncAcks(): Promise<void> {
    const owned = this.#owner.owned;
    if (owned.length === 0 || !this.#epoch) return;
    const { rows } = await this.#pool.query<{ user_id: string }>(
      `SELECT DISTINCT user_id FROM relayhub_outbox
       WHERE partition = ANY($1) AND relayed_at IS NOT NULL AND acked_at IS NULL AND relay_epoch = $2
       LIMIT 5000`,
      [owned, this.#epoch],
    );
    if (rows.length === 0) return;
    const users = rows.map((r) => r.user_id);
    // note: one GET per user (auto-pipelined, per node on a Cluster): the users' keys are in many slots.
    const values = await Promise.all(users.map((u) => this.#redis.get(this.#keys.user(u).acked)));
    // note: acks belong to the Redis they were read from: when that Redis is not the one whose epoch the
    // rows were relayed under (it restarted empty in between), they name other messages' offsets.
    if ((await this.#redis.get(this.#keys.epoch)) !== this.#epoch) return;
    const acked: { user: string; offset: number }[] = [];
    users.forEach((user, i) => {
      const offset = Number(values[i]?.split(' ')[0] ?? 0);
      if (offset > 0) acked.push({ user, offset });
    });
    if (acked.length === 0) return;
    const { rowCount } = await this.#pool.query(
      `UPDATE relayhub_outbox SET acked_at = now()
       FROM unnest($1::text[], $2::bigint[]) AS u(user_id, o)
       WHERE relayhub_outbox.user_id = u.user_id AND relayhub_outbox.lane_offset <= u.o
         AND relayhub_outbox.acked_at IS NULL AND relayhub_outbox.relay_epoch = $3`,
      [acked.map((a) => a.user), acked.map((a) => a.offset), this.#epoch],
    );
    this.stats.acked += rowCount ?? 0;
  }

  /**
   * For metrics: the committed, unrelayed rows of the partitions this worker owns and the age of the
   * oldest, in seconds (one query).
   */
  backlog(): Promise<OutboxBacklog> {
    return outboxBacklog(this.#pool, this.#owner.owned);
  }

  /** Finishes the batch in hand, gives the partitions back, and closes every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      await this.#running?.catch(() => undefined);
      await this.#maintenance
        ?.close()
        .catch((error: unknown) => this.#log.warn({ err: error }, 'maintenance close'));
      const client = this.#client;
      if (client) {
        await this.#owner.release(client).catch(() => undefined);
        await client.end().catch(() => undefined);
      }
      await this.#listener?.end().catch(() => undefined);
      await this.#pool.end().catch(() => undefined);
      if (this.#redis.status === 'ready') await this.#redis.quit().catch(() => this.#redis.disconnect());
      else this.#redis.disconnect();
    })();
    return this.#closing;
  }
}

function isConnectionError(error: unknown): boolean {
  const message = describe(error);
  return /terminat|Connection|ECONNRESET|ECONNREFUSED|not queryable|ended/i.test(message);
}

async function eachLimited<T>(items: T[], limit: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await run(items[next++] as T);
  });
  await Promise.all(lanes);
}
