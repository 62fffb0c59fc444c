import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { collectProcessMetrics } from '../../src/metrics/process-metrics.js';

describe('collectProcessMetrics', () => {
  it('counts CPU from the start of the process, not from when the collector was made', async () => {
    const before = process.cpuUsage();
    const registry = new Registry();
    collectProcessMetrics(registry);
    const text = await registry.metrics();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('process_cpu_user_seconds_total')).toBeGreaterThanOrEqual(before.user / 1e6);
    expect(value('process_cpu_system_seconds_total')).toBeGreaterThanOrEqual(before.system / 1e6);
    expect(value('process_cpu_seconds_total')).toBeGreaterThanOrEqual((before.user + before.system) / 1e6);
  });
});
