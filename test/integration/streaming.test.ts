import { type HubConnection, type ISubscription, Subject } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import { HubError } from '../../src/errors.js';
import type { ConnectionContext, HubDefinition } from '../../src/hub/hub.js';
import { ClientPool } from '../helpers/client.js';
import { HubServer } from '../../src/hub/hub-server.js';
import { silentLogger, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/streaming-test';

interface Collected {
  items: unknown[];
  completed: boolean;
  error: Error | undefined;
  subscription: ISubscription<unknown>;
}

function collect(connection: HubConnection, method: string, ...args: unknown[]): Collected {
  const out = { items: [] as unknown[], completed: false, error: undefined as Error | undefined };
  const subscription = connection.stream(method, ...args).subscribe({
    next: (item) => void out.items.push(item),
    complete: () => {
      out.completed = true;
    },
    error: (error) => {
      out.error = error as Error;
    },
  });
  return Object.assign(out, { subscription });
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('streaming', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  /** What the endless stream saw of its own end. */
  const endless = { finallyRan: 0, signalAborted: 0, yielded: 0 };

  /** How often the methods that a mismatched call must not run did run. */
  const ran = { count: 0, notAStream: 0, declared: 0 };
  /** What the hub's iterator threw when the client errored its upload. */
  const uploadErrors: Error[] = [];

  const hub: HubDefinition = {
    streams: ['Declared'],
    methods: {
      Count: async function* (_ctx, n: number) {
        ran.count++;
        for (let i = 1; i <= n; i++) {
          if (i % 3 === 0) await nextTurn();
          yield { i, text: `item ${i}` };
        }
      },
      Empty: async function* () {
        // yields nothing
      },
      FailAfter: async function* (_ctx, n: number, hubError: boolean) {
        for (let i = 1; i <= n; i++) yield i;
        if (hubError) throw new HubError('stream broke on purpose');
        throw new Error('hidden detail');
      },
      Endless: async function* (ctx: ConnectionContext) {
        ctx.signal.addEventListener('abort', () => endless.signalAborted++, { once: true });
        try {
          for (let i = 0; ; i++) {
            endless.yielded++;
            yield i;
            await new Promise((resolve) => setTimeout(resolve, 2));
          }
        } finally {
          endless.finallyRan++;
        }
      },
      SumOrReport: async (_ctx, numbers: AsyncIterable<number>) => {
        try {
          for await (const _ of numbers);
        } catch (error) {
          uploadErrors.push(error as Error);
          throw error;
        }
      },
      Sum: async (_ctx, numbers: AsyncIterable<number>) => {
        let sum = 0;
        for await (const n of numbers) sum += n;
        return sum;
      },
      Join: async (_ctx, separator: string, a: AsyncIterable<string>, b: AsyncIterable<string>) => {
        const all: string[] = [];
        for await (const x of a) all.push(x);
        for await (const x of b) all.push(x);
        return all.join(separator);
      },
      Doubled: async function* (_ctx, numbers: AsyncIterable<number>) {
        for await (const n of numbers) yield n * 2;
      },
      NotAStream: () => {
        ran.notAStream++;
        return 42;
      },
      Declared: (_ctx, n: number) => {
        ran.declared++;
        return (async function* () {
          for (let i = 0; i < n; i++) yield i;
        })();
      },
      Echo: (_ctx, value: unknown) => value,
    },
  };

  it('streams items from an async generator in order, then completes', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'Count', 25);
    await waitFor(() => s.completed || s.error);
    expect(s.error).toBeUndefined();
    expect(s.items).toEqual(Array.from({ length: 25 }, (_, k) => ({ i: k + 1, text: `item ${k + 1}` })));
  });

  it('completes an empty stream', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'Empty');
    await waitFor(() => s.completed || s.error);
    expect(s.error).toBeUndefined();
    expect(s.items).toEqual([]);
  });

  it('reports an error thrown mid-stream to the subscriber after the items before it', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'FailAfter', 3, true);
    await waitFor(() => s.completed || s.error);
    expect(s.completed).toBe(false);
    expect(s.items).toEqual([1, 2, 3]);
    expect(s.error?.message).toContain('stream broke on purpose');

    const hidden = collect(c, 'FailAfter', 1, false);
    await waitFor(() => hidden.completed || hidden.error);
    expect(hidden.error?.message).toContain(
      "An error occurred on the server while streaming results from 'FailAfter'",
    );
    expect(hidden.error?.message).not.toContain('hidden detail');
    // note: the connection survives a failed stream.
    expect(await c.invoke('Echo', 'still here')).toBe('still here');
  });

  it('stops the generator when the client disposes its subscription', async () => {
    endless.finallyRan = 0;
    endless.signalAborted = 0;
    endless.yielded = 0;
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'Endless');
    await waitFor(() => s.items.length >= 5);
    s.subscription.dispose();
    await waitFor(() => endless.finallyRan === 1 && endless.signalAborted === 1);
    const yielded = endless.yielded;
    // note: the connection stays up and the generator yields no more.
    expect(await c.invoke('Echo', 1)).toBe(1);
    expect(await c.invoke('Echo', 2)).toBe(2);
    expect(endless.yielded).toBe(yielded);
    expect(s.error).toBeUndefined();
    expect(s.items).toEqual(Array.from({ length: s.items.length }, (_, k) => k));
  });

  it('stops the generator when the connection ends', async () => {
    endless.finallyRan = 0;
    endless.signalAborted = 0;
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'Endless');
    await waitFor(() => s.items.length >= 3);
    await c.stop();
    await waitFor(() => endless.finallyRan === 1 && endless.signalAborted === 1);
  });

  it('does not block other invocations while a stream runs', async () => {
    endless.finallyRan = 0;
    server = await startServer({ maximumParallelInvocationsPerClient: 1 }, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const s = collect(c, 'Endless');
    await waitFor(() => s.items.length >= 1);
    expect(await c.invoke('Echo', 'parallel')).toBe('parallel');
    s.subscription.dispose();
    await waitFor(() => endless.finallyRan === 1);
  });

  it('hands a client-to-server stream (Subject) to the method as an AsyncIterable', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const subject = new Subject<number>();
    const sum = c.invoke('Sum', subject);
    for (let i = 1; i <= 100; i++) subject.next(i);
    subject.complete();
    expect(await sum).toBe(5050);
  });

  it('takes items over time, more than the stream buffer holds, without blocking other invocations', async () => {
    // note: with one slot per client (the default), an upload must not hold the slot while it waits.
    server = await startServer(
      { streamBufferCapacity: 2, maximumParallelInvocationsPerClient: 1 },
      { [HUB]: hub },
    );
    const c = await clients.connect(server.url(HUB));
    const subject = new Subject<number>();
    const sum = c.invoke('Sum', subject);
    subject.next(1);
    await nextTurn();
    // note: a round trip proves the server is not blocked while the upload is open.
    expect(await c.invoke('Echo', 'between')).toBe('between');
    for (let i = 2; i <= 50; i++) subject.next(i);
    subject.complete();
    expect(await sum).toBe(1275);
  });

  it('hands two upload streams to the method in order after its arguments', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const first = new Subject<string>();
    const second = new Subject<string>();
    // note: the official client misses an observable placed right after another one, so split them.
    const joined = c.invoke('Join', first, '-', second);
    first.next('a');
    second.next('c');
    first.next('b');
    first.complete();
    second.next('d');
    second.complete();
    expect(await joined).toBe('a-b-c-d');
  });

  it('fails the invocation when the client errors its upload stream', async () => {
    server = await startServer({ enableDetailedErrors: true }, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const subject = new Subject<number>();
    const sum = c.invoke('Sum', subject);
    subject.next(1);
    subject.error(new Error('client gave up'));
    await expect(sum).rejects.toThrow('client gave up');
  });

  it("throws the client's exact error text in the hub's iterator, and it reaches the caller as HubException", async () => {
    uploadErrors.length = 0;
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const subject = new Subject<number>();
    const sum = c.invoke('SumOrReport', subject);
    subject.next(1);
    subject.error(new Error('client gave up'));
    // note: no detailed errors: the text still arrives, because it is the client's own.
    await expect(sum).rejects.toThrow(
      "An unexpected error occurred invoking 'SumOrReport' on the server. HubException: client gave up",
    );
    expect(uploadErrors.map((e) => e.message)).toEqual(['client gave up']);
  });

  it('streams both ways: an upload into a server stream', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const subject = new Subject<number>();
    const s = collect(c, 'Doubled', subject);
    subject.next(1);
    subject.next(2);
    subject.next(3);
    subject.complete();
    await waitFor(() => s.completed || s.error);
    expect(s.error).toBeUndefined();
    expect(s.items).toEqual([2, 4, 6]);
  });

  it('refuses a streams list that names no method, when the hub is mapped', () => {
    expect(() =>
      new HubServer({ logger: silentLogger }).mapHub(HUB, { methods: {}, streams: ['Nope'] }),
    ).toThrow("Hub '/hubs/streaming-test' lists 'Nope' in streams, but has no such method.");
  });

  it("refuses an invoke of a streaming method, and a stream of a non-streaming one, with SignalR's errors, without running them", async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    ran.count = ran.notAStream = ran.declared = 0;
    await expect(c.invoke('Count', 3)).rejects.toThrow(
      "The client attempted to invoke the streaming 'Count' method with a non-streaming invocation.",
    );
    // note: a method declared in `streams` (not an async generator) is known to stream, too.
    await expect(c.invoke('Declared', 3)).rejects.toThrow(
      "The client attempted to invoke the streaming 'Declared' method with a non-streaming invocation.",
    );
    const s = collect(c, 'NotAStream');
    await waitFor(() => s.completed || s.error);
    expect(s.error?.message).toBe(
      "The client attempted to invoke the non-streaming 'NotAStream' method with a streaming invocation.",
    );
    expect(s.items).toEqual([]);
    expect(ran).toEqual({ count: 0, notAStream: 0, declared: 0 });
    const declared = collect(c, 'Declared', 3);
    await waitFor(() => declared.completed || declared.error);
    expect(declared.items).toEqual([0, 1, 2]);
    expect(ran.declared).toBe(1);
  });
});
