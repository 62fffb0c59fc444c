/**
 * Server-Sent Events and long polling at the HTTP level (TransportProtocols.md): the status codes the
 * official clients rely on, the poll timeout, DELETE, the `transports` option, the POST size limit, and the
 * slow-client bound for a long-polling client that stops polling and an SSE reader that stops reading.
 */
import { request } from 'node:http';
import { HttpTransportType } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import { DEMO_HUB_PATH, demoHub } from '../../src/example/demo-hub.js';
import type { HubServerOptions } from '../../src/hub/hub-server.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import type { HubRuntime } from '../../src/hub/hub-runtime.js';
import { LongPollingTransport } from '../../src/transport/long-polling.js';
import { ClientPool, record } from '../helpers/client.js';
import { negotiate, upgradeStatus } from '../helpers/raw-ws.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const RS = '\x1e';
const CHUNK = 'z'.repeat(16 * 1024);

describe('HTTP transports', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  const disconnects = new Map<string, Error | undefined>();

  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
    disconnects.clear();
  });

  async function start(options: HubServerOptions = {}): Promise<TestServer> {
    server = await startServer(options, {
      [DEMO_HUB_PATH]: {
        ...demoHub,
        onDisconnected: (ctx, error) => void disconnects.set(ctx.connectionId, error),
      },
    });
    return server;
  }

  async function token(s: TestServer): Promise<{ connectionId: string; connectionToken: string }> {
    const { body } = await negotiate(s.url());
    return body as { connectionId: string; connectionToken: string };
  }

  const at = (s: TestServer, id: string) => `${s.url()}?id=${id}`;

  /** Resolves once the server holds a poll of the connection open (so that what follows comes after it). */
  const pollHeld = (s: TestServer, id: string) =>
    waitFor(() => {
      const transport = (s.server.hub(DEMO_HUB_PATH) as HubRuntime).connectionByToken(id)?.transport;
      return transport instanceof LongPollingTransport && transport.polling;
    });

  /**
   * Broadcasts 16 KB messages until `connectionId` is disconnected (at most 64 MB: the kernel buffers of a
   * loopback socket take a few MB before the server itself has to hold bytes for a client that does not
   * read), one per event-loop turn, while the reading client keeps up. Returns how many were sent.
   */
  async function floodUntilGone(s: TestServer, connectionId: string, received: unknown[][]): Promise<number> {
    const hub = s.server.hub(DEMO_HUB_PATH);
    let sent = 0;
    while (!disconnects.has(connectionId) && sent < 4_096) {
      await hub.clients.all.send('message', 'server', `${sent}:${CHUNK}`);
      sent++;
      await new Promise((resolve) => setImmediate(resolve));
      if (sent % 4 === 0) await waitFor(() => received.length >= sent - 4, { timeoutMs: 10_000 });
    }
    return sent;
  }

  it('answers 400 without id, 404 for an unknown id, 405 for other methods', async () => {
    const s = await start();
    expect((await fetch(s.url())).status).toBe(400);
    expect((await fetch(`${s.url()}?id=nope`)).status).toBe(404);
    expect((await fetch(`${s.url()}?id=nope`, { method: 'POST', body: 'x' })).status).toBe(404);
    const { connectionToken } = await token(s);
    expect((await fetch(at(s, connectionToken), { method: 'PUT', body: 'x' })).status).toBe(405);
  });

  it("authenticates every request: 401 without a token, 403 with another user's, the token in the query for SSE", async () => {
    const s = await start({ authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }) });
    const alice = await signToken('alice');
    const { body } = await negotiate(s.url(), '?negotiateVersion=1', {
      headers: { Authorization: `Bearer ${alice}` },
    });
    const url = at(s, body.connectionToken as string);
    const sse = { Accept: 'text/event-stream' };
    expect((await fetch(url, { headers: sse })).status).toBe(401);
    expect((await fetch(`${url}&access_token=${await signToken('bob')}`, { headers: sse })).status).toBe(403);
    const controller = new AbortController();
    const stream = await fetch(`${url}&access_token=${alice}`, { headers: sse, signal: controller.signal });
    expect(stream.status).toBe(200);
    expect((await fetch(url, { method: 'POST', body: 'x' })).status).toBe(401);
    const bobPost = await fetch(url, {
      method: 'POST',
      body: 'x',
      headers: { Authorization: `Bearer ${await signToken('bob')}` },
    });
    expect(bobPost.status).toBe(403);
    controller.abort();
  });

  it('long polling: first poll 200 and empty, handshake by POST, answer by poll, timeout 200 empty, DELETE', async () => {
    const s = await start({ longPollTimeoutMs: 200 });
    const { connectionToken } = await token(s);
    const url = at(s, connectionToken);
    const first = await fetch(url);
    expect(first.status).toBe(200);
    expect(await first.text()).toBe('');
    expect((await fetch(url, { method: 'POST', body: 'no handshake yet' })).status).toBe(200);
    // note: the bad handshake is answered by the next poll, and the connection is gone after it.
    const refused = await fetch(url);
    expect(await refused.text()).toMatch(/^\{"error":"Frame does not end with the record separator/);
    expect((await fetch(url)).status).toBe(404);

    const second = await token(s);
    const url2 = at(s, second.connectionToken);
    await fetch(url2);
    expect((await fetch(url2, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` })).status).toBe(
      200,
    );
    expect(await (await fetch(url2)).text()).toBe(`{}${RS}`);
    const started = Date.now();
    const idle = await fetch(url2);
    expect(idle.status).toBe(200);
    expect(await idle.text()).toBe('');
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);

    const waiting = fetch(url2);
    await pollHeld(s, second.connectionToken);
    expect((await fetch(url2, { method: 'DELETE' })).status).toBe(202);
    expect((await waiting).status).toBe(204);
    await waitFor(() => disconnects.has(second.connectionId));
    expect(disconnects.get(second.connectionId)).toBeUndefined();
    expect((await fetch(url2)).status).toBe(404);
  });

  it('long polling: a new poll ends the one before with 204; a second POST meanwhile gets 409, until the first is gone', async () => {
    const s = await start();
    const { connectionToken } = await token(s);
    const url = at(s, connectionToken);
    await fetch(url);
    await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    expect(await (await fetch(url)).text()).toBe(`{}${RS}`);
    const old = fetch(url);
    await pollHeld(s, connectionToken);
    const fresh = fetch(url);
    expect((await old).status).toBe(204);

    // note: a POST whose body never ends holds the send slot.
    const held = request(url, { method: 'POST', headers: { 'Content-Length': '100' } });
    held.on('error', () => undefined);
    held.write('{');
    // note: once the held POST has reached the server, every other one gets 409 (earlier ones go through).
    await waitFor(async () => (await fetch(url, { method: 'POST', body: `{"type":6}${RS}` })).status === 409);
    held.destroy();
    // note: the aborted POST frees the slot.
    await waitFor(async () => (await fetch(url, { method: 'POST', body: `{"type":6}${RS}` })).status === 200);
    await fetch(url, { method: 'DELETE' });
    expect((await fresh).status).toBe(204);
  });

  it('server-sent events: text/event-stream, data lines, and messagepack refused as binary', async () => {
    const s = await start();
    const { connectionToken } = await token(s);
    const url = at(s, connectionToken);
    const controller = new AbortController();
    const stream = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: controller.signal });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toBe('text/event-stream');
    const reader = stream.body!.getReader();
    let text = '';
    const readUntil = async (pattern: RegExp) => {
      while (!pattern.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString('utf8');
      }
      return text;
    };
    expect((await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` })).status).toBe(
      200,
    );
    expect(await readUntil(/data: \{\}\x1e\r\n\r\n/)).toBe(`:\r\ndata: {}${RS}\r\n\r\n`);
    await fetch(url, {
      method: 'POST',
      body: `{"type":1,"invocationId":"1","target":"Echo","arguments":["a\\nb"]}${RS}`,
    });
    expect(await readUntil(/"invocationId":"1"/)).toContain(
      `data: {"type":3,"invocationId":"1","result":"a\\nb"}${RS}\r\n\r\n`,
    );
    controller.abort();

    const packed = await token(s);
    const packedUrl = at(s, packed.connectionToken);
    const packedStream = await fetch(packedUrl, { headers: { Accept: 'text/event-stream' } });
    await fetch(packedUrl, { method: 'POST', body: `{"protocol":"messagepack","version":1}${RS}` });
    const body = await packedStream.text();
    expect(body).toContain(
      "The protocol 'messagepack' is binary; Server-Sent Events carry text only. Use WebSockets or long polling.",
    );
  });

  it('turns transports off: negotiate omits them and their requests get 404', async () => {
    const s = await start({ transports: ['LongPolling'], protocols: ['json'] });
    const { body } = await negotiate(s.url());
    expect(body.availableTransports).toEqual([{ transport: 'LongPolling', transferFormats: ['Text'] }]);
    expect(await upgradeStatus(s.url())).toBe(404);
    const { connectionToken } = body as { connectionToken: string };
    expect((await fetch(at(s, connectionToken), { headers: { Accept: 'text/event-stream' } })).status).toBe(
      404,
    );
    await expect(clients.connect(s.url(), { transport: HttpTransportType.WebSockets })).rejects.toThrow();
    const c = await clients.connect(s.url());
    expect(await c.invoke('Echo', 'over long polling')).toBe('over long polling');
  });

  it('ends a connection whose POST is over the payload limit, with 413', async () => {
    const s = await start({ maximumReceiveMessageSize: 1024 });
    const { connectionId, connectionToken } = await token(s);
    const url = at(s, connectionToken);
    await fetch(url);
    await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    await waitFor(() => s.server.connectionCount === 1);
    const response = await fetch(url, { method: 'POST', body: 'x'.repeat(2 * 1024 * 1024) });
    expect(response.status).toBe(413);
    await waitFor(() => disconnects.has(connectionId));
    expect(disconnects.get(connectionId)?.message).toBe('A send was larger than 1048576 bytes.');
    expect(s.server.connectionCount).toBe(0);
  });

  it('keeps SSE and long polling alive with Pings, and closes a client that sends nothing', async () => {
    const s = await start({ keepAliveIntervalMs: 100, clientTimeoutMs: 500 });
    const polled = await token(s);
    const pollUrl = at(s, polled.connectionToken);
    await fetch(pollUrl);
    await fetch(pollUrl, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    expect(await (await fetch(pollUrl)).text()).toBe(`{}${RS}`);
    expect(await (await fetch(pollUrl)).text()).toContain(`{"type":6}${RS}`);

    const streamed = await token(s);
    const streamUrl = at(s, streamed.connectionToken);
    const stream = await fetch(streamUrl, { headers: { Accept: 'text/event-stream' } });
    await fetch(streamUrl, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    // note: the stream ends once the server closed the silent client; the Close message is its last event.
    const text = await stream.text();
    expect(text).toContain(`data: {"type":6}${RS}\r\n\r\n`);
    expect(text).toMatch(
      /data: \{"type":7,"error":"Client timeout: nothing was received from the client for 500 ms\.","allowReconnect":true\}\x1e\r\n\r\n$/,
    );
    await waitFor(() => disconnects.has(streamed.connectionId));
  });

  it.each([
    ['ServerSentEvents', HttpTransportType.ServerSentEvents],
    ['LongPolling', HttpTransportType.LongPolling],
  ])(
    'graceful shutdown reaches a %s client as a Close that allows reconnecting',
    async (_name, transport) => {
      const s = await start();
      const c = await clients.connect(s.url(), { transport, reconnectDelays: [60_000] });
      const reconnecting: (Error | undefined)[] = [];
      c.onreconnecting((error) => reconnecting.push(error));
      await s.server.close('Going away for maintenance.');
      await waitFor(() => reconnecting.length === 1);
      expect(reconnecting[0]?.message).toMatch(/Going away for maintenance\./);
    },
  );

  it('disconnects a long-polling client that stops polling', async () => {
    const s = await start({ clientTimeoutMs: 400, keepAliveIntervalMs: 100 });
    const { connectionId, connectionToken } = await token(s);
    const url = at(s, connectionToken);
    await fetch(url);
    await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    await waitFor(() => s.server.connectionCount === 1);
    // note: no poll from here on; the client keeps sending Pings, so only the missing polls end it.
    const pinging = setInterval(
      () => void fetch(url, { method: 'POST', body: `{"type":6}${RS}` }).catch(() => undefined),
      50,
    );
    try {
      await waitFor(() => disconnects.has(connectionId), { timeoutMs: 5_000 });
    } finally {
      clearInterval(pinging);
    }
    expect(disconnects.get(connectionId)?.message).toBe('The client did not poll for 400 ms.');
  });

  it('disconnects a long-polling client past maxBufferedBytesPerClient, sparing a polling one', async () => {
    const s = await start({ maxBufferedBytesPerClient: 64 * 1024 });
    const reader = await clients.connect(s.url(), { transport: HttpTransportType.LongPolling });
    const received = record(reader, 'message');
    const { connectionId, connectionToken } = await token(s);
    const url = at(s, connectionToken);
    await fetch(url);
    await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    await waitFor(() => s.server.connectionCount === 2);
    const sent = await floodUntilGone(s, connectionId, received);
    const error = disconnects.get(connectionId) as Error & { code?: string };
    expect(error.code).toBe('ERR_SLOW_CONSUMER');
    // note: not before the limit: its backlog had reached 64 KB (four chunks and their framing).
    expect(sent * CHUNK.length).toBeGreaterThanOrEqual(64 * 1024);
    await waitFor(() => received.length === sent, { timeoutMs: 10_000 });
    expect(await reader.invoke('Echo', 'still here')).toBe('still here');
  });

  it('disconnects an SSE reader that stops reading past maxBufferedBytesPerClient, sparing one that reads', async () => {
    const s = await start({ maxBufferedBytesPerClient: 64 * 1024 });
    const reader = await clients.connect(s.url(), { transport: HttpTransportType.ServerSentEvents });
    const received = record(reader, 'message');
    const { connectionId, connectionToken } = await token(s);
    const url = at(s, connectionToken);
    const paused = await new Promise<import('node:http').IncomingMessage>((resolve) => {
      request(url, { headers: { Accept: 'text/event-stream' } }, resolve).end();
    });
    paused.pause();
    await fetch(url, { method: 'POST', body: `{"protocol":"json","version":1}${RS}` });
    await waitFor(() => s.server.connectionCount === 2);
    const sent = await floodUntilGone(s, connectionId, received);
    paused.destroy();
    const error = disconnects.get(connectionId) as Error & { code?: string };
    expect(error.code).toBe('ERR_SLOW_CONSUMER');
    expect(error.message).toMatch(/more than 65536 bytes queued/);
    // note: well past the limit: the kernel took the first bytes, the server held the rest.
    expect(sent * CHUNK.length).toBeGreaterThan(64 * 1024);
    await waitFor(() => received.length === sent, { timeoutMs: 10_000 });
    expect(await reader.invoke('Echo', 'still here')).toBe('still here');
  });
});
