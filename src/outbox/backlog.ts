import type { PgQueryable } from './enqueue.js';
import { type HubPartitions, ownedCondition } from './owned-condition.js';

export interface OutboxBacklog {
  /** Committed rows not relayed yet (poison rows excepted). */
  rows: number;
  /** Age of the oldest of them in seconds; 0 when there is none. */
  oldestSeconds: number;
}

/** Which rows a backlog counts: one deployment's, optionally only some hubs' partitions. */
export interface BacklogScope {
  channelPrefix: string;
  /** @default every hub and partition of the prefix */
  owned?: readonly HubPartitions[];
}

/** The outbox backlog of one deployment (or of the whole table), in one query on the unrelayed-rows index. */
export async function outboxBacklog(db: PgQueryable, scope?: BacklogScope): Promise<OutboxBacklog> {
  const owned = scope?.owned ? ownedCondition(scope.owned, 2) : undefined;
  if (owned?.sql === 'false') return { rows: 0, oldestSeconds: 0 };
  const { rows } = await db.query(
    `SELECT count(*)::int AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
     FROM relayhub_outbox WHERE relayed_at IS NULL AND failed_at IS NULL
     ${scope ? 'AND channel_prefix = $1' : ''} ${owned ? `AND ${owned.sql}` : ''}`,
    scope ? [scope.channelPrefix, ...(owned?.params ?? [])] : [],
  );
  const row = rows[0] as { n: number; age: number } | undefined;
  return { rows: row?.n ?? 0, oldestSeconds: row?.age ?? 0 };
}
