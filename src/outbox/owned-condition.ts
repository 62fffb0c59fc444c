/** Some partitions of one hub's outbox rows (what a worker owns of it). */
export interface HubPartitions {
  hub: string;
  partitions: readonly number[];
}

/**
 * The SQL condition "the row is in one of these hubs' partitions", with its parameters numbered from
 * `firstParam`: `(hub = $n AND partition = ANY($n+1)) OR …`, a shape the planner answers from the outbox's
 * indexes (a join against unnested pairs made it scan the whole table). Hubs without partitions are left
 * out; none at all is `false`.
 */
export function ownedCondition(
  owned: readonly HubPartitions[],
  firstParam: number,
): { sql: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  for (const { hub, partitions } of owned) {
    if (partitions.length === 0) continue;
    const n = firstParam + params.length;
    parts.push(`(hub = $${n} AND partition = ANY($${n + 1}::smallint[]))`);
    params.push(hub, partitions);
  }
  return { sql: parts.length === 0 ? 'false' : `(${parts.join(' OR ')})`, params };
}
