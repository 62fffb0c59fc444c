import type pg from 'pg';
import { DEFAULT_CHANNEL_PREFIX, USER_ID, validateChannelPrefix } from '../redis/keys.js';
import { RelayhubError } from '../errors.js';
import { outbox, partitionOf } from './schema.js';

/** The channel the outbox worker LISTENs on: a wake-up hint, never the only way rows are found. */
export const OUTBOX_CHANNEL = 'relayhub_outbox';

/**
 * A process sends at most one wake-up NOTIFY per this many milliseconds.
 *
 * note: a transaction that NOTIFYs takes a database-wide lock from its commit until the end of its flush,
 * which halved the commit rate of 16 concurrent producers in bench/outbox.mjs. The worker keeps polling
 * fast for `hotForMs` after it found rows, longer than this window, so a commit that skipped the
 * notification during a burst is still picked up at once; a NOTIFY lost with a rolled-back transaction
 * costs at most one poll interval.
 */
export const NOTIFY_THROTTLE_MS = 50;

const NOTIFY = `SELECT pg_notify('${OUTBOX_CHANNEL}', '')`;
let lastNotifyAt = 0;

function shouldNotify(): boolean {
  const now = Date.now();
  if (now - lastNotifyAt < NOTIFY_THROTTLE_MS) return false;
  lastNotifyAt = now;
  return true;
}

/** The hub outbox messages are for when neither the message nor the outbox names one. */
export const DEFAULT_OUTBOX_HUB = '/hubs/demo';

/**
 * Whose rows enqueue writes: a deployment's channel prefix and its default hub. Only workers of that
 * prefix serving that hub relay them (`relayhub worker --channel-prefix … --hub …`).
 */
export interface OutboxDeployment {
  /** The deployment's channel prefix, the same as its hubs' and workers'. @default 'relayhub' */
  channelPrefix?: string;
  /** The hub messages are for unless a message names another. @default '/hubs/demo' */
  hub?: string;
}

/** Default time a message waits for its ack before it goes to the dead-letter queue: 24 h. */
export const DEFAULT_OUTBOX_TTL_MS = 24 * 60 * 60 * 1000;

export interface OutboxMessage {
  userId: string;
  /** The client method the user's clients will have invoked. */
  target: string;
  args: unknown[];
  /**
   * The message id the client sees, and an idempotency key: two rows with the same key reach the client
   * once (within the lane's retention window).
   * @default `outbox:<row id>`
   */
  key?: string;
  /**
   * How long the message may wait for the client's ack before it is dead-lettered.
   * @default 24 h
   */
  ttlMs?: number;
  /** The hub whose user receives it (an app with several hubs). @default the deployment's hub */
  hub?: string;
}

/** A plain `pg` client (or pool client) inside `BEGIN … COMMIT`. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<pg.QueryResult>;
}

/**
 * A drizzle-orm (node-postgres) database or transaction.
 *
 * note: described by shape, without drizzle's types, so that an app that uses only `pg` never loads
 * drizzle-orm's declarations (they do not typecheck with `skipLibCheck: false`). The table is
 * `relayhub/drizzle`'s `outbox`.
 */
export interface DrizzleLike {
  insert(table: never): {
    values(row: never): {
      returning(fields: never): PromiseLike<{ id: unknown }[]>;
    };
  };
  execute(query: string): PromiseLike<unknown>;
}

/** The same shape with the table's types, as enqueue uses it. */
interface DrizzleInsert {
  insert(table: typeof outbox): {
    values(row: typeof outbox.$inferInsert): {
      returning(fields: { id: typeof outbox.id }): PromiseLike<{ id: bigint }[]>;
    };
  };
  execute(query: string): PromiseLike<unknown>;
}

/** A hub path: '/' and 1-256 characters without braces or whitespace (it becomes part of Redis keys). */
const HUB = /^\/[^{}\s]{0,255}$/;

/** Checks a deployment's prefix and hub once (ERR_CONFIG) and fills in the defaults. */
export function outboxDeployment(deployment: OutboxDeployment = {}): Required<OutboxDeployment> {
  const hub = deployment.hub ?? DEFAULT_OUTBOX_HUB;
  if (!HUB.test(hub)) {
    throw new RelayhubError('ERR_CONFIG', `Outbox hub '${hub}' is not a hub path.`, {
      remedy: "Use the hub's path, e.g. '/hubs/orders'.",
    });
  }
  return { channelPrefix: validateChannelPrefix(deployment.channelPrefix ?? DEFAULT_CHANNEL_PREFIX), hub };
}

