/**
 * Shared pieces of the outbox tests: an empty schema (for migration tests), connection strings that carry
 * an `application_name` (so that a test can find, and only ever terminate, its own workers' backends),
 * who holds which outbox partition (pg_locks), a log of what the users' official clients received, user
 * ids that fall in a given partition, the lane offsets Redis assigned (to tell a batch in flight), and the
 * clean-up of a test's keys on the shared Redis (its unique prefix only, never a flush).
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { Redis } from 'ioredis';
import pg from 'pg';
import { reliableKeys } from '../../src/redis/keys.js';
import { partitionOf } from '../../src/outbox/schema.js';
import { buildClient, type ClientOptions, type ClientPool } from './client.js';
import { DATABASE_URL } from './postgres.js';
import { signToken } from './server.js';
import { waitFor } from './wait-for.js';

/** {@link waitFor} for a value: polls until `condition` returns one (not false/undefined/null), returns it. */
export async function waitForValue<T>(
  condition: () => T | false | undefined | null | Promise<T | false | undefined | null>,
  options: Parameters<typeof waitFor>[1] = {},
): Promise<T> {
  return (await waitFor(condition, options)) as T;
}

/** A random suffix for names a test must not share with another run. */
export const uniqueSuffix = (): string => randomBytes(4).toString('hex');

export interface EmptySchema {
  name: string;
  /** A connection string whose sessions use only this schema (`search_path`). */
  databaseUrl: string;
  /** Drops the schema and everything in it. */
  drop(): Promise<void>;
}

/** A schema with nothing in it (no migrations applied), for the migration tests. */
export async function createEmptySchema(name = 'empty'): Promise<EmptySchema> {
  const schema = `rh_${name}_${uniqueSuffix()}`;
  await adminQuery(`CREATE SCHEMA ${schema}`);
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    name: schema,
    databaseUrl: url.toString(),
    drop: () => adminQuery(`DROP SCHEMA IF EXISTS ${schema} CASCADE`),
  };
}

