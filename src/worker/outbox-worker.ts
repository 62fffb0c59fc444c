import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { type Logger, pino } from 'pino';
import type { ReliableMessage } from '../backplane/backplane.js';
import { DEFAULT_CHANNEL_PREFIX, type ReliableKeys, reliableKeys } from '../redis/keys.js';
import { DEFAULT_REDIS_URL, describe } from '../backplane/pubsub/redis-connection.js';
import { type Retention, sendReliableBatch } from '../backplane/streams/reliable-producer.js';
import { DEFAULT_RELIABLE_OPTIONS } from '../backplane/streams/streams-lane.js';
import { RelayhubError } from '../errors.js';
import { postgresUnavailable } from '../unavailable.js';
import { type RedisTarget, targetOf } from '../redis/connection.js';
import { type EndpointConfig, inboxEndpointOf, validateEndpoints } from '../redis/endpoints.js';
import type { EndpointRouter, EndpointView } from '../backplane/endpoints/endpoint-router.js';
import { DEFAULT_OUTBOX_HUB, OUTBOX_CHANNEL, outboxDeployment, USER_ID } from '../outbox/enqueue.js';
import { type OutboxBacklog, outboxBacklog } from '../outbox/backlog.js';
import { type HubPartitions, ownedCondition } from '../outbox/owned-condition.js';
import { migrate } from '../outbox/migrate.js';
import { fnv1a, partitionOf } from '../outbox/schema.js';
import { type DeadLetterHandler, Maintenance, type MaintenanceOptions } from './maintenance.js';
import { PartitionOwner } from './partition-owner.js';
import { DEFAULT_ENDPOINT_NAME, RelayEndpoint } from './relay-endpoint.js';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** Rows one relay pass claims, relays and marks by default. */
export const DEFAULT_BATCH_SIZE = 1_000;

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
   * Several Redis endpoints (as the hubs' backplanes have them); takes precedence over `redis` and
   * `redisUrl`. Each user's rows go to the user's inbox endpoint (`inboxEndpointOf`: a rendezvous hash
   * over every endpoint's name, what the hub instances use too); when it does not answer, that user's rows
   * wait in Postgres, in order, while the other endpoints' users keep flowing. Types do not matter here.
   * @default one endpoint, 'default', on `redis`
   */
  endpoints?: EndpointConfig[];
  /**
   * Where each user's inbox is: the hubs' router (its `inboxEndpoint`), when the app gave them a custom
   * one; the worker must answer as the hubs do. It sees every endpoint, `online` false while one fails.
   * @default `inboxEndpointOf(userId, endpoints)`, as the hubs' default router
   */
  router?: Pick<EndpointRouter, 'inboxEndpoint'>;
  /**
   * Replicas that must confirm (`WAIT`) a relayed row before it counts as relayed, so that a primary
   * failover cannot take it back; a row they do not confirm in time is relayed again (same message id).
   * @default 1 on a Cluster, 0 on one node
   */
  replicas?: number;
  /** @default 1_000 */
  replicaTimeoutMs?: number;
  /** The deployment's prefix: the worker relays only rows enqueued with it. @default 'relayhub' */
  channelPrefix?: string;
  /** The hub whose users the outbox rows are for (one hub; see `hubs`). @default '/hubs/demo' */
  hub?: string;
  /** The hubs this worker relays rows for (of its prefix); takes precedence over `hub`. @default [hub] */
  hubs?: string[];
  /** @default a random id */
  workerId?: string;
  /** Rows claimed, relayed and marked per relay pass (one transaction, one batch to Redis). @default 1_000 */
  batchSize?: number;
  /** Polling interval when no NOTIFY wakes the worker. @default 1_000 */
  pollIntervalMs?: number;
  /** Polling interval for `hotForMs` after a pass that found rows (producers skip NOTIFYs in bursts). @default 10 */
  hotPollIntervalMs?: number;
  /** How long the worker polls at `hotPollIntervalMs` after it last found rows. @default 1_000 */
  hotForMs?: number;
  /** How often acks are read back from Redis and recorded on the rows. @default 1_000 */
  ackSyncIntervalMs?: number;
  /** Users whose acks one ack sync reads (one page; the next sync reads the next). @default 5_000 */
  ackSyncBatch?: number;
  /** How often the worker re-announces itself and rebalances partitions. @default 2_000 */
  rebalanceIntervalMs?: number;
  /** A worker not seen for this long no longer counts toward the fair share. @default 10_000 */
  liveWindowMs?: number;
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
  hub: string;
  user_id: string;
  target: string;
  args: unknown;
  message_key: string | null;
}

/** One hub this worker serves: its lane's keys and the partitions of it this worker owns. */
interface ServedHub {
  hub: string;
  keys: ReliableKeys;
  owner: PartitionOwner;
}

/** A relayed row, as its mark records it. */
interface Relayed {
  id: string;
  hub: string;
  offset: number;
  endpoint: string;
  epoch: string;
}

/** The worker's counters (also on its metrics endpoint). */
export interface OutboxWorkerStats {
  relayed: number;
  poison: number;
  acked: number;
  rerelayed: number;
  passes: number;
  /** Rows claimed but left for a later pass because their user's endpoint did not answer. */
  held: number;
  /** Rows relayed per hub. */
  byHub: Record<string, number>;
  /** Rows relayed per endpoint. */
  byEndpoint: Record<string, number>;
}

/**
 * Relays committed outbox rows of one deployment (its channel prefix, the hubs it serves) into the users'
 * Redis inboxes, in bulk: per pass it claims a batch of its partitions' rows in id order, relays them in
 * one pipelined batch per endpoint and hub (each user's rows in order; a failure holds back that user's
 * rest), and marks them relayed with their lane offsets in one statement. Acks are read back from each
 * user's endpoint in batches; a Redis that lost its data is noticed by its epoch key and its unacked rows
 * relayed again. Safe to kill at any point: a row relayed twice carries the same message id, and the lane
 * drops the second copy.
 */
export class OutboxWorker {
  readonly workerId: string;
  readonly channelPrefix: string;
  readonly hubs: readonly string[];
  readonly #o: Required<
    Omit<
      OutboxWorkerOptions,
      | 'onDeadLetter'
      | 'retention'
      | 'maintenance'
      | 'workerId'
      | 'redis'
      | 'replicas'
      | 'replicaTimeoutMs'
      | 'endpoints'
      | 'router'
      | 'hub'
      | 'hubs'
      | 'channelPrefix'
    >
  >;
  readonly #retention: Retention;
  readonly #log: Logger;
  readonly #served: ServedHub[];
  readonly #endpoints: RelayEndpoint[];
  readonly #endpointNames: string[];
  readonly #router: Pick<EndpointRouter, 'inboxEndpoint'> | undefined;
  readonly #types = new Map<string, EndpointView['type']>();
  readonly #pool: pg.Pool;
  readonly #maintenance: Maintenance | undefined;
  readonly #stop = new AbortController();
  #client: pg.Client | undefined;
  #listener: pg.Client | undefined;
  #lastRebalance = 0;
  #lastAckSync = 0;
  #ackSync: Promise<void> | undefined;
  #lastRowsAt = 0;
  /** Whether the last pass claimed few rows (live traffic), so that the next claim is a prepared statement. */
  #smallPasses = true;
  /**
   * The next batch, claimed while the current one was relayed (a backlog), on this connection for these
   * owned partitions; used only if neither changed since, and thrown away when rows were reset for
   * relaying again (their users' earlier rows are unrelayed again, and must go before its rows).
   */
  #prefetched:
    | {
        client: pg.ClientBase;
        ownedKey: string;
        rows: Promise<Row[]>;
        /** Users with a row the current batch left unrelayed: their rows of this batch must wait. */
        skip: Set<string>;
      }
    | undefined;
  #ackCursor = '';
  #wake: (() => void) | undefined;
  #woken = false;
  #running: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  readonly stats: OutboxWorkerStats = {
    relayed: 0,
    poison: 0,
    acked: 0,
    rerelayed: 0,
    passes: 0,
    held: 0,
    byHub: {},
    byEndpoint: {},
  };

  constructor(options: OutboxWorkerOptions = {}) {
    this.workerId = options.workerId ?? `worker-${randomBytes(4).toString('hex')}`;
    const hubs = options.hubs ?? [options.hub ?? DEFAULT_OUTBOX_HUB];
    if (hubs.length === 0) {
      throw new RelayhubError('ERR_CONFIG', 'The outbox worker was given no hub.', {
        remedy: "Give the hubs whose rows it relays, e.g. hubs: ['/hubs/orders'] (CLI: --hub /hubs/orders).",
      });
    }
    this.channelPrefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX;
    for (const hub of hubs) outboxDeployment({ channelPrefix: this.channelPrefix, hub });
    this.hubs = [...new Set(hubs)];
    this.#o = {
      databaseUrl: options.databaseUrl ?? DEFAULT_DATABASE_URL,
      redisUrl: options.redisUrl ?? DEFAULT_REDIS_URL,
      batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
      pollIntervalMs: options.pollIntervalMs ?? 1_000,
      hotPollIntervalMs: options.hotPollIntervalMs ?? 10,
      hotForMs: options.hotForMs ?? 1_000,
      ackSyncIntervalMs: options.ackSyncIntervalMs ?? 1_000,
      ackSyncBatch: options.ackSyncBatch ?? 5_000,
      rebalanceIntervalMs: options.rebalanceIntervalMs ?? 2_000,
      liveWindowMs: options.liveWindowMs ?? 10_000,
      maxPayloadBytes: options.maxPayloadBytes ?? 524_288,
      migrate: options.migrate ?? false,
      logger: options.logger ?? pino({ level: 'silent' }),
    };
    this.#retention = {
      maxLength: options.retention?.maxLength ?? DEFAULT_RELIABLE_OPTIONS.maxLength,
      maxAgeMs: options.retention?.maxAgeMs ?? DEFAULT_RELIABLE_OPTIONS.maxAgeMs,
    };
    this.#log = this.#o.logger.child({ worker: this.workerId, channelPrefix: this.channelPrefix });
    this.#served = this.hubs.map((hub) => ({
      hub,
      keys: reliableKeys(this.channelPrefix, hub),
      owner: new PartitionOwner(this.workerId, this.#o.liveWindowMs, this.channelPrefix, hub),
    }));
    const configs = options.endpoints
      ? validateEndpoints(options.endpoints)
      : [
          {
            name: DEFAULT_ENDPOINT_NAME,
            redis: targetOf({
              redisUrl: this.#o.redisUrl,
              ...(options.redis ? { redis: options.redis } : {}),
            }),
          },
        ];
    this.#endpoints = configs.map(
      (c) =>
        new RelayEndpoint(c.name, c.redis, {
          workerId: this.workerId,
          log: this.#log,
          ...(options.replicas !== undefined ? { replicas: options.replicas } : {}),
          ...(options.replicaTimeoutMs !== undefined ? { replicaTimeoutMs: options.replicaTimeoutMs } : {}),
        }),
    );
    this.#endpointNames = this.#endpoints.map((e) => e.name);
    this.#router = options.router;
    for (const c of configs)
      this.#types.set(c.name, (c as { type?: EndpointView['type'] }).type ?? 'primary');
    this.#pool = new pg.Pool({ connectionString: this.#o.databaseUrl, max: 2 });
    this.#pool.on('error', (error) => this.#log.warn({ err: error }, 'postgres pool error'));
    if (options.maintenance !== false) {
      const first = this.#endpoints[0] as RelayEndpoint;
      this.#maintenance = new Maintenance({
        target: first.target,
        prefix: this.channelPrefix,
        hubs: this.hubs,
        pool: this.#pool,
        lanes: this.#endpoints.flatMap((e) => this.#served.map((s) => ({ redis: e.redis, keys: s.keys }))),
        log: this.#log,
        ...(typeof options.maintenance === 'object' ? options.maintenance : {}),
        ...(options.onDeadLetter ? { onDeadLetter: options.onDeadLetter } : {}),
      });
    }
  }

  /** Connects (failing with one clear sentence when Postgres or a Redis is not there) and starts relaying. */
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
      await Promise.all(this.#endpoints.map((e) => e.connect(5_000)));
      await this.#maintenance?.start();
    } catch (error) {
      await this.close();
      throw error;
    }
    // note: the first ack sync comes one interval after the start, as every later one (rows relayed by the
    // first passes have no acks to read yet).
    this.#lastAckSync = Date.now();
    this.#running = this.#loop();
  }

  /** Wakes the relay loop now (NOTIFY does this; tests and benchmarks may too). */
  wake(): void {
    this.#woken = true;
    this.#wake?.();
  }

  /** The partitions this worker owns, per hub. */
  get partitions(): Record<string, number[]> {
    return Object.fromEntries(this.#served.map((s) => [s.hub, s.owner.owned]));
  }

  async #connectPg(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const client = new pg.Client({ connectionString: this.#o.databaseUrl });
    client.on('error', (error) => {
      this.#log.warn({ err: error }, 'postgres connection lost; partitions released');
      if (this.#client === client) this.#dropClient();
    });
    await client.connect();
    // note: the relay's statements do not wait for a WAL flush (no fsync per pass). A mark that a Postgres
    // crash takes back leaves its rows unrelayed, and relaying them again is what a worker killed between
    // the send and the mark does: same message ids, which the lane drops as duplicates. An epoch reset or
    // a worker heartbeat taken back is redone at the next rebalance.
    await client.query('SET synchronous_commit = off');
    this.#client = client;
    for (const s of this.#served) s.owner.lost();
    this.#lastRebalance = 0;
    return client;
  }

  #dropClient(): void {
    const client = this.#client;
    this.#client = undefined;
    for (const s of this.#served) s.owner.lost();
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
        const rebalance = now - this.#lastRebalance >= this.#o.rebalanceIntervalMs;
        if (rebalance) {
          for (const s of this.#served) await s.owner.rebalance(client);
          this.#lastRebalance = now;
        }
        await this.#checkEpochs(client, rebalance);
        const claimed = await this.#relayPass(client);
        // note: beside the relay, on the pool's connections, so that reading acks back never delays a pass.
        if (!this.#ackSync && Date.now() - this.#lastAckSync >= this.#o.ackSyncIntervalMs) {
          this.#lastAckSync = Date.now();
          this.#ackSync = this.#syncAcks()
            .catch((error: unknown) =>
              this.#log.warn({ err: error }, 'ack sync failed; retrying at the next'),
            )
            .finally(() => {
              this.#ackSync = undefined;
              this.#lastAckSync = Date.now();
            });
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
   * Reads each endpoint's epoch of each served hub (setting one when there is none). When it changed, that
   * Redis lost its data: every relayed, unacked row of the owned partitions sent there is relayed again.
   * `always` re-checks the owned partitions even when no epoch changed (after a rebalance brought new
   * partitions, whose rows another worker may have sent under an older epoch), and also resets rows sent
   * to an endpoint this worker no longer has (the endpoint list changed).
   */
  async #checkEpochs(client: pg.ClientBase, always: boolean): Promise<void> {
    for (const endpoint of this.#endpoints) {
      if (!endpoint.ready) continue;
      try {
        for (const served of this.#served) {
          const read = await endpoint.readEpoch(served.keys);
          const changed = read.previous !== undefined && read.previous !== read.epoch;
          if (!changed && !always && read.previous !== undefined) continue;
          const rows = await this.#resetRows(client, served, endpoint.name, read.epoch);
          if (changed) {
            this.#log.warn(
              { endpoint: endpoint.name, hub: served.hub, rows, epoch: read.epoch },
              `Redis ${endpoint.where} lost its data (the epoch key ${served.keys.epoch} is gone): re-sending ${rows} messages of hub ${served.hub} that were sent but not acknowledged; clients drop the ones they already have by message id`,
            );
          } else if (rows > 0) {
            this.#log.warn(
              { endpoint: endpoint.name, hub: served.hub, rows, epoch: read.epoch },
              `${rows} messages of hub ${served.hub} were sent to Redis ${endpoint.where} before it lost its data (their epoch is not its current one, ${served.keys.epoch}): re-sending them; clients drop the ones they already have by message id`,
            );
          }
        }
        endpoint.answered();
      } catch (error) {
        endpoint.failed(error, []);
      }
    }
    if (always) {
      for (const served of this.#served) {
        const owned = served.owner.owned;
        if (owned.length === 0) continue;
        const { rowCount } = await client.query(
          `UPDATE relayhub_outbox SET relayed_at = NULL, relay_epoch = NULL, lane_offset = NULL, relay_endpoint = NULL
           WHERE channel_prefix = $1 AND hub = $2 AND partition = ANY($3)
             AND relayed_at IS NOT NULL AND acked_at IS NULL AND relay_endpoint <> ALL($4)`,
          [this.channelPrefix, served.hub, owned, this.#endpointNames],
        );
        if (rowCount) {
          this.stats.rerelayed += rowCount;
          this.#prefetched = undefined;
          this.#log.warn(
            { hub: served.hub, rows: rowCount },
            `${rowCount} messages of hub ${served.hub} were sent to a Redis endpoint this worker is not configured with: re-sending them to their users' endpoints`,
          );
        }
      }
    }
  }

  /** Marks the relayed, unacked rows of `served`'s owned partitions sent to `endpoint` under another epoch for relaying again. */
  async #resetRows(
    client: pg.ClientBase,
    served: ServedHub,
    endpoint: string,
    epoch: string,
  ): Promise<number> {
    const owned = served.owner.owned;
    if (owned.length === 0) return 0;
    const { rowCount } = await client.query(
      `UPDATE relayhub_outbox SET relayed_at = NULL, relay_epoch = NULL, lane_offset = NULL, relay_endpoint = NULL
       WHERE channel_prefix = $1 AND hub = $2 AND partition = ANY($3) AND relay_endpoint = $4
         AND relayed_at IS NOT NULL AND acked_at IS NULL AND relay_epoch IS DISTINCT FROM $5`,
      [this.channelPrefix, served.hub, owned, endpoint, epoch],
    );
    this.stats.rerelayed += rowCount ?? 0;
    if (rowCount) this.#prefetched = undefined;
    return rowCount ?? 0;
  }

  /** The partitions this worker owns, per served hub. */
  #owned(): HubPartitions[] {
    return this.#served.map((s) => ({ hub: s.hub, partitions: s.owner.owned }));
  }

  /**
   * Claims one batch of committed, unrelayed rows of the owned partitions (skipping users held back by a
   * failing endpoint), relays it in bulk, and marks what Redis took: two statements, no transaction.
   *
   * note: no `BEGIN … FOR UPDATE SKIP LOCKED … COMMIT` around the pass. One owner per partition is the
   * advisory lock held on this connection, released only between passes (or with the connection, which
   * ends a row lock the same way), so nobody else claims these rows meanwhile; the row locks cost a WAL
   * record per row and the transaction two more round trips per pass. A worker killed between the send
   * and the mark leaves its rows unrelayed, and they go again under the same message ids.
   */
  async #relayPass(client: pg.ClientBase): Promise<number> {
    const owned = this.#owned();
    const ownedKey = JSON.stringify(owned);
    const held = new Set(this.#endpoints.flatMap((e) => [...e.held]));
    const prefetched = this.#prefetched;
    this.#prefetched = undefined;
    let claimed: Row[];
    if (prefetched?.client === client && prefetched.ownedKey === ownedKey) {
      claimed = await prefetched.rows;
      // note: a user whose send failed in the previous batch keeps its later rows back even if its
      // endpoint answered again meanwhile (which clears the held set): its earlier rows go first.
      for (const user of prefetched.skip) held.add(user);
    } else {
      await prefetched?.rows.catch(() => undefined);
      const claim = this.#claim(client, owned, [...held], []);
      if (!claim) return 0;
      claimed = await claim;
    }
    this.stats.passes++;
    // note: a backlog: claim the next batch while this one is relayed (the connection is idle meanwhile),
    // leaving out this batch's rows, which are not marked yet. It is relayed after this batch, so each
    // user's rows still go in id order; the rows of users with a row of this batch left unrelayed are
    // dropped from it (`skip`).
    if (claimed.length === this.#o.batchSize) {
      const next = this.#claim(
        client,
        owned,
        [...held],
        claimed.map((r) => r.id),
      );
      if (next) {
        next.catch(() => undefined);
        this.#prefetched = { client, ownedKey, rows: next, skip: new Set() };
      }
    }
    const rows = held.size === 0 ? claimed : claimed.filter((r) => !held.has(r.user_id));
    const poison: { id: string; reason: string }[] = [];
    const groups = new Map<RelayEndpoint, Map<string, Row[]>>();
    for (const row of rows) {
      const reason = this.#poisonReason(row);
      if (reason) {
        poison.push({ id: row.id, reason });
        continue;
      }
      const endpoint = this.#inboxEndpoint(row.user_id);
      let byHub = groups.get(endpoint);
      if (!byHub) groups.set(endpoint, (byHub = new Map()));
      const list = byHub.get(row.hub);
      if (list) list.push(row);
      else byHub.set(row.hub, [row]);
    }
    const relayed: Relayed[] = [];
    await Promise.all(
      [...groups].flatMap(([endpoint, byHub]) =>
        [...byHub].map(([hub, hubRows]) => this.#relay(endpoint, hub, hubRows, relayed)),
      ),
    );
    if (relayed.length > 0) {
      await client.query({
        name: 'relayhub-mark',
        text: MARK_RELAYED,
        values: [
          relayed.map((r) => r.id),
          relayed.map((r) => r.offset),
          relayed.map((r) => r.endpoint),
          relayed.map((r) => r.epoch),
          this.workerId,
        ],
      });
    }
    if (poison.length > 0) {
      await client.query(
        `UPDATE relayhub_outbox SET failed_at = now(), fail_reason = u.r
         FROM unnest($1::bigint[], $2::text[]) AS u(id, r)
         WHERE relayhub_outbox.id = u.id AND relayhub_outbox.id = ANY($1::bigint[])`,
        [poison.map((p) => p.id), poison.map((p) => p.reason)],
      );
      for (const p of poison) this.#log.warn({ id: p.id, reason: p.reason }, 'poison outbox row set aside');
    }
    this.stats.relayed += relayed.length;
    this.stats.poison += poison.length;
    this.stats.held += claimed.length - relayed.length - poison.length;
    // note: the users with a row of this batch left unrelayed (held back before or failed now) wait in the
    // next batch too, and the next claim leaves them out: their earlier rows must go first.
    if (this.#prefetched && relayed.length + poison.length < claimed.length) {
      const done = new Set([...relayed.map((r) => r.id), ...poison.map((p) => p.id)]);
      for (const row of claimed) if (!done.has(row.id)) this.#prefetched.skip.add(row.user_id);
    }
    for (const r of relayed) {
      this.stats.byEndpoint[r.endpoint] = (this.stats.byEndpoint[r.endpoint] ?? 0) + 1;
      this.stats.byHub[r.hub] = (this.stats.byHub[r.hub] ?? 0) + 1;
    }
    return claimed.length;
  }

  /**
   * Claims up to `batchSize` committed, unrelayed rows of the owned partitions in id order, without the
   * held users' and the `inFlight` ones; undefined when the worker owns no partition.
   */
  #claim(
    client: pg.ClientBase,
    owned: HubPartitions[],
    held: string[],
    inFlight: string[],
  ): Promise<Row[]> | undefined {
    const condition = ownedCondition(owned, 5);
    if (condition.sql === 'false') return undefined;
    // note: a flag per row, never `id > cursor`: a row whose transaction commits after a higher id was
    // relayed is still unrelayed, so the next pass finds it.
    const text = `SELECT id, hub, user_id, target, args, message_key FROM relayhub_outbox
       WHERE channel_prefix = $1 AND relayed_at IS NULL AND failed_at IS NULL AND ${condition.sql}
         AND user_id <> ALL($2::text[]) AND id <> ALL($4::bigint[])
       ORDER BY id LIMIT $3`;
    const small = this.#smallPasses && inFlight.length === 0;
    return client
      .query<Row>({
        text,
        values: [this.channelPrefix, held, this.#o.batchSize, inFlight, ...condition.params],
        // note: prepared while passes are small (live traffic): Postgres then skips parsing and planning
        // (~140 of ~190 µs of its CPU per pass here). Its generic plan reads the unrelayed index and sorts
        // what it finds, which is right for a few rows; a backlog gets a plan of its own every pass.
        ...(small ? { name: preparedName('claim', text) } : {}),
      })
      .then(({ rows }) => {
        this.#smallPasses = rows.length < this.#o.batchSize / 2;
        return rows;
      });
  }

  /**
   * Sends one hub's rows bound for one endpoint as one batch (each user's in id order; a user whose send
   * fails keeps the rest of its rows back) and collects what Redis took. Never throws: rows that were
   * not taken stay unrelayed, their users held back until the endpoint is tried again.
   */
  async #relay(endpoint: RelayEndpoint, hub: string, rows: Row[], relayed: Relayed[]): Promise<void> {
    const keys = (this.#served.find((s) => s.hub === hub) as ServedHub).keys;
    const epoch = endpoint.epochOf(keys);
    if (endpoint.failing || epoch === undefined) {
      for (const row of rows) endpoint.held.add(row.user_id);
      return;
    }
    const messages: ReliableMessage[] = rows.map((row) => ({
      userId: row.user_id,
      target: row.target,
      args: row.args as unknown[],
      key: row.message_key ?? `outbox:${row.id}`,
    }));
    let outcomes;
    try {
      outcomes = await sendReliableBatch(
        endpoint.scripts,
        keys,
        this.#retention,
        messages,
        endpoint.durability,
      );
    } catch (error) {
      endpoint.failed(
        error,
        rows.map((r) => r.user_id),
      );
      return;
    }
    let failure: unknown;
    const failedUsers: string[] = [];
    outcomes.forEach((outcome, i) => {
      const row = rows[i] as Row;
      if (outcome.ok) {
        relayed.push({ id: row.id, hub, offset: outcome.result.offset, endpoint: endpoint.name, epoch });
      } else {
        failure ??= outcome.error;
        failedUsers.push(row.user_id);
      }
    });
    if (failure) endpoint.failed(failure, failedUsers);
  }

  /** The user's inbox endpoint (the router's, else one SHA-1 per endpoint and user; none with one endpoint). */
  #inboxEndpoint(userId: string): RelayEndpoint {
    if (this.#router) {
      const views: EndpointView[] = this.#endpoints.map((e) => ({
        name: e.name,
        type: this.#types.get(e.name) ?? 'primary',
        online: !e.failing,
        listening: false,
      }));
      const chosen = this.#router.inboxEndpoint(userId, views);
      const endpoint = this.#endpoints.find((e) => e.name === chosen?.name);
      if (!endpoint) {
        throw new RelayhubError(
          'ERR_CONFIG',
          `The router chose no known inbox endpoint for user '${userId}'.`,
          {
            remedy: 'Return one of the endpoints given to inboxEndpoint.',
          },
        );
      }
      return endpoint;
    }
    const [only] = this.#endpoints;
    return this.#endpoints.length === 1 && only ? only : inboxEndpointOf(userId, this.#endpoints);
  }

  #poisonReason(row: Row): string | undefined {
    if (!USER_ID.test(row.user_id)) return 'user id is not 1-256 characters without braces or whitespace';
    if (row.target.length === 0) return 'empty target';
    if (!Array.isArray(row.args)) return 'args is not a JSON array';
    const bytes = Buffer.byteLength(JSON.stringify(row.args));
    if (bytes > this.#o.maxPayloadBytes) return `args are ${bytes} bytes, over maxPayloadBytes`;
    return undefined;
  }

  /**
   * Reads the acked offsets of one page of users with relayed, unacked rows from each user's endpoint
   * (pipelined per endpoint) and deletes the rows they acknowledged, in one statement.
   */
  async #syncAcks(): Promise<void> {
    const owned = ownedCondition(this.#owned(), 4);
    if (owned.sql === 'false') return;
    const { rows } = await this.#pool.query<{ hub: string; relay_endpoint: string; user_id: string }>(
      `SELECT DISTINCT hub, relay_endpoint, user_id FROM relayhub_outbox
       WHERE channel_prefix = $1 AND relayed_at IS NOT NULL AND acked_at IS NULL AND ${owned.sql}
         AND user_id > $2
       ORDER BY user_id LIMIT $3`,
      [this.channelPrefix, this.#ackCursor, this.#o.ackSyncBatch, ...owned.params],
    );
    // note: the next sync reads the next page; after the last, it starts again from the first.
    this.#ackCursor = rows.length === this.#o.ackSyncBatch ? (rows.at(-1)?.user_id ?? '') : '';
    if (rows.length === 0) return;
    const acked = {
      hubs: [] as string[],
      endpoints: [] as string[],
      users: [] as string[],
      offsets: [] as number[],
      epochs: [] as string[],
    };
    await Promise.all(
      this.#endpoints.map(async (endpoint) => {
        if (endpoint.failing) return;
        for (const served of this.#served) {
          const epoch = endpoint.epochOf(served.keys);
          const users = rows
            .filter((r) => r.relay_endpoint === endpoint.name && r.hub === served.hub)
            .map((r) => r.user_id);
          if (users.length === 0 || epoch === undefined) continue;
          try {
            // note: one GET per user (auto-pipelined, per node on a Cluster): the users' keys are in many slots.
            const values = await Promise.all(users.map((u) => endpoint.redis.get(served.keys.user(u).acked)));
            // note: acks belong to the Redis they were read from: when that Redis is not the one whose epoch
            // the rows were relayed under (it restarted empty in between), they name other messages' offsets.
            if ((await endpoint.redis.get(served.keys.epoch)) !== epoch) continue;
            users.forEach((user, i) => {
              const offset = Number(values[i]?.split(' ')[0] ?? 0);
              if (offset <= 0) return;
              acked.hubs.push(served.hub);
              acked.endpoints.push(endpoint.name);
              acked.users.push(user);
              acked.offsets.push(offset);
              acked.epochs.push(epoch);
            });
          } catch (error) {
            this.#log.debug({ err: error, endpoint: endpoint.name }, 'acks not read; next sync');
          }
        }
      }),
    );
    if (acked.users.length === 0) return;
    // note: an acked row is done (the lane keeps the message's dedup state), so it is deleted here rather
    // than marked acked and purged later: one row write less per message, and no purge scan.
    const { rowCount } = await this.#pool.query({
      name: 'relayhub-delete-acked',
      text: DELETE_ACKED,
      values: [
        this.channelPrefix,
        acked.hubs,
        acked.endpoints,
        acked.users,
        acked.offsets,
        acked.epochs,
        acked.users.map(partitionOf),
      ],
    });
    this.stats.acked += rowCount ?? 0;
  }

  /**
   * For metrics: the committed, unrelayed rows of the partitions this worker owns and the age of the
   * oldest, in seconds (one query).
   */
  backlog(): Promise<OutboxBacklog> {
    return outboxBacklog(this.#pool, { channelPrefix: this.channelPrefix, owned: this.#owned() });
  }

  /** Finishes the batch in hand, gives the partitions back, and closes every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      await this.#running?.catch(() => undefined);
      await this.#ackSync;
      await this.#maintenance
        ?.close()
        .catch((error: unknown) => this.#log.warn({ err: error }, 'maintenance close'));
      const client = this.#client;
      if (client) {
        for (const s of this.#served) await s.owner.release(client).catch(() => undefined);
        await client.end().catch(() => undefined);
      }
      await this.#listener?.end().catch(() => undefined);
      await this.#pool.end().catch(() => undefined);
      await Promise.all(this.#endpoints.map((e) => e.close()));
    })();
    return this.#closing;
  }
}

/**
 * Marks relayed rows with their lane offsets, endpoint and epoch. `id = ANY` besides the join, so that the
 * planner finds the rows by the primary key.
 */
/**
 * Deletes the relayed rows at or below each user's acked offset, sent to that endpoint under that epoch
 * (the partition in the join too, so that the unacked index finds them).
 */
const DELETE_ACKED = `DELETE FROM relayhub_outbox o
   USING unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::smallint[])
     AS u(hub, n, user_id, o, e, p)
   WHERE o.channel_prefix = $1 AND o.hub = u.hub AND o.partition = u.p AND o.user_id = u.user_id
     AND o.relayed_at IS NOT NULL AND o.acked_at IS NULL AND o.lane_offset <= u.o
     AND o.relay_endpoint = u.n AND o.relay_epoch = u.e`;

const MARK_RELAYED = `UPDATE relayhub_outbox SET relayed_at = now(), relay_epoch = u.e, lane_offset = u.o,
     relay_endpoint = u.n, relayed_by = $5
   FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(id, o, n, e)
   WHERE relayhub_outbox.id = u.id AND relayhub_outbox.id = ANY($1::bigint[])`;

/** A prepared statement's name for one text (the claim's text depends on the hubs served). */
function preparedName(kind: string, text: string): string {
  return `relayhub-${kind}-${fnv1a(text).toString(36)}`;
}

function isConnectionError(error: unknown): boolean {
  const message = describe(error);
  return /terminat|Connection|ECONNRESET|ECONNREFUSED|not queryable|ended/i.test(message);
}
