import type { PgQueryable } from './enqueue.js';

export interface OutboxBacklog {
  /** Committed rows not relayed yet (poison rows excepted). */
  rows: number;
  /** Age of the oldest of them in seconds; 0 when there is none. */
  oldestSeconds: number;
}

/** The outbox backlog, of some partitions or of all (one query, on the unrelayed-rows index). */
export async function outboxBacklog(db: PgQueryable, partitions?: readonly number[]): Promise<OutboxBacklog> {
  if (partitions?.length === 0) return { rows: 0, oldestSeconds: 0 };
  const { rows } = await db.query(
    `SELECT count(*)::int AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
     FROM relayhub_outbox WHERE relayed_at IS NULL AND failed_at IS NULL
     ${partitions ? 'AND partition = ANY($1)' : ''}`,
    partitions ? [partitions] : [],
  );
  const row = rows[0] as { n: number; age: number } | undefined;
  return { rows: row?.n ?? 0, oldestSeconds: row?.age ?? 0 };
}