async function adminQuery(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

/** `databaseUrl` with `application_name=<name>`: every session opened with it shows that name. */
export function withApplicationName(databaseUrl: string, name: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('application_name', name);
  return url.toString();
}

/** An application name unique to this run, e.g. for one worker. */
export const uniqueApplicationName = (label: string): string => `rh-${label}-${uniqueSuffix()}`;

/**
 * The outbox partitions whose advisory locks are held by sessions with each of these application names
 * (a worker's partitions are session-level advisory locks `(class, partition)` on its own connection).
 */
export async function partitionsHeld(
  pool: pg.Pool,
  applicationNames: string[],
): Promise<Map<string, number[]>> {
  const { rows } = await pool.query<{ application_name: string; partition: number }>(
    `SELECT a.application_name, l.objid::int AS partition
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND a.datname = current_database() AND a.application_name = ANY($1)
      ORDER BY 2`,
    [applicationNames],
  );
  const held = new Map<string, number[]>(applicationNames.map((name) => [name, []]));
  for (const row of rows) held.get(row.application_name)?.push(row.partition);
  return held;
}

/**
 * Terminates the backends of this database whose application_name is exactly `name` (one test's worker;
 * never another session); returns how many were terminated.
 */
export async function terminateBackends(pool: pg.Pool, name: string): Promise<number> {
  if (!name.startsWith('rh-')) throw new Error(`Refusing to terminate the sessions of '${name}'.`);
  const { rows } = await pool.query<{ terminated: string }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS terminated FROM pg_stat_activity
      WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()`,
    [name],
  );
  return Number(rows[0]?.terminated ?? 0);
}

/** `count` user ids (starting with `label`) whose outbox rows fall in `partition`. */
export function usersInPartition(partition: number, count: number, label = 'user'): string[] {
  const users: string[] = [];
  for (let i = 0; users.length < count; i++) {
    const user = `${label}-${i}`;
    if (partitionOf(user) === partition) users.push(user);
  }
  return users;
}

/** The total of the users' last lane offsets in Redis: how many messages Redis took for them. */
export async function laneOffsetTotal(
  redis: Redis,
  channelPrefix: string,
  hub: string,
  users: string[],
): Promise<number> {
  const keys = reliableKeys(channelPrefix, hub);
  const values = await redis.mget(...users.map((u) => keys.user(u).seq));
  return values.reduce((sum, v) => sum + Number(v ?? 0), 0);
}

/** One copy of a reliable message a client received. */
export interface Reception {
  messageId: string;
  offset: number;
  payload: unknown;
  at: number;
}

/**
 * Every copy of a reliable message the users' clients received, in arrival order per user, and the same
 * deduplicated by message id (first receptions).
 */
export class ReceivedLog {
  readonly #copies = new Map<string, Reception[]>();
  readonly #first = new Map<string, Reception[]>();
  readonly #seen = new Map<string, Set<string>>();

  record(user: string, payload: unknown, meta: { messageId: string; offset: number }): void {
    const reception = { messageId: meta.messageId, offset: meta.offset, payload, at: Date.now() };
    let copies = this.#copies.get(user);
    if (!copies) this.#copies.set(user, (copies = []));
    copies.push(reception);
    let seen = this.#seen.get(user);
    if (!seen) this.#seen.set(user, (seen = new Set()));
    if (seen.has(meta.messageId)) return;
    seen.add(meta.messageId);
    let first = this.#first.get(user);
    if (!first) this.#first.set(user, (first = []));
    first.push(reception);
  }

  /** Every copy `user`'s clients received, duplicates included. */
  copies(user: string): Reception[] {
    return [...(this.#copies.get(user) ?? [])];
  }

  /** What `user`'s clients received, deduplicated by message id, in order of first reception. */
  distinct(user: string): Reception[] {
    return [...(this.#first.get(user) ?? [])];
  }

  has(user: string, messageId: string): boolean {
    return this.#seen.get(user)?.has(messageId) ?? false;
  }

  /** Copies received, duplicates included. */
  get received(): number {
    let n = 0;
    for (const copies of this.#copies.values()) n += copies.length;
    return n;
  }

  /** Distinct messages received (by user and message id). */
  get distinctCount(): number {
    let n = 0;
    for (const seen of this.#seen.values()) n += seen.size;
    return n;
  }

  /** Copies of a message id the same user had already received. */
  get duplicates(): number {
    return this.received - this.distinctCount;
  }
}

/** Registers a handler for `target` (before start) that records each copy and acks it by returning. */
export function recordReliable(
  connection: HubConnection,
  user: string,
  log: ReceivedLog,
  target: string,
): void {
  connection.on(target, (payload: unknown, meta: { messageId: string; offset: number }) => {
    log.record(user, payload, meta);
    return true;
  });
}

/** Builds an official client for `user` that records `target` into `log`, adds it to `pool`, starts it. */
export async function connectRecorded(
  pool: ClientPool,
  url: string,
  user: string,
  log: ReceivedLog,
  target: string,
  options: ClientOptions = {},
): Promise<HubConnection> {
  const connection = buildClient(url, { token: await signToken(user), ...options });
  recordReliable(connection, user, log, target);
  pool.add(connection);
  await connection.start();
  return connection;
}

/**
 * Compares what each user received (deduplicated) with the message ids expected for them, in order:
 * returns the problems (empty when every expected id arrived, in the expected order, and nothing else).
 */
export function deliveryProblems(log: ReceivedLog, expected: Map<string, string[]>): string[] {
  const problems: string[] = [];
  for (const [user, ids] of expected) {
    const got = log.distinct(user).map((r) => r.messageId);
    const missing = ids.filter((id) => !log.has(user, id));
    const unexpected = got.filter((id) => !ids.includes(id));
    if (missing.length > 0)
      problems.push(`${user}: ${missing.length} missing (first ${missing.slice(0, 3)})`);
    if (unexpected.length > 0) problems.push(`${user}: unexpected ${unexpected.slice(0, 3)}`);
    if (missing.length === 0 && unexpected.length === 0 && got.join() !== ids.join()) {
      problems.push(`${user}: out of order: got ${got.slice(0, 8)}… expected ${ids.slice(0, 8)}…`);
    }
  }
  return problems;
}

/** Numbers from `from` to `to`, inclusive. */
export const range = (from: number, to: number): number[] =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/**
 * Stops outbox workers with a batch in hand: a trigger in the test's own schema makes the UPDATE that marks
 * rows relayed (relayed_at from NULL to a time) take a shared advisory lock on a key of this gate's own,
 * which the gate holds exclusively between {@link hold} and {@link release}. A worker then claims its
 * batch and sends it to Redis, and waits at the mark; nothing else (enqueue, ack sync, the epoch check,
 * purge) is held up. The trigger goes with the schema.
 */
export class RelayGate {
  #held = false;

  private constructor(
    private readonly client: pg.Client,
    private readonly key: number,
  ) {}

  /** Installs the trigger in the schema of `databaseUrl` (a test schema's), without holding the gate. */
  static async install(databaseUrl: string): Promise<RelayGate> {
    const key = randomBytes(6).readUIntBE(0, 6);
    const client = new pg.Client({ connectionString: databaseUrl });
    client.on('error', () => undefined);
    await client.connect();
    await client.query(`CREATE FUNCTION relayhub_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock_shared(${key}); RETURN NEW; END $$`);
    await client.query(`CREATE TRIGGER relayhub_test_gate BEFORE UPDATE ON relayhub_outbox FOR EACH ROW
      WHEN (OLD.relayed_at IS NULL AND NEW.relayed_at IS NOT NULL) EXECUTE FUNCTION relayhub_test_gate()`);
    return new RelayGate(client, key);
  }

  /** Closes the gate; resolves once the transactions that passed it have ended. */
  async hold(): Promise<void> {
    if (this.#held) return;
    await this.client.query('SELECT pg_advisory_lock($1)', [this.key]);
    this.#held = true;
  }

  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await this.client.query('SELECT pg_advisory_unlock($1)', [this.key]);
  }

  /** Opens the gate for good (the trigger stays, harmless) and disconnects. */
  async end(): Promise<void> {
    await this.client.end().catch(() => undefined);
    this.#held = false;
  }
}

/** Whether a session named `applicationName` waits at a {@link RelayGate} (in the UPDATE marking rows relayed). */
export async function blockedMarkingRelayed(pool: pg.Pool, applicationName: string): Promise<boolean> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = $1 AND datname = current_database() AND wait_event_type = 'Lock'
        AND wait_event = 'advisory' AND query LIKE 'UPDATE relayhub_outbox SET relayed_at = now()%'`,
    [applicationName],
  );
  return (rows[0]?.n ?? 0) > 0;
}

/**
 * Rows (of `partitions`, or all) that Redis took (their message's dedup marker exists) but Postgres has not
 * marked relayed: a batch in hand, or one abandoned by a worker that died.
 */
export async function unmarkedInRedis(
  pool: pg.Pool,
  redis: Redis,
  channelPrefix: string,
  hub: string,
  partitions?: number[],
): Promise<number> {
  const { rows } = await pool.query<{ id: string; user_id: string; message_key: string | null }>(
    `SELECT id, user_id, message_key FROM relayhub_outbox
      WHERE relayed_at IS NULL AND ($1::smallint[] IS NULL OR partition = ANY($1))`,
    [partitions ?? null],
  );
  if (rows.length === 0) return 0;
  const keys = reliableKeys(channelPrefix, hub);
  const pipeline = redis.pipeline();
  // note: the lane keeps a user's sent idempotency keys in one sorted set (member: the key).
  for (const row of rows) pipeline.zscore(keys.user(row.user_id).sent, row.message_key ?? `outbox:${row.id}`);
  const results = (await pipeline.exec()) ?? [];
  return results.filter(([, score]) => score !== null).length;
}

export { deletePrefix } from './redis.js';
