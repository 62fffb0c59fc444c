import type { HubConnection } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool, record } from '../helpers/client.js';
import { negotiate, RawClient } from '../helpers/raw-ws.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/stateful-test';

interface Events {
  reconnecting: (Error | undefined)[];
  reconnected: (string | undefined)[];
  closed: (Error | undefined)[];
}

function watch(connection: HubConnection): Events {
  const events: Events = { reconnecting: [], reconnected: [], closed: [] };
  connection.onreconnecting((error) => events.reconnecting.push(error));
  connection.onreconnected((id) => events.reconnected.push(id));
  connection.onclose((error) => events.closed.push(error));
  return events;
}

/** Server-side bookkeeping of the test hub. */
interface Observed {
  connected: string[];
  disconnected: { connectionId: string; error: Error | undefined }[];
  recorded: number[];
  gates: Map<string, () => void>;
}

function statefulHub(observed: Observed): HubDefinition {
  return {
    onConnected: (ctx) => {
      observed.connected.push(ctx.connectionId);
    },
    onDisconnected: (ctx, error) => {
      observed.disconnected.push({ connectionId: ctx.connectionId, error });
    },
    methods: {
      /** Completes when the test opens the gate `name`. */
      Wait: (_ctx, name: string) =>
        new Promise<string>((resolve) => observed.gates.set(name, () => resolve(`done ${name}`))),
      Record: (_ctx, n: number) => {
        observed.recorded.push(n);
        return n;
      },
      WhoAmI: (ctx) => ctx.connectionId,
    },
  };
}

