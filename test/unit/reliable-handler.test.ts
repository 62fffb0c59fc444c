import { describe, expect, it } from 'vitest';
import { onReliable } from '../../src/client/reliable-handler.js';

type Handler = (...args: never[]) => unknown;

function fakeConnection() {
  const handlers = new Map<string, Handler>();
  return {
    on: (target: string, handler: Handler) => void handlers.set(target, handler),
    deliver: (target: string, ...args: unknown[]) =>
      (handlers.get(target) as (...a: unknown[]) => unknown)(...args),
  };
}

describe('onReliable', () => {
  it('runs the handler once per message id and acknowledges duplicates without running it', async () => {
    const connection = fakeConnection();
    const seen: unknown[] = [];
    onReliable(connection, 'note', (meta, text: string) => void seen.push([meta.offset, text]));
    expect(await connection.deliver('note', 'a', { messageId: 'm1', offset: 1 })).toBe(true);
    expect(await connection.deliver('note', 'a', { messageId: 'm1', offset: 1 })).toBe(true);
    expect(await connection.deliver('note', 'b', { messageId: 'm2', offset: 2 })).toBe(true);
    expect(seen).toEqual([
      [1, 'a'],
      [2, 'b'],
    ]);
  });

  it('nacks (throws) when the handler throws, and runs it again on redelivery', async () => {
    const connection = fakeConnection();
    let calls = 0;
    onReliable(connection, 'note', () => {
      calls++;
      if (calls === 1) throw new Error('not yet');
    });
    await expect(connection.deliver('note', { messageId: 'm1', offset: 1 })).rejects.toThrow('not yet');
    await expect(connection.deliver('note', { messageId: 'm1', offset: 1 })).resolves.toBe(true);
    expect(calls).toBe(2);
  });

  it('forgets the oldest ids past `remember`', async () => {
    const connection = fakeConnection();
    let calls = 0;
    onReliable(connection, 'note', () => void calls++, { remember: 2 });
    for (const id of ['a', 'b', 'c', 'a']) await connection.deliver('note', { messageId: id, offset: 1 });
    expect(calls).toBe(4);
  });

  it('refuses a message without metadata', async () => {
    const connection = fakeConnection();
    onReliable(connection, 'note', () => undefined);
    await expect(connection.deliver('note', 'plain')).rejects.toThrow('metadata');
  });
});
