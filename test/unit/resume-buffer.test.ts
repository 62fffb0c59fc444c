import { describe, expect, it } from 'vitest';
import { ResumeBuffer } from '../../src/hub/resume-buffer.js';

const frame = (n: number) => `{"type":1,"target":"m","arguments":[${n}]}\u001e`;

describe('ResumeBuffer: sent messages', () => {
  it('starts empty and resumable, replaying from id 1', () => {
    const buffer = new ResumeBuffer(1_000);
    expect(buffer.resumable).toBe(true);
    expect(buffer.bufferedBytes).toBe(0);
    expect(buffer.replay()).toEqual({ sequenceId: 1, frames: [] });
  });

  it('keeps every sent frame, in order, and counts their length', () => {
    const buffer = new ResumeBuffer(1_000);
    const frames = [frame(1), frame(2), frame(3)];
    for (const f of frames) buffer.sent(f);
    expect(buffer.replay()).toEqual({ sequenceId: 1, frames });
    expect(buffer.bufferedBytes).toBe(frames.join('').length);
  });

  it('drops the acknowledged frames and replays from the first unacknowledged id', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 1; i <= 5; i++) buffer.sent(frame(i));
    buffer.acked(2);
    expect(buffer.replay()).toEqual({ sequenceId: 3, frames: [frame(3), frame(4), frame(5)] });
    expect(buffer.bufferedBytes).toBe(frame(3).length + frame(4).length + frame(5).length);
    buffer.acked(4);
    expect(buffer.replay()).toEqual({ sequenceId: 5, frames: [frame(5)] });
  });

  it('ignores a stale ack (lower than one already applied)', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 1; i <= 3; i++) buffer.sent(frame(i));
    buffer.acked(2);
    buffer.acked(1);
    expect(buffer.replay()).toEqual({ sequenceId: 3, frames: [frame(3)] });
  });

  it('replays from the next id once everything is acknowledged, and numbers later frames on', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 1; i <= 3; i++) buffer.sent(frame(i));
    buffer.acked(3);
    expect(buffer.replay()).toEqual({ sequenceId: 4, frames: [] });
    expect(buffer.bufferedBytes).toBe(0);
    buffer.sent(frame(4));
    buffer.sent(frame(5));
    expect(buffer.replay()).toEqual({ sequenceId: 4, frames: [frame(4), frame(5)] });
    buffer.acked(4);
    expect(buffer.replay()).toEqual({ sequenceId: 5, frames: [frame(5)] });
  });

  it('stays resumable up to the limit exactly', () => {
    const buffer = new ResumeBuffer(20);
    buffer.sent('a'.repeat(10));
    buffer.sent('b'.repeat(10));
    expect(buffer.resumable).toBe(true);
    expect(buffer.bufferedBytes).toBe(20);
  });

  it('becomes non-resumable for good once the unacknowledged frames outgrow the limit', () => {
    const buffer = new ResumeBuffer(20);
    buffer.sent('a'.repeat(15));
    buffer.sent('b'.repeat(6));
    expect(buffer.resumable).toBe(false);
    expect(buffer.bufferedBytes).toBe(0);
    expect(buffer.replay().frames).toEqual([]);
    buffer.acked(2);
    buffer.sent('c');
    expect(buffer.resumable).toBe(false);
    expect(buffer.bufferedBytes).toBe(0);
    expect(buffer.replay().frames).toEqual([]);
  });

  it('does not overflow while acks keep the unacknowledged bytes under the limit', () => {
    const buffer = new ResumeBuffer(100);
    for (let i = 1; i <= 1_000; i++) {
      buffer.sent('x'.repeat(30));
      if (i % 2 === 0) buffer.acked(i);
    }
    expect(buffer.resumable).toBe(true);
    expect(buffer.replay()).toEqual({ sequenceId: 1_001, frames: [] });
  });
});

describe('ResumeBuffer: received messages', () => {
  it('numbers received messages from 1; none is a duplicate on a fresh connection', () => {
    const buffer = new ResumeBuffer(1_000);
    expect([buffer.received(), buffer.received(), buffer.received()]).toEqual([true, true, true]);
    expect(buffer.takeAck()).toBe(3);
  });

  it('after a Sequence, drops re-sent messages already processed and accepts the new ones', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 0; i < 5; i++) buffer.received();
    // note: the client re-sends its unacknowledged messages 3..5, then sends 6 and 7.
    expect(buffer.resetReceive(3)).toBe(true);
    expect([buffer.received(), buffer.received(), buffer.received()]).toEqual([false, false, false]);
    expect([buffer.received(), buffer.received()]).toEqual([true, true]);
    expect(buffer.takeAck()).toBe(7);
  });

  it('accepts a Sequence for exactly the next id (nothing to re-send)', () => {
    const buffer = new ResumeBuffer(1_000);
    buffer.received();
    buffer.received();
    expect(buffer.resetReceive(3)).toBe(true);
    expect(buffer.received()).toBe(true);
    expect(buffer.takeAck()).toBe(3);
  });

  it('accepts a Sequence from 1 on a fresh connection', () => {
    const buffer = new ResumeBuffer(1_000);
    expect(buffer.resetReceive(1)).toBe(true);
    expect(buffer.received()).toBe(true);
  });

  it('refuses a Sequence that leaves a gap (messages the server never saw) and changes nothing', () => {
    const fresh = new ResumeBuffer(1_000);
    expect(fresh.resetReceive(2)).toBe(false);
    const buffer = new ResumeBuffer(1_000);
    buffer.received();
    buffer.received();
    expect(buffer.resetReceive(4)).toBe(false);
    expect(buffer.resetReceive(100)).toBe(false);
    // note: numbering continues where it was: the next message is id 3, which is new.
    expect(buffer.received()).toBe(true);
    expect(buffer.takeAck()).toBe(3);
  });

  it('handles several reconnects in a row', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 0; i < 4; i++) buffer.received();
    expect(buffer.resetReceive(2)).toBe(true);
    expect(buffer.received()).toBe(false); // 2
    expect(buffer.resetReceive(3)).toBe(true);
    expect(buffer.received()).toBe(false); // 3
    expect(buffer.received()).toBe(false); // 4
    expect(buffer.received()).toBe(true); // 5
    expect(buffer.resetReceive(7)).toBe(false);
    expect(buffer.resetReceive(6)).toBe(true);
    expect(buffer.received()).toBe(true); // 6
  });
});

describe('ResumeBuffer: takeAck', () => {
  it('has nothing to ack before anything arrived', () => {
    expect(new ResumeBuffer(1_000).takeAck()).toBeUndefined();
  });

  it('acks the highest received id once, then only when something new arrived', () => {
    const buffer = new ResumeBuffer(1_000);
    buffer.received();
    buffer.received();
    expect(buffer.takeAck()).toBe(2);
    expect(buffer.takeAck()).toBeUndefined();
    buffer.received();
    expect(buffer.takeAck()).toBe(3);
    expect(buffer.takeAck()).toBeUndefined();
  });

  it('does not ack again for duplicates only', () => {
    const buffer = new ResumeBuffer(1_000);
    for (let i = 0; i < 3; i++) buffer.received();
    expect(buffer.takeAck()).toBe(3);
    buffer.resetReceive(2);
    buffer.received();
    buffer.received();
    expect(buffer.takeAck()).toBeUndefined();
    buffer.received();
    expect(buffer.takeAck()).toBe(4);
  });

  it('is independent of the sent side', () => {
    const buffer = new ResumeBuffer(1_000);
    buffer.sent(frame(1));
    buffer.acked(1);
    expect(buffer.takeAck()).toBeUndefined();
  });
});