const newObserved = (): Observed => ({ connected: [], disconnected: [], recorded: [], gates: new Map() });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('stateful reconnect', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let proxy: TcpProxy | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await proxy?.close();
    proxy = undefined;
    await server?.close();
    server = undefined;
  });

  it('negotiates it and shakes hands with protocol version 2', async () => {
    const observed = newObserved();
    server = await startServer({}, { [HUB]: statefulHub(observed) });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), { statefulReconnect: true });
    expect(await c.invoke('WhoAmI')).toBe(c.connectionId);
    expect(proxy.clientText).toContain('useStatefulReconnect=true');
    expect(proxy.clientWebSocketTexts()[0]).toBe('{"protocol":"json","version":2}\x1e');

    const plain = await clients.connect(proxy.url(HUB));
    expect(await plain.invoke('WhoAmI')).toBe(plain.connectionId);
    const handshakes = proxy.clientWebSocketTexts().filter((t) => t.includes('"protocol"'));
    expect(handshakes).toEqual([
      '{"protocol":"json","version":2}\x1e',
      '{"protocol":"json","version":1}\x1e',
    ]);
  });

  it('acks what it received and numbers what it sends (raw version 2 client)', async () => {
    server = await startServer({}, { [HUB]: statefulHub(newObserved()) });
    const { body } = await negotiate(server.url(HUB), '?negotiateVersion=1&useStatefulReconnect=true');
    expect(body.useStatefulReconnect).toBe(true);
    const raw = await RawClient.open(`${server.url(HUB)}?id=${body.connectionToken as string}`, {
      version: 2,
    });
    try {
      expect(raw.handshake).toEqual({});
      raw.send(
        { type: 1, invocationId: '1', target: 'Record', arguments: [1] },
        { type: 1, invocationId: '2', target: 'Record', arguments: [2] },
      );
      // note: the server acks the two sequenced messages within about a second.
      const ack = await waitFor(() => raw.messages.find((m) => m.type === 8), { timeoutMs: 3_000 });
      expect(ack).toEqual({ type: 8, sequenceId: 2 });
      expect(raw.messages.filter((m) => m.type === 3)).toEqual([
        { type: 3, invocationId: '1', result: 1 },
        { type: 3, invocationId: '2', result: 2 },
      ]);
    } finally {
      raw.close();
    }
  });

  it('survives dropped sockets: every message once and in order, no reconnecting event, pending invokes kept', async () => {
    const observed = newObserved();
    server = await startServer({}, { [HUB]: statefulHub(observed) });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), {
      statefulReconnect: true,
      reconnectDelays: [0, 100],
    });
    const events = watch(c);
    const ticks = record(c, 'tick');
    const connectionId = c.connectionId as string;
    const toClient = server.server.hub(HUB).clients.client(connectionId);

    // note: an invocation that is still running while the socket drops.
    const pending = c.invoke('Wait', 'A');
    await waitFor(() => observed.gates.has('A'));

    const total = 600;
    const drops = new Set([150, 400]);
    const acceptedBefore = proxy.accepted;
    const invoked: Promise<unknown>[] = [];
    for (let i = 0; i < total; i++) {
      if (drops.has(i)) {
        proxy.dropAll();
        // note: the client invokes while its socket is gone; it buffers and resends.
        for (let k = 0; k < 5; k++) invoked.push(c.invoke('Record', invoked.length));
      }
      await toClient.send('tick', i, `payload ${i}`);
      if (i % 20 === 0) await nextTurn();
    }
    // note: the invocations wait behind the running one (one slot per client), which completes now.
    observed.gates.get('A')?.();
    expect(await pending).toBe('done A');
    expect(await Promise.all(invoked)).toEqual(range(10));

    await waitFor(() => ticks.length >= total, { message: 'every tick arrived' });
    expect(ticks.map(([i]) => i)).toEqual(range(total));
    expect(ticks.every(([i, payload]) => payload === `payload ${String(i)}`)).toBe(true);
    // note: the server ran each client message once.
    expect(observed.recorded).toEqual(range(10));
    // note: the sockets really were replaced, without a new negotiate or connection.
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
    expect(events).toEqual({ reconnecting: [], reconnected: [], closed: [] });
    expect(c.state).toBe('Connected');
    expect(c.connectionId).toBe(connectionId);
    expect(observed.connected).toEqual([connectionId]);
    expect(observed.disconnected).toEqual([]);
    expect(await c.invoke('WhoAmI')).toBe(connectionId);
  });

  it('resumes when the client comes back before the server noticed its old socket dropped', async () => {
    const observed = newObserved();
    server = await startServer({}, { [HUB]: statefulHub(observed) });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), { statefulReconnect: true, reconnectDelays: [0, 100] });
    const events = watch(c);
    const ticks = record(c, 'tick');
    const connectionId = c.connectionId as string;
    const toClient = server.server.hub(HUB).clients.client(connectionId);
    const acceptedBefore = proxy.accepted;
    for (let i = 0; i < 100; i++) {
      // note: the server's socket stays open: it keeps writing into the void until the client is back.
      if (i === 30) proxy.dropClientSides();
      await toClient.send('tick', i);
      if (i % 10 === 0) await nextTurn();
    }
    await waitFor(() => ticks.length >= 100, { message: 'every tick arrived' });
    expect(ticks.map(([i]) => i)).toEqual(range(100));
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
    expect(events).toEqual({ reconnecting: [], reconnected: [], closed: [] });
    expect(c.connectionId).toBe(connectionId);
    expect(await c.invoke('WhoAmI')).toBe(connectionId);
    expect(observed.connected).toEqual([connectionId]);
    expect(observed.disconnected).toEqual([]);
  });

  it('replays what was sent while no socket was attached', async () => {
    const observed = newObserved();
    server = await startServer({}, { [HUB]: statefulHub(observed) });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), { statefulReconnect: true, reconnectDelays: [0, 100] });
    const events = watch(c);
    const ticks = record(c, 'tick');
    const toClient = server.server.hub(HUB).clients.client(c.connectionId as string);
    await toClient.send('tick', 0);
    await waitFor(() => ticks.length === 1);

    // note: the client's reconnect is held at the proxy while the server keeps sending.
    proxy.hold();
    proxy.dropAll();
    await waitFor(() => proxy?.heldCount === 1, { message: 'the client tried the same connection again' });
    for (let i = 1; i <= 50; i++) await toClient.send('tick', i);
    expect(ticks).toHaveLength(1);
    proxy.release();
    await waitFor(() => ticks.length === 51);
    expect(ticks.map(([i]) => i)).toEqual(range(51));
    expect(events.reconnecting).toEqual([]);
    expect(observed.disconnected).toEqual([]);
  });

  it('falls back to a full reconnect once the server ended the session', async () => {
    const observed = newObserved();
    // note: a short handshake timeout makes the heartbeat (and so the session timeout) check often.
    server = await startServer(
      { statefulReconnectTimeoutMs: 200, handshakeTimeoutMs: 1_000 },
      { [HUB]: statefulHub(observed) },
    );
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), {
      statefulReconnect: true,
      reconnectDelays: [0, 50, 100],
    });
    const events = watch(c);
    const firstId = c.connectionId as string;

    proxy.hold();
    proxy.dropAll();
    await waitFor(() => proxy?.heldCount === 1, { message: 'the client tried the same connection again' });
    await waitFor(() => observed.disconnected.length === 1, { message: 'the session ended' });
    expect(observed.disconnected[0]?.connectionId).toBe(firstId);
    expect(observed.disconnected[0]?.error?.message).toContain('did not reconnect in time');
    // note: the client has not noticed anything yet.
    expect(events.reconnecting).toEqual([]);

    proxy.release();
    await waitFor(() => events.reconnected.length === 1, { message: 'onreconnected' });
    expect(events.reconnecting).toHaveLength(1);
    const secondId = events.reconnected[0];
    expect(secondId).toBeTypeOf('string');
    expect(secondId).not.toBe(firstId);
    expect(c.connectionId).toBe(secondId);
    expect(await c.invoke('WhoAmI')).toBe(secondId);
    expect(observed.connected).toEqual([firstId, secondId]);
  });

  it('gives up resuming once the unacknowledged messages outgrow the buffer: a full reconnect follows', async () => {
    const observed = newObserved();
    server = await startServer({ statefulReconnectBufferSize: 1_000 }, { [HUB]: statefulHub(observed) });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), {
      statefulReconnect: true,
      reconnectDelays: [0, 50, 100],
    });
    const events = watch(c);
    const ticks = record(c, 'tick');
    const firstId = c.connectionId as string;
    const toClient = server.server.hub(HUB).clients.client(firstId);
    // note: about 2 kB at once, faster than the client's once-a-second ack.
    for (let i = 0; i < 20; i++) await toClient.send('tick', i, 'x'.repeat(80));
    await waitFor(() => ticks.length === 20);

    proxy.dropAll();
    await waitFor(() => events.reconnected.length === 1, { message: 'onreconnected' });
    expect(events.reconnecting).toHaveLength(1);
    expect(events.reconnected[0]).not.toBe(firstId);
    expect(observed.disconnected.map((d) => d.connectionId)).toEqual([firstId]);
    expect(await c.invoke('WhoAmI')).toBe(events.reconnected[0]);
  });

  it('ends the session when the client stops, without waiting for a reconnect', async () => {
    const observed = newObserved();
    server = await startServer({}, { [HUB]: statefulHub(observed) });
    const c = await clients.connect(server.url(HUB), { statefulReconnect: true });
    const id = c.connectionId;
    await c.stop();
    await waitFor(() => observed.disconnected.length === 1);
    expect(observed.disconnected[0]).toEqual({ connectionId: id, error: undefined });
    expect(server.server.connectionCount).toBe(0);
  });
});
