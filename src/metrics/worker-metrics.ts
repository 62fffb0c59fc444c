import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from './process-metrics.js';
import type { OutboxWorker } from '../worker/outbox-worker.js';
import type { MetricsCollector } from './hub-metrics.js';

/** The outbox worker's metrics: backlog and oldest unrelayed row (one query per scrape), rows relayed. */
export function workerMetrics(worker: OutboxWorker): Pick<MetricsCollector, 'registry' | 'metrics'> {
  const registry = new Registry();
  collectProcessMetrics(registry);
  let backlog = { rows: 0, oldestSeconds: 0 };
  new Gauge({
    name: 'relayhub_outbox_backlog',
    help: "Committed outbox rows not relayed yet, in this worker's partitions.",
    registers: [registry],
    collect() {
      this.set(backlog.rows);
    },
  });
  new Gauge({
    name: 'relayhub_outbox_oldest_unrelayed_seconds',
    help: "Age of the oldest committed, unrelayed outbox row in this worker's partitions.",
    registers: [registry],
    collect() {
      this.set(backlog.oldestSeconds);
    },
  });
  const counted = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counted(
    'relayhub_outbox_relayed_total',
    'Outbox rows relayed to the reliable lane.',
    () => worker.stats.relayed,
  );
  counted('relayhub_outbox_acked_total', 'Outbox rows whose ack was recorded.', () => worker.stats.acked);
  counted('relayhub_outbox_poison_total', 'Outbox rows set aside as poison.', () => worker.stats.poison);
  return {
    registry,
    async metrics() {
      // note: Postgres away: the backlog keeps its last value rather than failing the scrape.
      backlog = await worker.backlog().catch(() => backlog);
      return registry.metrics();
    },
  };
}
