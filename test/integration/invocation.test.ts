import { afterEach, describe, expect, it } from 'vitest';
import { HubError } from '../../src/errors.js';
import type { ConnectionContext, HubDefinition } from '../../src/hub/hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { ClientPool, record } from '../helpers/client.js';
import { RawClient, type WireMessage } from '../helpers/raw-ws.js';
import { startServer, signToken, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/invocation-test';

/** A promise the test settles by hand. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

describe('invocation', () => {
  const clients = new ClientPool();
  const raws: RawClient[] = [];
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.close();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  const basicHub = (calls: unknown[][] = []): HubDefinition => ({
    methods: {
      Add: (_ctx, a: number, b: number) => a + b,
      Nothing: () => undefined,
      Null: () => null,
      Later: async (_ctx, value: unknown) => {
        await Promise.resolve();
        return value;
      },
      Note: (_ctx, ...args: unknown[]) => {
        calls.push(args);
      },
    },
  });

  it('invokes a method and returns its result', async () => {
    server = await startServer({}, { [HUB]: basicHub() });
    const c = await clients.connect(server.url(HUB));
    expect(await c.invoke('Add', 2, 40)).toBe(42);
    expect(await c.invoke('Later', { deep: [1, 'x', null] })).toEqual({ deep: [1, 'x', null] });
    expect(await c.invoke('Null')).toBeNull();
  });

  it('completes a method returning undefined without a result', async () => {
    server = await startServer({}, { [HUB]: basicHub() });
    const c = await clients.connect(server.url(HUB));
    await expect(c.invoke('Nothing')).resolves.toBeUndefined();

    // note: on the wire the completion carries neither result nor error.
    const raw = await RawClient.open(server.url(HUB));
    raws.push(raw);
    raw.send({ type: 1, invocationId: '1', target: 'Nothing', arguments: [] });
    expect(await waitFor(() => raw.messages.find((m) => m.type === 3))).toEqual({
      type: 3,
      invocationId: '1',
    });
  });

  it('runs a send without answering it', async () => {
    const calls: unknown[][] = [];
    server = await startServer({}, { [HUB]: basicHub(calls) });
    const c = await clients.connect(server.url(HUB));
    await c.send('Note', 'official', 1);
    await waitFor(() => calls.length === 1);
    expect(calls[0]).toEqual(['official', 1]);

    const raw = await RawClient.open(server.url(HUB));
    raws.push(raw);
    // note: a send without invocationId, then an invoke in a later frame as a marker.
    raw.send({ type: 1, target: 'Note', arguments: ['raw'] });
    raw.send({ type: 1, target: 'Add', arguments: [1, 2], invocationId: 'marker' });
    await waitFor(() => raw.messages.some((m) => m.type === 3 && m.invocationId === 'marker'));
    expect(calls[1]).toEqual(['raw']);
    const completions = raw.messages.filter((m) => m.type === 3);
    expect(completions).toEqual([{ type: 3, invocationId: 'marker', result: 3 }]);
  });

  it('rejects an invoke of an unknown method with a clear error', async () => {
    server = await startServer({}, { [HUB]: basicHub() });
    const c = await clients.connect(server.url(HUB));
    await expect(c.invoke('NoSuchMethod', 1)).rejects.toThrow(
      "Failed to invoke 'NoSuchMethod': unknown hub method.",
    );
    // note: method names are case-sensitive, and inherited object keys are not methods.
    await expect(c.invoke('add', 1, 2)).rejects.toThrow('unknown hub method');
    await expect(c.invoke('toString')).rejects.toThrow('unknown hub method');
    await expect(c.invoke('__proto__')).rejects.toThrow('unknown hub method');
    // note: the connection survives.
    expect(await c.invoke('Add', 1, 1)).toBe(2);
  });

  it("sends a HubError's message, hides a plain Error's unless enableDetailedErrors", async () => {
    const hub: HubDefinition = {
      methods: {
        Refuse: () => {
          throw new HubError('You shall not pass.');
        },
        Crash: async () => {
          throw new Error('secret database detail');
        },
      },
    };
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const refused = await c.invoke('Refuse').catch((e: unknown) => e as Error);
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toContain('You shall not pass.');
    const crashed = await c.invoke('Crash').catch((e: unknown) => e as Error);
    expect((crashed as Error).message).toContain(
      "An unexpected error occurred invoking 'Crash' on the server.",
    );
    expect((crashed as Error).message).not.toContain('secret database detail');
    await server.close();

    server = await startServer({ enableDetailedErrors: true }, { [HUB]: hub });
    const d = await clients.connect(server.url(HUB));
    const detailed = await d.invoke('Crash').catch((e: unknown) => e as Error);
    expect((detailed as Error).message).toContain("An unexpected error occurred invoking 'Crash'");
    expect((detailed as Error).message).toContain('Error: secret database detail');
  });

  it('refuses an invocation when authorizeInvocation says no, without running the method', async () => {
    const ran: string[] = [];
    const seen: { method: string; args: unknown[]; connectionId: string }[] = [];
    const hub: HubDefinition = {
      authorizeInvocation: async (ctx, method, args) => {
        seen.push({ method, args, connectionId: ctx.connectionId });
        return method !== 'Secret';
      },
      methods: {
        Secret: () => {
          ran.push('Secret');
          return 'classified';
        },
        Public: () => {
          ran.push('Public');
          return 'hello';
        },
      },
    };
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    await expect(c.invoke('Secret', 'x')).rejects.toThrow(
      "Failed to invoke 'Secret' because user is unauthorized.",
    );
    expect(await c.invoke('Public')).toBe('hello');
    expect(ran).toEqual(['Public']);
    expect(seen).toEqual([
      { method: 'Secret', args: ['x'], connectionId: c.connectionId },
      { method: 'Public', args: [], connectionId: c.connectionId },
    ]);
  });

  it('calls onConnected and onDisconnected with the connection context and the error', async () => {
    const events: { event: string; connectionId: string; userId: string | undefined; error?: unknown }[] = [];
    const hub: HubDefinition = {
      onConnected: (ctx) => {
        events.push({ event: 'connected', connectionId: ctx.connectionId, userId: ctx.userId });
      },
      onDisconnected: (ctx, error) => {
        events.push({ event: 'disconnected', connectionId: ctx.connectionId, userId: ctx.userId, error });
      },
      methods: {
        Leave: (ctx) => ctx.abort('Kicked out.'),
      },
    };
    server = await startServer(
      { authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }) },
      { [HUB]: hub },
    );
    const alice = await clients.connect(server.url(HUB), { token: await signToken('alice') });
    const bob = await clients.connect(server.url(HUB), { token: await signToken('bob') });
    expect(events).toEqual([
      { event: 'connected', connectionId: alice.connectionId, userId: 'alice' },
      { event: 'connected', connectionId: bob.connectionId, userId: 'bob' },
    ]);

    // note: the client forgets its connectionId when it stops.
    const aliceId = alice.connectionId;
    const bobId = bob.connectionId;
    await alice.stop();
    await waitFor(() => events.length === 3);
    expect(events[2]).toEqual({
      event: 'disconnected',
      connectionId: aliceId,
      userId: 'alice',
      error: undefined,
    });

    const bobClosed = new Promise<Error | undefined>((resolve) => bob.onclose(resolve));
    await bob.send('Leave');
    await waitFor(() => events.length === 4);
    expect(events[3]).toMatchObject({ event: 'disconnected', connectionId: bobId, userId: 'bob' });
    expect(events[3]?.error).toBeInstanceOf(Error);
    expect((events[3]?.error as Error).message).toContain('Kicked out.');
    expect((await bobClosed)?.message).toContain('Kicked out.');
  });

  it('runs onConnected before the first invocation', async () => {
    const order: string[] = [];
    const hub: HubDefinition = {
      onConnected: async (ctx) => {
        await new Promise((resolve) => setImmediate(resolve));
        ctx.items.set('ready', true);
        order.push('connected');
      },
      methods: {
        Ready: (ctx) => {
          order.push('invoked');
          return ctx.items.get('ready') === true;
        },
      },
    };
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    expect(await c.invoke('Ready')).toBe(true);
    expect(order).toEqual(['connected', 'invoked']);
  });

  it('keeps an items map per connection', async () => {
    const hub: HubDefinition = {
      onConnected: (ctx) => {
        ctx.items.set('count', 0);
      },
      methods: {
        Set: (ctx, key: string, value: unknown) => {
          ctx.items.set(key, value);
        },
        Get: (ctx, key: string) => ctx.items.get(key) ?? null,
        Increment: (ctx) => {
          const next = (ctx.items.get('count') as number) + 1;
          ctx.items.set('count', next);
          return next;
        },
      },
    };
    server = await startServer({}, { [HUB]: hub });
    const a = await clients.connect(server.url(HUB));
    const b = await clients.connect(server.url(HUB));
    await a.invoke('Set', 'name', 'A');
    await b.invoke('Set', 'name', 'B');
    expect(await a.invoke('Get', 'name')).toBe('A');
    expect(await b.invoke('Get', 'name')).toBe('B');
    expect(await a.invoke('Increment')).toBe(1);
    expect(await a.invoke('Increment')).toBe(2);
    expect(await b.invoke('Increment')).toBe(1);
    expect(await b.invoke('Get', 'other')).toBeNull();
  });

  it('runs many sends from one caller in order and answers them in order', async () => {
    const received: number[] = [];
    const hub: HubDefinition = {
      methods: {
        Push: async (ctx: ConnectionContext, n: number) => {
          if (n % 7 === 0) await new Promise((resolve) => setImmediate(resolve));
          received.push(n);
          await ctx.clients.caller.send('pushed', n);
        },
        Count: () => received.length,
      },
    };
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const echoed = record(c, 'pushed');
    const count = 300;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < count; i++) sends.push(c.send('Push', i));
    await Promise.all(sends);
    expect(await c.invoke('Count')).toBe(count);
    const expected = Array.from({ length: count }, (_, i) => i);
    expect(received).toEqual(expected);
    await waitFor(() => echoed.length === count);
    expect(echoed.map(([n]) => n)).toEqual(expected);
  });

  describe('maximumParallelInvocationsPerClient', () => {
    const blockingHub = (log: string[], gates: Map<string, { promise: Promise<void> }>): HubDefinition => ({
      methods: {
        Block: async (_ctx, name: string) => {
          log.push(`start ${name}`);
          await gates.get(name)?.promise;
          log.push(`end ${name}`);
          return name;
        },
        Echo: (_ctx, value: unknown) => value,
      },
    });

    it('with 1, a second invocation waits until the first completes', async () => {
      const log: string[] = [];
      const gates = new Map([
        ['A', gate()],
        ['B', gate()],
      ]);
      server = await startServer(
        { maximumParallelInvocationsPerClient: 1 },
        { [HUB]: blockingHub(log, gates) },
      );
      const c = await clients.connect(server.url(HUB));
      const other = await clients.connect(server.url(HUB));
      let bDone = false;
      // note: invokes in one tick go out in one frame, so B reaches the server with A.
      const a = c.invoke('Block', 'A');
      const b = c.invoke('Block', 'B').then((value) => {
        bDone = true;
        return value;
      });
      await waitFor(() => log.includes('start A'));
      // note: a round trip of another client lets the server run several turns: B still waits.
      expect(await other.invoke('Echo', 'x')).toBe('x');
      expect(log).toEqual(['start A']);
      gates.get('B')?.open();
      expect(await other.invoke('Echo', 'y')).toBe('y');
      expect(log).toEqual(['start A']);
      expect(bDone).toBe(false);
      gates.get('A')?.open();
      expect(await a).toBe('A');
      expect(await b).toBe('B');
      expect(log).toEqual(['start A', 'end A', 'start B', 'end B']);
    });

    it('with 2, a second invocation runs while the first is still running', async () => {
      const log: string[] = [];
      const gates = new Map([
        ['A', gate()],
        ['B', gate()],
        ['C', gate()],
      ]);
      server = await startServer(
        { maximumParallelInvocationsPerClient: 2 },
        { [HUB]: blockingHub(log, gates) },
      );
      const c = await clients.connect(server.url(HUB));
      const other = await clients.connect(server.url(HUB));
      const a = c.invoke('Block', 'A');
      const b = c.invoke('Block', 'B');
      const third = c.invoke('Block', 'C');
      await waitFor(() => log.includes('start A') && log.includes('start B'));
      expect(await other.invoke('Echo', 'x')).toBe('x');
      // note: the third waits for one of the two slots.
      expect(log).toEqual(['start A', 'start B']);
      gates.get('B')?.open();
      expect(await b).toBe('B');
      await waitFor(() => log.includes('start C'));
      expect(log).toEqual(['start A', 'start B', 'end B', 'start C']);
      gates.get('A')?.open();
      gates.get('C')?.open();
      expect(await a).toBe('A');
      expect(await third).toBe('C');
    });
  });

  it('closes the connection on a malformed message and reports why', async () => {
    server = await startServer({}, { [HUB]: basicHub() });
    const raw = await RawClient.open(server.url(HUB));
    raws.push(raw);
    raw.ws.send('{"type":1,"target":\x1e');
    const close = (await waitFor(() => raw.messages.find((m) => m.type === 7))) as WireMessage;
    expect(close.allowReconnect).toBe(false);
    expect(typeof close.error).toBe('string');
    await waitFor(() => raw.closeCode !== undefined);
  });
});
