import type pg from 'pg';
import { fnv1a, PARTITIONS } from '../outbox/schema.js';

// note: mixed into the first half of the two-int advisory lock key; the second is the partition number.
const LOCK_CLASS = 0x7265_6c62;

/**
 * The first half of the lock keys of one deployment's partitions of one hub: the relayhub tag mixed with
 * the outbox table's oid (advisory locks are per database, and outboxes in two schemas of one database
 * must not take each other's partitions), the channel prefix and the hub (two deployments, or two hubs
 * of one, each have all 64 partitions to share among their own workers).
 */
async function lockClassOf(client: pg.ClientBase, channelPrefix: string, hub: string): Promise<number> {
  const { rows } = await client.query<{ oid: string }>(`SELECT 'relayhub_outbox'::regclass::oid AS oid`);
  return fnv1a(`${LOCK_CLASS}:${rows[0]?.oid}:${channelPrefix}:${hub}`) | 0;
}

/**
 * Which outbox partitions of one `(channel prefix, hub)` this worker owns. Ownership is a session-level
 * advisory lock held on the worker's own connection, so it ends by itself when the worker dies or its
 * connection is cut; workers announce themselves in `relayhub_workers` per prefix and hub, and each takes a
 * fair share (⌈64 / live workers of that prefix and hub⌉).
 */
export class PartitionOwner {
  readonly #owned = new Set<number>();
  #lockClass: number | undefined;

  constructor(
    private readonly workerId: string,
    private readonly liveWindowMs: number,
    readonly channelPrefix: string,
    readonly hub: string,
  ) {}

  get owned(): number[] {
    return [...this.#owned].sort((a, b) => a - b);
  }

  /** Forgets every partition (the connection that held the locks is gone). */
  lost(): void {
    this.#owned.clear();
  }

  /** Announces this worker, then takes free partitions up to its share or gives back what is above it. */
  async rebalance(client: pg.ClientBase): Promise<void> {
    await client.query(
      `INSERT INTO relayhub_workers (id, channel_prefix, hub, seen_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (id, channel_prefix, hub) DO UPDATE SET seen_at = now()`,
      [this.workerId, this.channelPrefix, this.hub],
    );
    const { rows } = await client.query<{ live: string }>(
      `SELECT count(*) AS live FROM relayhub_workers
       WHERE channel_prefix = $1 AND hub = $2 AND seen_at > now() - make_interval(secs => $3)`,
      [this.channelPrefix, this.hub, this.liveWindowMs / 1000],
    );
    const share = Math.ceil(PARTITIONS / Math.max(1, Number(rows[0]?.live ?? 1)));
    const lockClass = (this.#lockClass ??= await lockClassOf(client, this.channelPrefix, this.hub));
    for (const partition of this.owned.reverse()) {
      if (this.#owned.size <= share) break;
      await client.query('SELECT pg_advisory_unlock($1, $2)', [lockClass, partition]);
      this.#owned.delete(partition);
    }
    // note: start at a worker-specific partition so that workers starting together do not collide.
    const start = fnv1a(this.workerId) % PARTITIONS;
    for (let i = 0; i < PARTITIONS && this.#owned.size < share; i++) {
      const partition = (start + i) % PARTITIONS;
      if (this.#owned.has(partition)) continue;
      const { rows: got } = await client.query<{ locked: boolean }>(
        'SELECT pg_try_advisory_lock($1, $2) AS locked',
        [lockClass, partition],
      );
      if (got[0]?.locked) this.#owned.add(partition);
    }
  }

  /** Gives every partition back (graceful shutdown) and withdraws the worker. */
  async release(client: pg.ClientBase): Promise<void> {
    for (const partition of this.#owned)
      await client.query('SELECT pg_advisory_unlock($1, $2)', [this.#lockClass, partition]);
    this.#owned.clear();
    await client.query('DELETE FROM relayhub_workers WHERE id = $1 AND channel_prefix = $2 AND hub = $3', [
      this.workerId,
      this.channelPrefix,
      this.hub,
    ]);
  }
}
