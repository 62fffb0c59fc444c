import type { PgQueryable } from './enqueue.js';

export interface OutboxBacklog {
  /** Committed rows not relayed yet (poison rows excepted). */
  rows: number;
  /** Age of the oldest of them in seconds; 0 when there is none. */
  oldestSeconds: number;
}

/** Which rows a backlog counts: one deployment's, optionally only some `(hub, partition)` pairs. */
export interface BacklogScope {
  channelPrefix: string;
  /** With `partitions`: the pairs `(hubs[i], partitions[i])`. @default every hub and partition */
  hubs?: readonly string[];
  partitions?: readonly number[];
}

/** The outbox backlog of one deployment (or of the whole table), in one query on the unrelayed-rows index. */
export async function outboxBacklog(db: PgQueryable, scope?: BacklogScope): Promise<OutboxBacklog> {
  if (scope?.partitions?.length === 0) return { rows: 0, oldestSeconds: 0 };
  const pairs = scope?.partitions !== undefined && scope.hubs !== undefined;
  const { rows } = await db.query(
    `SELECT count(*)::int AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
     FROM relayhub_outbox WHERE relayed_at IS NULL AND failed_at IS NULL
     ${scope ? 'AND channel_prefix = $1' : ''}
     ${pairs ? 'AND (hub, partition) IN (SELECT h, p FROM unnest($2::text[], $3::smallint[]) AS t(h, p))' : ''}`,
    scope ? [scope.channelPrefix, ...(pairs ? [scope.hubs, scope.partitions] : [])] : [],
  );
  const row = rows[0] as { n: number; age: number } | undefined;
  return { rows: row?.n ?? 0, oldestSeconds: row?.age ?? 0 };
}