/** Rejects what the worker could never relay, so that the caller's transaction fails instead. */
function validate(message: OutboxMessage): void {
  const bad = (what: string) => new RelayhubError('ERR_INVALID_MESSAGE', `Outbox message ${what}.`);
  if (typeof message.userId !== 'string' || !USER_ID.test(message.userId)) {
    throw bad('has a userId that is not 1-256 characters without braces or whitespace');
  }
  if (typeof message.target !== 'string' || message.target.length === 0) throw bad('has no target');
  if (!Array.isArray(message.args)) throw bad("has 'args' that is not an array");
  if (message.hub !== undefined && !HUB.test(String(message.hub))) {
    throw bad("has a 'hub' that is not a path such as '/hubs/orders'");
  }
  if (message.ttlMs !== undefined && !(Number.isSafeInteger(message.ttlMs) && message.ttlMs > 0)) {
    throw bad("has a 'ttlMs' that is not a positive integer");
  }
}

/** The user id rule, shared with every other sender. */
export { USER_ID } from '../redis/keys.js';

/**
 * Adds a reliable message to the outbox inside the caller's transaction (a drizzle transaction, or a `pg`
 * client between BEGIN and COMMIT), for the deployment's channel prefix and the message's hub (else the
 * deployment's). Nothing is sent unless that transaction commits; once it does, a worker of that prefix
 * serving that hub relays it to the user's inbox and the user's clients get it **at least once**, in order
 * per user, with a stable message id (`key`, or `outbox:<id>`), until they ack it or `ttlMs` passes.
 * Throws `ERR_INVALID_MESSAGE` for a message that could never be delivered, `ERR_CONFIG` for a bad
 * deployment, and whatever Postgres throws (which aborts the caller's transaction).
 */
export async function enqueue(
  tx: PgQueryable | DrizzleLike,
  message: OutboxMessage,
  deployment: OutboxDeployment = {},
): Promise<{ id: string }> {
  validate(message);
  const { channelPrefix, hub: defaultHub } = outboxDeployment(deployment);
  const hub = message.hub ?? defaultHub;
  const expiresAt = new Date(Date.now() + (message.ttlMs ?? DEFAULT_OUTBOX_TTL_MS));
  const partition = partitionOf(message.userId);
  if ('insert' in tx && typeof tx.insert === 'function') {
    const db = tx as unknown as DrizzleInsert;
    const [row] = await db
      .insert(outbox)
      .values({
        channelPrefix,
        hub,
        userId: message.userId,
        partition,
        target: message.target,
        args: message.args,
        messageKey: message.key ?? null,
        expiresAt,
      })
      .returning({ id: outbox.id });
    if (shouldNotify()) await db.execute(NOTIFY);
    return { id: String(row?.id) };
  }
  const queryable = tx as PgQueryable;
  const { rows } = await queryable.query(
    `INSERT INTO relayhub_outbox (channel_prefix, hub, user_id, partition, target, args, message_key, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING id`,
    [
      channelPrefix,
      hub,
      message.userId,
      partition,
      message.target,
      JSON.stringify(message.args),
      message.key ?? null,
      expiresAt,
    ],
  );
  if (shouldNotify()) await queryable.query(NOTIFY);
  return { id: String((rows[0] as { id: string }).id) };
}

/** A deployment's outbox: {@link enqueue} with its channel prefix and default hub filled in. */
export interface Outbox {
  readonly channelPrefix: string;
  readonly hub: string;
  /** {@link enqueue} for this deployment (a message's `hub` picks another of its hubs). */
  enqueue(tx: PgQueryable | DrizzleLike, message: OutboxMessage): Promise<{ id: string }>;
}

/** The outbox of one deployment (checked once: `ERR_CONFIG` for a bad prefix or hub). */
export function createOutbox(deployment: OutboxDeployment = {}): Outbox {
  const resolved = outboxDeployment(deployment);
  return { ...resolved, enqueue: (tx, message) => enqueue(tx, message, resolved) };
}
