import { describe, expect, it, vi } from 'vitest';
import { HubError, RelayhubError } from '../../src/errors.js';
import { UploadStream } from '../../src/hub/upload-stream.js';

const collect = async (stream: AsyncIterable<unknown>): Promise<unknown[]> => {
  const items: unknown[] = [];
  for await (const item of stream) items.push(item);
  return items;
};

/** True when `promise` has settled after the pending microtasks ran. */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

describe('UploadStream', () => {
  it('yields the items pushed before it is read, in order, then ends', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    for (const item of [1, 'two', { three: 3 }, null]) stream.push(item);
    stream.end();
    expect(await collect(stream)).toEqual([1, 'two', { three: 3 }, null]);
  });

  it('hands an item straight to a reader that is waiting', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    const iterator = stream[Symbol.asyncIterator]();
    const next = iterator.next();
    expect(await isSettled(next)).toBe(false);
    stream.push('x');
    await expect(next).resolves.toEqual({ value: 'x', done: false });
  });

  it('interleaves pushes and reads', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    const reading = collect(stream);
    for (let i = 0; i < 5; i++) {
      stream.push(i);
      await Promise.resolve();
    }
    stream.end();
    expect(await reading).toEqual([0, 1, 2, 3, 4]);
  });

  it('ends a waiting reader when the client completes the stream', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    const next = stream[Symbol.asyncIterator]().next();
    stream.end();
    await expect(next).resolves.toEqual({ value: undefined, done: true });
  });

  it("fails a waiting reader with the client's error", async () => {
    const stream = new UploadStream('s7', 10, () => undefined);
    const next = stream[Symbol.asyncIterator]().next();
    stream.end('client broke');
    const error = await next.catch((e: unknown) => e);
    // note: exactly the client's text, as a HubError so that it reaches the caller.
    expect(error).toBeInstanceOf(HubError);
    expect((error as RelayhubError).code).toBe('ERR_HUB_METHOD');
    expect((error as RelayhubError).message).toBe('client broke');
  });

  it('delivers the items received before an error, then throws it', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    stream.push(1);
    stream.push(2);
    stream.end('boom');
    const items: unknown[] = [];
    const error = await (async () => {
      for await (const item of stream) items.push(item);
    })().catch((e: unknown) => e);
    expect(items).toEqual([1, 2]);
    expect((error as Error).message).toMatch(/boom/);
  });

  it('keeps failing after the error, and keeps ending after the end', async () => {
    const failed = new UploadStream('s1', 10, () => undefined);
    failed.end('boom');
    const it1 = failed[Symbol.asyncIterator]();
    await expect(it1.next()).rejects.toThrow(/boom/);
    await expect(it1.next()).rejects.toThrow(/boom/);
    const ended = new UploadStream('s2', 10, () => undefined);
    ended.end();
    const it2 = ended[Symbol.asyncIterator]();
    await expect(it2.next()).resolves.toEqual({ value: undefined, done: true });
    await expect(it2.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it('ignores pushes after the end and a second end', async () => {
    const stream = new UploadStream('s1', 10, () => undefined);
    stream.push('a');
    stream.end();
    stream.push('b');
    stream.end('late error');
    expect(await collect(stream)).toEqual(['a']);
  });

  it('reports full at capacity and calls onDrain when a read makes room', async () => {
    const onDrain = vi.fn();
    const stream = new UploadStream('s1', 2, onDrain);
    stream.push(1);
    expect(stream.isFull).toBe(false);
    stream.push(2);
    expect(stream.isFull).toBe(true);
    stream.push(3);
    expect(stream.isFull).toBe(true);
    const iterator = stream[Symbol.asyncIterator]();
    await expect(iterator.next()).resolves.toEqual({ value: 1, done: false });
    expect(onDrain).toHaveBeenCalledTimes(1);
    expect(stream.isFull).toBe(true);
    await expect(iterator.next()).resolves.toEqual({ value: 2, done: false });
    expect(onDrain).toHaveBeenCalledTimes(2);
    expect(stream.isFull).toBe(false);
    await expect(iterator.next()).resolves.toEqual({ value: 3, done: false });
    expect(onDrain).toHaveBeenCalledTimes(2);
  });

  it('does not call onDrain for reads that never found it full', async () => {
    const onDrain = vi.fn();
    const stream = new UploadStream('s1', 5, onDrain);
    stream.push(1);
    stream.push(2);
    stream.end();
    expect(await collect(stream)).toEqual([1, 2]);
    expect(onDrain).not.toHaveBeenCalled();
  });

  it('can be read only once', () => {
    const stream = new UploadStream('s1', 5, () => undefined);
    stream[Symbol.asyncIterator]();
    let caught: unknown;
    try {
      stream[Symbol.asyncIterator]();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(RelayhubError);
    expect((caught as RelayhubError).code).toBe('ERR_HUB_METHOD');
  });

  it('stops when the reader returns early: drops buffered items, ignores later ones, calls onDrain', async () => {
    const onDrain = vi.fn();
    const stream = new UploadStream('s1', 2, onDrain);
    stream.push(1);
    stream.push(2);
    stream.push(3);
    const iterator = stream[Symbol.asyncIterator]();
    await expect(iterator.next()).resolves.toEqual({ value: 1, done: false });
    onDrain.mockClear();
    await expect(iterator.return?.()).resolves.toEqual({ value: undefined, done: true });
    expect(onDrain).toHaveBeenCalledTimes(1);
    expect(stream.isFull).toBe(false);
    stream.push(4);
    expect(stream.isFull).toBe(false);
    await expect(iterator.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it('lets for-await break out early', async () => {
    const stream = new UploadStream('s1', 2, () => undefined);
    stream.push('a');
    stream.push('b');
    const seen: unknown[] = [];
    for await (const item of stream) {
      seen.push(item);
      break;
    }
    expect(seen).toEqual(['a']);
    stream.push('c');
    expect(stream.isFull).toBe(false);
  });
});
