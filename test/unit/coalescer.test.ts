import { afterEach, describe, expect, it, vi } from 'vitest';
import { Coalescer } from '../../src/backplane/streams/coalescer.js';

describe('Coalescer', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('hands items over together, delayMs after the first, or at once when max are waiting', () => {
    vi.useFakeTimers();
    const batches: number[][] = [];
    const coalescer = new Coalescer<number>(3, 5, (items) => batches.push(items));
    coalescer.push(1);
    vi.advanceTimersByTime(4);
    coalescer.push(2);
    expect(batches).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(batches).toEqual([[1, 2]]);
    coalescer.push(3, 4, 5);
    expect(batches).toEqual([
      [1, 2],
      [3, 4, 5],
    ]);
    vi.advanceTimersByTime(10);
    expect(batches).toHaveLength(2);
  });

  it('flush hands over what waits now; clear drops it', () => {
    vi.useFakeTimers();
    const batches: string[][] = [];
    const coalescer = new Coalescer<string>(10, 5, (items) => batches.push(items));
    coalescer.flush();
    coalescer.push('a');
    coalescer.flush();
    coalescer.push('b');
    coalescer.clear();
    vi.advanceTimersByTime(10);
    expect(batches).toEqual([['a']]);
  });
});
