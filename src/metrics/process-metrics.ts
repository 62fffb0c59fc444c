import { collectDefaultMetrics, type Counter, type Registry } from 'prom-client';

/**
 * prom-client's default process metrics on `registry`, with the CPU counters counting from the start of
 * the process: prom-client counts CPU from the moment its collector is made, so a collector made at the
 * first scrape (as the hub server's is) would leave out everything the process used before it.
 */
export function collectProcessMetrics(registry: Registry): void {
  const before = process.cpuUsage();
  collectDefaultMetrics({ register: registry });
  const seconds = {
    process_cpu_user_seconds_total: before.user / 1e6,
    process_cpu_system_seconds_total: before.system / 1e6,
    process_cpu_seconds_total: (before.user + before.system) / 1e6,
  };
  for (const [name, value] of Object.entries(seconds)) {
    (registry.getSingleMetric(name) as Counter | undefined)?.inc(value);
  }
}
