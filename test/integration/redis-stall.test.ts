/**
 * A Redis that stops answering (SIGSTOP of a private redis-server: its sockets stay open, nothing is
 * answered) while a client connects: registration waits on a SUBSCRIBE that never returns. The connection
 * must not read the client's input without bound, must end with a handshake error by the handshake
 * timeout, sends must fail after the command timeout, and /healthz must say `degraded` meanwhile.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { handshakeRequest, record, socketUrl } from '../helpers/raw-client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HANDSHAKE_TIMEOUT_MS = 1_000;
const COMMAND_TIMEOUT_MS = 500;
/** What the client tries to send while registration waits. */
const FLOOD_BYTES = 32 * 1024 * 1024;
/** The server may read a little (socket buffers, one chunk) before it pauses; far less than the flood. */
const MAX_READ_BYTES = 8 * 1024 * 1024;

async function health(server: TestServer): Promise<{ code: number; status: string }> {
  const res = await fetch(`${server.baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
  return { code: res.status, status: ((await res.json()) as { status: string }).status };
}

describe('a Redis stall while a connection registers', () => {
  let redis: RedisServer;
  let server: TestServer;

  beforeAll(async () => {
    redis = await startRedisServer();
    server = await startServer({
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      backplane: new PubSubBackplane({
        redisUrl: redis.url,
        channelPrefix: uniquePrefix('stall'),
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        healthProbeIntervalMs: 200,
      }),
    });
  });

  afterAll(async () => {
    redis.resume();
    await server.close();
    await redis.dispose();
  });

  it('bounds the input, ends the connection by the handshake timeout, times out commands, and reports degraded', async () => {
    expect(await health(server)).toEqual({ code: 200, status: 'ok' });
    redis.pause();
    try {
      const ws = new WebSocket(socketUrl(server.url(DEMO_HUB_PATH)));
      const frames: string[] = [];
      let closed = false;
      ws.on('message', (data) => frames.push(data.toString()));
      ws.on('close', () => (closed = true));
      ws.on('error', () => undefined);
      await new Promise((resolve) => ws.once('open', resolve));
      const startedAt = Date.now();
      ws.send(handshakeRequest());
      // note: valid invocations, 512 KB per frame: what a client that does not wait for the handshake
      // answer (or an attacker) sends while the server waits on Redis.
      const invocation = record({ type: 1, target: 'Echo', arguments: ['x'.repeat(1_000)] });
      const frame = invocation.repeat(Math.floor((512 * 1024) / invocation.length));
      for (let sent = 0; sent < FLOOD_BYTES; sent += frame.length) ws.send(frame);

      // the server stops reading: what the client could not hand to the socket stays queued on its side
      await waitFor(() => FLOOD_BYTES - ws.bufferedAmount > 0, { timeoutMs: 2_000 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(FLOOD_BYTES - ws.bufferedAmount).toBeLessThan(MAX_READ_BYTES);

      // and the connection ends with a handshake error by the handshake timeout
      await waitFor(() => frames.length > 0, { timeoutMs: HANDSHAKE_TIMEOUT_MS + 2_000 });
      const elapsed = Date.now() - startedAt;
      expect(elapsed).toBeLessThan(HANDSHAKE_TIMEOUT_MS + 1_500);
      expect(JSON.parse(frames[0]?.split('\x1e')[0] ?? '{}')).toEqual({
        error: `The server could not register the connection within ${HANDSHAKE_TIMEOUT_MS} ms (handshakeTimeoutMs).`,
      });
      // the server drops the socket soon after (it does not wait 30 s for a close frame it cannot read)
      await waitFor(() => closed, { timeoutMs: 3_000 });
      expect(server.server.connectionCount).toBe(0);

      // a send fails after the command timeout instead of hanging
      const sendStarted = Date.now();
      const sent = await server.server
        .hub(DEMO_HUB_PATH)
        .clients.all.send('message', 'x')
        .then(
          () => 'resolved',
          (error: { code?: string }) => error.code,
        );
      expect(sent).toBe('ERR_BACKPLANE_UNAVAILABLE');
      expect(Date.now() - sendStarted).toBeLessThan(COMMAND_TIMEOUT_MS + 1_000);

      // health says so while Redis stalls
      expect(await waitFor(async () => (await health(server)).status === 'degraded')).toBe(true);
      expect((await health(server)).code).toBe(503);
    } finally {
      redis.resume();
    }
    await waitFor(async () => (await health(server)).status === 'ok', { timeoutMs: 5_000 });
  });

  it('streams backplane: health is degraded while Redis stalls, and ready again after', async () => {
    const streams = await startServer({
      backplane: new StreamsBackplane({
        redisUrl: redis.url,
        channelPrefix: uniquePrefix('stall-streams'),
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        healthProbeIntervalMs: 200,
      }),
    });
    try {
      expect(await health(streams)).toEqual({ code: 200, status: 'ok' });
      redis.pause();
      try {
        expect(await waitFor(async () => (await health(streams)).status === 'degraded')).toBe(true);
      } finally {
        redis.resume();
      }
      await waitFor(async () => (await health(streams)).status === 'ok', { timeoutMs: 5_000 });
    } finally {
      await streams.close();
    }
  });
});
