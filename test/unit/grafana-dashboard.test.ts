import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryBackplane } from '../../src/backplane/memory/memory-backplane.js';
import { demoHub } from '../../src/example/demo-hub.js';
import { HubServer } from '../../src/hub/hub-server.js';
import { workerMetrics } from '../../src/metrics/worker-metrics.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';
import { silentLogger } from '../helpers/server.js';

interface Dashboard {
  panels: { title: string; targets: { expr: string }[] }[];
}

describe('deploy/grafana/relayhub.json', () => {
  it('queries only metrics that a hub or the worker exports', async () => {
    const dashboard = JSON.parse(
      readFileSync(new URL('../../deploy/grafana/relayhub.json', import.meta.url), 'utf8'),
    ) as Dashboard;
    const server = new HubServer({ backplane: new MemoryBackplane(), logger: silentLogger });
    server.mapHub('/hubs/demo', demoHub);
    const worker = new OutboxWorker({ maintenance: false });
    try {
      // note: every registered metric has a # TYPE line, also those without a sample yet (no lane here)
      const text = (await server.metrics()) + (await workerMetrics(worker).metrics());
      const exported = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
      const used = new Set<string>();
      for (const panel of dashboard.panels) {
        expect(panel.targets.length, panel.title).toBeGreaterThan(0);
        for (const target of panel.targets) {
          for (const [name] of target.expr.matchAll(/\b(relayhub|process|nodejs)_[a-z0-9_]+/g))
            used.add(name);
        }
      }
      const missing = [...used].filter((name) => !exported.has(name));
      expect(missing).toEqual([]);
      for (const name of [
        'relayhub_connections',
        'relayhub_reliable_lag_seconds',
        'relayhub_outbox_backlog',
      ]) {
        expect(used).toContain(name);
      }
    } finally {
      await worker.close();
      await server.close();
    }
  });
});
