import { describe, expect, it } from 'vitest';
import type { ConnectionContext, HubDefinition } from '../../src/hub/hub.js';
import { countInvocations, HubCounters } from '../../src/metrics/hub-stats.js';

const ctx = {} as ConnectionContext;

describe('countInvocations', () => {
  it('counts returns and throws, sync and async, per registered method, and passes values through', async () => {
    const stats = new HubCounters();
    const definition: HubDefinition = {
      methods: {
        Sync: (_ctx, n: number) => n + 1,
        Async: async (_ctx, n: number) => n * 2,
        Throws: () => {
          throw new Error('no');
        },
        Rejects: async () => {
          throw new Error('later');
        },
      },
    };
    const counted = countInvocations(definition, stats);
    expect(counted.methods.Sync!(ctx, 1)).toBe(2);
    expect(await counted.methods.Async!(ctx, 2)).toBe(4);
    expect(() => counted.methods.Throws!(ctx)).toThrow('no');
    await expect(counted.methods.Rejects!(ctx)).rejects.toThrow('later');
    expect(Object.fromEntries(stats.invocations)).toEqual({
      Sync: { ok: 1, error: 0 },
      Async: { ok: 1, error: 0 },
      Throws: { ok: 0, error: 1 },
      Rejects: { ok: 0, error: 1 },
    });
    expect(definition.methods.Sync!(ctx, 1)).toBe(2); // the app's definition is left alone
    expect(stats.invocations.get('Sync')).toEqual({ ok: 1, error: 0 });
  });
});
