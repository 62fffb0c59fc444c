/**
 * Keep-alive and client timeout across many connections on the hub's timer wheel: each connection is
 * looked at when its own deadline comes, so each idle one gets its ping, a connection the server writes
 * to gets none, a silent one is closed and the others are kept.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RawMsgpackClient } from '../helpers/raw-msgpack.js';
import { RawClient, RS } from '../helpers/raw-ws.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const PING = { type: 6 };
const pings = (client: RawClient) => client.messages.filter((m) => m.type === 6).length;

describe('keep-alive on the timer wheel', () => {
  let server: TestServer | undefined;
  const clients: RawClient[] = [];
  const timers: NodeJS.Timeout[] = [];

  afterEach(async () => {
    for (const timer of timers.splice(0)) clearInterval(timer);
    for (const client of clients.splice(0)) client.close();
    await server?.close();
    server = undefined;
  });

  const open = async (s: TestServer, count: number): Promise<RawClient[]> => {
    const opened = await Promise.all(Array.from({ length: count }, () => RawClient.open(s.url())));
    clients.push(...opened);
    return opened;
  };

  it('pings every idle connection once it sent nothing for keepAliveIntervalMs, not one it writes to', async () => {
    server = await startServer({ keepAliveIntervalMs: 200, clientTimeoutMs: 10_000 });
    const idle = await open(server, 40);
    const [busy] = await open(server, 1);
    if (!busy) throw new Error('no busy client');
    // note: an Echo every 50 ms: the server writes a completion to it each time, so it is never idle.
    let next = 0;
    timers.push(
      setInterval(
        () => busy.send({ type: 1, invocationId: String(next++), target: 'Echo', arguments: [1] }),
        50,
      ),
    );
    const started = Date.now();
    await waitFor(() => idle.every((c) => pings(c) >= 3));
    const elapsed = Date.now() - started;
    // note: 3 pings at 200 ms each take at least ~600 ms; the wheel's slots may make each one a little late.
    expect(elapsed).toBeGreaterThanOrEqual(3 * 200 - 100);
    for (const client of idle) expect(client.messages.filter((m) => m.type !== 6)).toEqual([]);
    expect(busy.messages.filter((m) => m.type === 3).length).toBeGreaterThan(5);
    expect(pings(busy)).toBe(0);
  });

  it('closes each connection silent past clientTimeoutMs, and keeps those that keep pinging', async () => {
    server = await startServer({ keepAliveIntervalMs: 100, clientTimeoutMs: 500 });
    const s = server;
    const silent = await open(s, 15);
    const talking = await open(s, 15);
    timers.push(setInterval(() => talking.forEach((c) => c.ws.send(JSON.stringify(PING) + RS)), 100));
    await waitFor(() => silent.every((c) => c.closeCode !== undefined), { timeoutMs: 5_000 });
    for (const client of silent) {
      const close = client.messages.at(-1);
      expect(close).toMatchObject({ type: 7, allowReconnect: true });
      expect(close?.error).toMatch(/^Client timeout: nothing was received from the client for 500 ms\.$/);
    }
    await waitFor(() => s.server.connectionCount === 15);
    // note: 12 more server pings at 100 ms each: more than twice the client timeout has passed meanwhile.
    const before = talking.map(pings);
    await waitFor(() => talking.every((c, i) => pings(c) >= (before[i] as number) + 12));
    expect(talking.every((c) => c.closeCode === undefined)).toBe(true);
    expect(s.server.connectionCount).toBe(15);
  });

  it('writes the keep-alive as one whole frame of the protocol: a JSON text frame, a MessagePack binary frame', async () => {
    server = await startServer({
      keepAliveIntervalMs: 100,
      clientTimeoutMs: 10_000,
      maximumReceiveMessageSize: 1_000_000,
    });
    const [json] = await open(server, 1);
    const msgpack = await RawMsgpackClient.open(server.url());
    if (!json) throw new Error('no client');
    const frames: { binary: boolean; bytes: number }[] = [];
    msgpack.ws.on('message', (data: Buffer, binary) => frames.push({ binary, bytes: data.length }));
    try {
      await waitFor(() => pings(json) >= 3 && msgpack.messages.length >= 3, {
        message: () =>
          `json pings ${pings(json)}, msgpack ${JSON.stringify(msgpack.messages)} ${JSON.stringify(frames)} handshake ${JSON.stringify(msgpack.handshake)}`,
      });
      // note: MessagePack's ping is [6], length-prefixed: 2 bytes (0x01, fixarray of 1 holding 6).
      expect(msgpack.messages.slice(0, 3)).toEqual([[6], [6], [6]]);
      expect(frames.slice(0, 3)).toEqual(Array(3).fill({ binary: true, bytes: 3 }));
      expect(json.messages.filter((m) => m.type !== 6)).toEqual([]);
      // note: the pings after a large frame (written by ws, maybe still in the socket's buffer) come whole,
      // behind it.
      const before = pings(json);
      json.send({ type: 1, invocationId: '1', target: 'Echo', arguments: ['x'.repeat(500_000)] });
      await waitFor(() => pings(json) >= before + 2);
      const after = json.messages.slice(json.messages.findIndex((m) => m.type === 3));
      expect(after[0]).toMatchObject({ invocationId: '1', result: 'x'.repeat(500_000) });
      expect(after.slice(1).every((m) => m.type === 6)).toBe(true);
      expect(after.length).toBeGreaterThanOrEqual(3);
    } finally {
      msgpack.close();
    }
  });

  it('answers a WebSocket ping with a pong carrying its data (the transport answers, not ws)', async () => {
    server = await startServer();
    const [client] = await open(server, 1);
    if (!client) throw new Error('no client');
    const pongs: string[] = [];
    client.ws.on('pong', (data) => pongs.push(data.toString()));
    client.ws.ping('first');
    client.ws.ping('second');
    await waitFor(() => pongs.length === 2);
    expect(pongs).toEqual(['first', 'second']);
  });
});
