import { describe, expect, it } from 'vitest';
import { LogBudget, LOGGED_TEXT_LIMIT, newHubStats, truncateForLog } from '../../src/hub/client-errors.js';

describe('client error bookkeeping', () => {
  it('truncates client text for logs and replies, saying how long it was', () => {
    expect(truncateForLog('short')).toBe('short');
    const long = 'M'.repeat(32_000);
    const cut = truncateForLog(long);
    expect(cut.startsWith('M'.repeat(LOGGED_TEXT_LIMIT))).toBe(true);
    expect(cut.endsWith('… (32000 chars)')).toBe(true);
    expect(cut.length).toBeLessThan(LOGGED_TEXT_LIMIT + 20);
  });

  it('allows 5 lines per 10 s window and reports how many it suppressed', () => {
    const budget = new LogBudget();
    const taken = Array.from({ length: 8 }, (_, i) => budget.take(1_000 + i));
    expect(taken).toEqual([0, 0, 0, 0, 0, undefined, undefined, undefined]);
    expect(budget.take(11_000)).toBe(3);
    expect(budget.take(11_001)).toBe(0);
  });

  it('starts every counter at zero', () => {
    expect(newHubStats().clientErrors).toEqual({
      unknownMethod: 0,
      invalidArguments: 0,
      protocol: 0,
      limit: 0,
    });
  });
});
