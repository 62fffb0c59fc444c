import { describe, expect, it } from 'vitest';
import { TimerWheel } from '../../src/hub/timer-wheel.js';

/** A wheel of 100 ms slots starting at t=0 whose items are due at `deadline`, recording each visit. */
function wheel(next: (item: string, now: number) => number | undefined = () => undefined) {
  const visits: [string, number][] = [];
  const w = new TimerWheel<string>(
    100,
    (item, now) => {
      visits.push([item, now]);
      return next(item, now);
    },
    0,
  );
  return { w, visits };
}

describe('TimerWheel', () => {
  it('visits an item once its deadline has passed, not before', () => {
    const { w, visits } = wheel();
    w.schedule('a', 250);
    w.advance(200);
    expect(visits).toEqual([]);
    w.advance(299);
    expect(visits).toEqual([]);
    w.advance(300);
    expect(visits).toEqual([['a', 300]]);
    expect(w.size).toBe(0);
  });

  it('visits only the slots that came due: items due later are not touched', () => {
    const { w, visits } = wheel();
    for (let i = 0; i < 1_000; i++) w.schedule(`late${i}`, 10_000 + i);
    w.schedule('soon', 100);
    w.advance(150);
    expect(visits).toEqual([['soon', 150]]);
    expect(w.size).toBe(1_000);
  });

  it('files an item again at the deadline its visit returns', () => {
    const { w, visits } = wheel((_item, now) => (now < 500 ? now + 200 : undefined));
    w.schedule('a', 100);
    for (let t = 0; t <= 1_000; t += 50) w.advance(t);
    expect(visits.map(([, now]) => now)).toEqual([100, 300, 500]);
    expect(w.size).toBe(0);
  });

  it('keeps an item in its earlier slot when scheduled later, and moves it when scheduled earlier', () => {
    const { w, visits } = wheel();
    w.schedule('a', 500);
    w.schedule('a', 900);
    w.advance(500);
    expect(visits).toEqual([['a', 500]]);
    w.schedule('b', 900);
    w.schedule('b', 200);
    w.advance(600);
    expect(visits).toEqual([
      ['a', 500],
      ['b', 600],
    ]);
    w.advance(1_000);
    expect(visits).toHaveLength(2);
  });

  it('forgets a cancelled item', () => {
    const { w, visits } = wheel();
    w.schedule('a', 100);
    w.cancel('a');
    w.cancel('never scheduled');
    w.advance(1_000);
    expect(visits).toEqual([]);
    expect(w.size).toBe(0);
  });

  it('never files an item in a slot already visited: a past deadline is visited on the next tick', () => {
    const { w, visits } = wheel((_, now) => (now < 300 ? now - 1_000 : undefined));
    w.schedule('a', 100);
    w.advance(100);
    expect(visits).toEqual([['a', 100]]);
    w.advance(199);
    w.advance(200);
    expect(visits).toEqual([
      ['a', 100],
      ['a', 200],
    ]);
  });

  it('catches up after a long gap by visiting the slots it holds, each item once, in deadline order', () => {
    const { w, visits } = wheel((item, now) => (item === 'again' && now < 10_000_000 ? now + 50 : undefined));
    w.schedule('b', 5_000_000);
    w.schedule('a', 2_000);
    w.schedule('again', 3_000);
    w.schedule('later', 20_000_000);
    w.advance(9_000_000);
    expect(visits).toEqual([
      ['a', 9_000_000],
      ['again', 9_000_000],
      ['b', 9_000_000],
    ]);
    w.advance(9_000_100);
    expect(visits.at(-1)).toEqual(['again', 9_000_100]);
    expect(w.size).toBe(2);
  });

  it('ticks on its own once started, and stops', async () => {
    const seen: number[] = [];
    const w = new TimerWheel<string>(10, (_, now) => void seen.push(now));
    w.start();
    w.schedule('a', Date.now() + 20);
    const deadline = Date.now() + 2_000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    w.stop();
    expect(seen).toHaveLength(1);
    w.schedule('b', Date.now());
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toHaveLength(1);
  });

  it('keeps the slots where the items say, with the same visits and size as with its own map', () => {
    type Item = { name: string; slot: number | undefined };
    const items = ['a', 'b', 'c'].map((name): Item => ({ name, slot: undefined }));
    const visits: string[] = [];
    const w = new TimerWheel<Item>(
      100,
      (item, now) => {
        visits.push(`${item.name}@${now}`);
        return item.name === 'a' && now < 400 ? now + 200 : undefined;
      },
      0,
      {
        get: (item) => item.slot,
        set: (item, slot) => (item.slot = slot),
        delete: (item) => (item.slot = undefined),
      },
    );
    const [a, b, c] = items as [Item, Item, Item];
    w.schedule(a, 100);
    w.schedule(b, 900);
    w.schedule(b, 200);
    w.schedule(c, 300);
    expect(b.slot).toBe(2);
    expect(w.size).toBe(3);
    w.cancel(c);
    expect(c.slot).toBeUndefined();
    expect(w.size).toBe(2);
    for (let t = 0; t <= 1_000; t += 50) w.advance(t);
    expect(visits).toEqual(['a@100', 'b@200', 'a@300', 'a@500']);
    expect(w.size).toBe(0);
    expect(items.map((item) => item.slot)).toEqual([undefined, undefined, undefined]);
  });
});
