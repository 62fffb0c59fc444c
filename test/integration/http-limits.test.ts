/**
 * The HTTP edge's bounds: sockets that never finish their request headers (slowloris) are answered 408 and
 * dropped within `headersTimeoutMs` (plus Node's 1 s check), while the official client still connects and
 * an established WebSocket is not touched; one remote address holds at most `maxConnectionsPerAddress`
 * sockets (HTTP and WebSocket together), the next gets 503 with `Retry-After` at once.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ClientPool } from '../helpers/client.js';
import { rawRequest } from '../helpers/raw-http.js';
import { RawClient } from '../helpers/raw-ws.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const SLOW_SOCKETS = 300;
const HEADERS_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MS = 2_000;
/** headersTimeoutMs + the 1 s check interval + headroom for a shared, busy machine. */
const DROP_BOUND_MS = HEADERS_TIMEOUT_MS + 1_000 + 2_500;

interface Slow {
  socket: Socket;
  closedAt: number | undefined;
  answer: string;
}

function openSlow(port: number): Promise<Slow> {
  return new Promise((resolve, reject) => {
    const slow: Slow = { socket: connect(port, '127.0.0.1'), closedAt: undefined, answer: '' };
    slow.socket.on('data', (chunk: Buffer) => (slow.answer += chunk.toString('latin1')));
    slow.socket.on('close', () => (slow.closedAt = Date.now()));
    slow.socket.on('error', () => undefined);
    slow.socket.once('connect', () => {
      // note: a request line and one header, then a header byte now and then, never the blank line.
      slow.socket.write('POST /hubs/demo/negotiate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
      resolve(slow);
    });
    slow.socket.once('error', reject);
  });
}

describe('HTTP edge limits', () => {
  const clients = new ClientPool();
  const sockets: Socket[] = [];
  const raws: RawClient[] = [];
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    for (const raw of raws.splice(0)) raw.close();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  it('drops sockets that never finish their headers within the bound; good clients still connect', async () => {
    server = await startServer({
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
    });
    const established = await clients.connect(server.url());
    const establishedAt = Date.now();
    const started = Date.now();
    const slow = await Promise.all(Array.from({ length: SLOW_SOCKETS }, () => openSlow(server!.port)));
    sockets.push(...slow.map((s) => s.socket));
    const trickle = setInterval(() => {
      for (const s of slow) if (s.closedAt === undefined) s.socket.write('a');
    }, 200);
    try {
      const fresh = await clients.connect(server.url());
      expect(await fresh.invoke('Echo', 'during the attack')).toBe('during the attack');
      await waitFor(() => slow.every((s) => s.closedAt !== undefined), {
        timeoutMs: DROP_BOUND_MS,
        message: `all ${SLOW_SOCKETS} slow sockets closed`,
      });
    } finally {
      clearInterval(trickle);
    }
    const latest = Math.max(...slow.map((s) => s.closedAt as number)) - started;
    expect(latest).toBeLessThan(DROP_BOUND_MS);
    expect(slow.filter((s) => s.answer.startsWith('HTTP/1.1 408')).length).toBe(SLOW_SOCKETS);
    // note: the WebSocket that was open all along is untouched, also once it is older than both timeouts
    // and a check ran after that (a deliberate duration, not a synchronization).
    const past = REQUEST_TIMEOUT_MS + 1_500 - (Date.now() - establishedAt);
    if (past > 0) await new Promise((resolve) => setTimeout(resolve, past));
    expect(await established.invoke('Echo', 'still open')).toBe('still open');
    expect(
      (await rawRequest(server.port, 'GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')).status,
    ).toBe(200);
  });

  it('caps the sockets of one address; over the cap: 503 with Retry-After at once', async () => {
    const cap = 6;
    server = await startServer({ maxConnectionsPerAddress: cap });
    // two WebSockets (one socket each, no negotiate) and four idle TCP sockets fill the cap
    const ws = [await RawClient.open(server.url()), await RawClient.open(server.url())];
    raws.push(...ws);
    for (let i = 0; i < cap - ws.length; i++) {
      const socket = connect(server.port, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      sockets.push(socket);
    }
    const started = Date.now();
    const refused = await rawRequest(server.port, 'GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(refused.status).toBe(503);
    expect(refused.text).toMatch(/\r\nRetry-After: 1\r\n/);
    expect(refused.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
    await expect(clients.connect(server.url())).rejects.toThrow(/503/);
    // the sockets within the cap are unaffected
    ws[0]!.send({ type: 1, invocationId: '1', target: 'Echo', arguments: ['fine'] });
    expect(await waitFor(() => ws[0]!.messages.find((m) => m.type === 3))).toMatchObject({ result: 'fine' });
    // once sockets close, the address may connect again
    sockets.splice(0).forEach((socket) => socket.destroy());
    const again = await waitFor(() => clients.connect(server!.url()), { message: 'a connection' });
    expect(await again.invoke('Echo', 'again')).toBe('again');
  });

  it('closes a negotiate that carries a body after the answer instead of reading it', async () => {
    server = await startServer();
    const started = Date.now();
    const response = await rawRequest(
      server.port,
      'POST /hubs/demo/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000\r\n\r\nxyz',
    );
    expect(response.status).toBe(200);
    expect(response.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('refuses bad limits with ERR_CONFIG', async () => {
    await expect(startServer({ headersTimeoutMs: 0 })).rejects.toMatchObject({ code: 'ERR_CONFIG' });
    await expect(startServer({ maxConnectionsPerAddress: -1 })).rejects.toMatchObject({ code: 'ERR_CONFIG' });
    await expect(startServer({ headersTimeoutMs: 5_000, requestTimeoutMs: 1_000 })).rejects.toMatchObject({
      code: 'ERR_CONFIG',
    });
  });
});
