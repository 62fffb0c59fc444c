import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { HubServerOptions } from '../../src/hub/hub-server.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import type { HubRuntime } from '../../src/hub/hub-runtime.js';
import { DEMO_HUB_PATH, demoHub } from '../../src/example/demo-hub.js';
import { type ClientOptions, ClientPool, record as recordCalls } from '../helpers/client.js';
import {
  handshakeRequest,
  type RawClient,
  RawClientPool,
  record,
  RS,
  upgradeStatus,
} from '../helpers/raw-client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

type Message = Record<string, unknown>;

describe('bad input from clients', () => {
  const raws = new RawClientPool();
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    vi.restoreAllMocks();
    await raws.closeAll();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  async function start(options: HubServerOptions = {}, hub: HubDefinition = demoHub): Promise<TestServer> {
    server = await startServer(options, { [DEMO_HUB_PATH]: hub });
    return server;
  }

  const runtime = (s: TestServer) => s.server.hub(DEMO_HUB_PATH) as HubRuntime;

  /** A raw client that has completed the handshake and is counted by the server. */
  async function handshaken(s: TestServer, live = 1): Promise<RawClient> {
    const raw = await raws.connect(s.url());
    expect(await raw.handshake()).toEqual({});
    await waitFor(() => s.server.connectionCount === live);
    return raw;
  }

  /** The server answered the handshake with an error matching `pattern`, and nothing else, then closed. */
  async function expectHandshakeError(raw: RawClient, pattern: RegExp): Promise<void> {
    const answer = await raw.nextMessage(0);
    expect(Object.keys(answer)).toEqual(['error']);
    expect(answer.error).toMatch(pattern);
    expect((await raw.waitForClose()).code).toBe(1000);
    expect(raw.records).toHaveLength(1);
  }

  /** The server sent a Close with an error matching `pattern` as its last message, then closed. */
  async function expectCloseError(raw: RawClient, pattern: RegExp, allowReconnect = false): Promise<Message> {
    const close = await raw.waitForMessage((m) => m.type === 7);
    expect(close).toEqual({ type: 7, error: expect.stringMatching(pattern), allowReconnect });
    expect((await raw.waitForClose()).code).toBe(1000);
    expect(raw.messages().at(-1)).toEqual(close);
    expect(raw.incompleteFrames).toEqual([]);
    return close;
  }

  /**
   * The connection of `raw` is gone from the server (not counted, token forgotten: a new socket for it
   * gets 404) and the server still serves: a fresh official client can invoke Echo.
   */
  async function expectGoneAndServing(
    s: TestServer,
    raw: RawClient,
    { live = 0, client = {} }: { live?: number; client?: ClientOptions } = {},
  ): Promise<void> {
    await waitFor(() => s.server.connectionCount === live, { message: 'connection count did not drop' });
    const token = raw.token as string;
    await waitFor(() => runtime(s).connectionByToken(token) === undefined, {
      message: 'connection token still known',
    });
    expect(await upgradeStatus(s.url(), token)).toBe(404);
    const good = await clients.connect(s.url(), client);
    expect(await good.invoke('Echo', 'still up')).toBe('still up');
    await good.stop();
    await waitFor(() => s.server.connectionCount === live);
  }

  describe('after the handshake: a Close with an error, then the socket closes', () => {
    it.each([
      ['malformed JSON', `{"type":1,"target":"Echo",${RS}`, /^Message is not valid JSON\.$/],
      ['a frame missing the trailing 0x1E', '{"type":6}', /does not end with the record separator/],
      [
        'a frame whose last record lacks the 0x1E',
        `{"type":6}${RS}{"type":6}`,
        /does not end with the record separator/,
      ],
      ['an empty record', RS, /^Message is not valid JSON\.$/],
      ['a JSON array', `[1,2]${RS}`, /^Message is not a JSON object\.$/],
      ['a message without type', record({ target: 'Echo', arguments: [] }), /integer 'type'/],
      ['a string type', record({ type: '1', target: 'Echo', arguments: [] }), /integer 'type'/],
      ['an unknown message type', record({ type: 42 }), /^Unknown message type 42\.$/],
      ['message type 0', record({ type: 0 }), /^Unknown message type 0\.$/],
    ])('%s', async (_name, frame, pattern) => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.sendText(frame);
      await expectCloseError(raw, pattern);
      await expectGoneAndServing(s, raw);
    });

    it.each([
      [
        'target is a number',
        { type: 1, invocationId: '1', target: 7, arguments: [] },
        /'target' that is not a string/,
      ],
      ['target is missing', { type: 1, invocationId: '1', arguments: [] }, /missing 'target'/],
      [
        'arguments is not an array',
        { type: 1, invocationId: '1', target: 'Echo', arguments: { a: 1 } },
        /'arguments' that is not an array/,
      ],
      ['arguments is missing', { type: 1, invocationId: '1', target: 'Echo' }, /missing 'arguments'/],
      [
        'invocationId is a number',
        { type: 1, invocationId: 1, target: 'Echo', arguments: [] },
        /'invocationId' that is not a string/,
      ],
      [
        'streamIds holds a number',
        { type: 1, invocationId: '1', target: 'Echo', arguments: [], streamIds: [1] },
        /'streamIds' that is not an array of strings/,
      ],
      [
        'headers hold a number',
        { type: 1, target: 'Echo', arguments: [], headers: { a: 1 } },
        /'headers' that is not an object of strings/,
      ],
      [
        'a stream invocation without invocationId',
        { type: 4, target: 'Echo', arguments: [] },
        /missing 'invocationId'/,
      ],
      ['a stream item without item', { type: 2, invocationId: '1' }, /missing 'item'/],
      [
        'a completion error that is a number',
        { type: 3, invocationId: '1', error: 5 },
        /'error' that is not a string/,
      ],
      [
        'a completion with both result and error',
        { type: 3, invocationId: '1', result: 1, error: 'x' },
        /both 'result' and 'error'/,
      ],
      ['a cancel without invocationId', { type: 5 }, /missing 'invocationId'/],
      [
        'a close with a string allowReconnect',
        { type: 7, allowReconnect: 'yes' },
        /'allowReconnect' that is not a boolean/,
      ],
      [
        'an ack with a string sequenceId',
        { type: 8, sequenceId: '1' },
        /'sequenceId' that is not a positive integer/,
      ],
    ])('wrong field types: %s', async (_name, message, pattern) => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.send(message);
      await expectCloseError(raw, pattern);
      await expectGoneAndServing(s, raw);
    });

    it('a Sequence message when stateful reconnect is off', async () => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.send({ type: 9, sequenceId: 1 });
      await expectCloseError(raw, /stateful reconnect is off/);
      await expectGoneAndServing(s, raw);
    });

    it('a bad record after good ones in the same frame still closes the connection', async () => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.sendText(`${record({ type: 6 })}${record({ type: 6 })}{oops${RS}`);
      await expectCloseError(raw, /not valid JSON/);
      await expectGoneAndServing(s, raw);
    });

    it('a binary frame', async () => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.sendBinary(
        Buffer.from(record({ type: 1, invocationId: '1', target: 'Echo', arguments: [1] })),
      );
      await expectCloseError(raw, /^Binary frames are not supported by the JSON hub protocol\.$/);
      await expectGoneAndServing(s, raw);
    });

    it('a message over the default maximumReceiveMessageSize (32 KB)', async () => {
      const s = await start();
      const raw = await handshaken(s);
      // note: just under the limit is fine...
      const fits = 'x'.repeat(32_768 - 80);
      await raw.send({ type: 1, invocationId: '1', target: 'Echo', arguments: [fits] });
      expect(await raw.waitForMessage((m) => m.type === 3)).toEqual({
        type: 3,
        invocationId: '1',
        result: fits,
      });
      // ...one over it is not.
      await raw.send({ type: 1, invocationId: '2', target: 'Echo', arguments: ['x'.repeat(40_000)] });
      await expectCloseError(
        raw,
        /^Message is larger than the server's limit of 32768 bytes \(maximumReceiveMessageSize\)\.$/,
      );
      expect(raw.messages().filter((m) => m.type === 3)).toHaveLength(1);
      await expectGoneAndServing(s, raw);
    });

    it('counts the limit in UTF-8 bytes, not characters', async () => {
      const s = await start();
      const raw = await handshaken(s);
      // note: 12,000 characters of 3 bytes each: under the limit in characters, over it in bytes.
      await raw.send({ type: 1, invocationId: '1', target: 'Echo', arguments: ['€'.repeat(12_000)] });
      await expectCloseError(raw, /limit of 32768 bytes/);
      await expectGoneAndServing(s, raw);
    });

    it('a message over a configured small maximumReceiveMessageSize', async () => {
      const s = await start({ maximumReceiveMessageSize: 1_024 });
      const raw = await handshaken(s);
      const fits = 'y'.repeat(900);
      await raw.send({ type: 1, invocationId: '1', target: 'Echo', arguments: [fits] });
      expect(await raw.waitForMessage((m) => m.type === 3)).toEqual({
        type: 3,
        invocationId: '1',
        result: fits,
      });
      await raw.send({ type: 1, invocationId: '2', target: 'Echo', arguments: ['y'.repeat(2_000)] });
      await expectCloseError(raw, /limit of 1024 bytes \(maximumReceiveMessageSize\)/);
      await expectGoneAndServing(s, raw);
    });

    it('a frame over the WebSocket payload limit is refused with close code 1009', async () => {
      // note: ws refuses such a frame from its header, before the hub sees it, so no Close message is
      // possible; the WebSocket close code says why.
      const s = await start();
      const raw = await handshaken(s);
      const huge = record({ type: 6 }).repeat(Math.ceil((1 << 20) / 11) + 10);
      await raw.sendText(huge);
      expect((await raw.waitForClose()).code).toBe(1009);
      await expectGoneAndServing(s, raw);
    });

    it('invalid UTF-8 in a text frame is refused with close code 1007', async () => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.sendTextBytes(Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x1e]));
      expect((await raw.waitForClose()).code).toBe(1007);
      await expectGoneAndServing(s, raw);
    });
  });

  describe('unknown hub methods: an error Completion, and the connection stays open', () => {
    it('answers an invocation of an unknown method with a Completion error', async () => {
      const s = await start();
      const raw = await handshaken(s);
      await raw.send({ type: 1, invocationId: '1', target: 'NoSuchMethod', arguments: [1, 2] });
      expect(await raw.waitForMessage((m) => m.type === 3)).toEqual({
        type: 3,
        invocationId: '1',
        error: "Failed to invoke 'NoSuchMethod': unknown hub method.",
      });
      // note: method names are case-sensitive, and object prototype names are not methods.
      await raw.send(
        { type: 1, invocationId: '2', target: 'echo', arguments: [] },
        { type: 1, invocationId: '3', target: 'constructor', arguments: [] },
        { type: 1, invocationId: '4', target: '__proto__', arguments: [] },
        { type: 4, invocationId: '5', target: 'toString', arguments: [] },
        { type: 1, target: 'NoSuchMethod', arguments: [] },
        { type: 1, invocationId: '6', target: 'Echo', arguments: ['ok'] },
      );
      const completion6 = await raw.waitForMessage((m) => m.invocationId === '6');
      expect(completion6).toEqual({ type: 3, invocationId: '6', result: 'ok' });
      const completions = raw.messages().filter((m) => m.type === 3);
      // note: a stream invocation takes no invocation slot, so '5' may overtake the queued ones.
      expect(completions.map((m) => m.invocationId).sort()).toEqual(['1', '2', '3', '4', '5', '6']);
      for (const m of completions.filter((c) => c.invocationId !== '1' && c.invocationId !== '6')) {
        expect(m.error).toMatch(
          /^Failed to invoke '(echo|constructor|__proto__|toString)': unknown hub method\.$/,
        );
      }
      expect(raw.messages().some((m) => m.type === 7)).toBe(false);
      expect(raw.isOpen).toBe(true);
      expect(s.server.connectionCount).toBe(1);
      await raw.close();
      await expectGoneAndServing(s, raw);
    });
  });

  describe('stream items nobody reads', () => {
    it('ignores items for an upload stream whose method has returned, and keeps reading', async () => {
      const s = await start();
      const raw = await handshaken(s);
      // note: Echo takes the upload stream as an extra argument and returns without reading it.
      await raw.send({ type: 1, invocationId: '1', target: 'Echo', arguments: ['x'], streamIds: ['up'] });
      expect(await raw.waitForMessage((m) => m.invocationId === '1')).toEqual({
        type: 3,
        invocationId: '1',
        result: 'x',
      });
      // note: more items than the stream buffer holds (streamBufferCapacity, 10), each in a frame of its own.
      for (let i = 0; i < 30; i++) await raw.send({ type: 2, invocationId: 'up', item: i });
      await raw.send({ type: 1, invocationId: '2', target: 'Echo', arguments: ['still reading'] });
      expect(await raw.waitForMessage((m) => m.invocationId === '2')).toEqual({
        type: 3,
        invocationId: '2',
        result: 'still reading',
      });
      await raw.send({ type: 3, invocationId: 'up' });
      await raw.send({ type: 1, invocationId: '3', target: 'Echo', arguments: [3] });
      expect(await raw.waitForMessage((m) => m.invocationId === '3')).toEqual({
        type: 3,
        invocationId: '3',
        result: 3,
      });
      await raw.close();
      await expectGoneAndServing(s, raw);
    });
  });

  describe('before the handshake: a handshake error, then the socket closes', () => {
    it.each([
      ['a handshake that is not JSON', `hello${RS}`, /^Handshake request is not valid JSON\.$/],
      ['an empty handshake record', RS, /^Handshake request is not valid JSON\.$/],
      ['a handshake that is a JSON array', `[]${RS}`, /^Handshake request is not a JSON object\.$/],
      [
        'a handshake without the trailing 0x1E',
        '{"protocol":"json","version":1}',
        /does not end with the record separator/,
      ],
      ['a handshake without protocol', `{"version":1}${RS}`, /missing 'protocol'/],
      [
        'an unsupported protocol',
        handshakeRequest(1, 'blazorpack'),
        /The protocol 'blazorpack' is not supported/,
      ],
      ['an unsupported version', handshakeRequest(3), /The protocol version '3' is not supported/],
      ['version 0', handshakeRequest(0), /The protocol version '0' is not supported/],
      [
        'an object version',
        `{"protocol":"json","version":{"toString":1}}${RS}`,
        /The protocol version '\{"toString":1\}' is not supported/,
      ],
      [
        'a handshake over maximumReceiveMessageSize',
        record({ protocol: 'json', version: 1, padding: 'p'.repeat(40_000) }),
        /larger than the server's limit of 32768 bytes/,
      ],
      ['a hub message instead of the handshake', record({ type: 6 }), /missing 'protocol'/],
    ])('%s', async (_name, frame, pattern) => {
      const s = await start();
      const raw = await raws.connect(s.url());
      await raw.sendText(frame);
      await expectHandshakeError(raw, pattern);
      await expectGoneAndServing(s, raw);
    });

    it('a binary frame instead of the handshake', async () => {
      const s = await start();
      const raw = await raws.connect(s.url());
      await raw.sendBinary(Buffer.from(handshakeRequest(1)));
      await expectHandshakeError(raw, /^Binary frames are not supported by the JSON hub protocol\.$/);
      await expectGoneAndServing(s, raw);
    });

    it('no handshake within handshakeTimeoutMs', async () => {
      const s = await start({ handshakeTimeoutMs: 200 });
      const opened = Date.now();
      const raw = await raws.connect(s.url());
      await expectHandshakeError(raw, /^Handshake was not received within 200 ms\.$/);
      expect(Date.now() - opened).toBeGreaterThanOrEqual(200);
      await expectGoneAndServing(s, raw);
    });

    it('a bad message in the same frame as a good handshake closes after the handshake', async () => {
      const s = await start();
      const raw = await raws.connect(s.url());
      await raw.sendText(`${handshakeRequest(1)}{"type":"x"}${RS}`);
      expect(await raw.nextMessage(0)).toEqual({});
      await expectCloseError(raw, /integer 'type'/);
      await expectGoneAndServing(s, raw);
    });

    it('refuses a negotiated token whose WebSocket comes after negotiateTimeoutMs', async () => {
      const s = await start({ negotiateTimeoutMs: 200 });
      const res = await fetch(`${s.url()}/negotiate?negotiateVersion=1`, { method: 'POST' });
      const negotiated = Date.now();
      const { connectionToken } = (await res.json()) as { connectionToken: string };
      // note: a v1 negotiate keeps nothing on the instance: the signed token is the pending connection.
      expect(runtime(s).connectionByToken(connectionToken)).toBeUndefined();
      await waitFor(() => Date.now() - negotiated > 250);
      expect(await upgradeStatus(s.url(), connectionToken)).toBe(404);
      expect(s.server.connectionCount).toBe(0);
    });
  });

  describe('a flood of invocations', () => {
    it('runs all 2,000 in order while TCP backpressure bounds what the server reads, and serves others meanwhile', async () => {
      const total = 2_000;
      const perFrame = 100;
      const padding = 'p'.repeat(250);
      /** Invocations the server had read from the socket when Slow(i) started, by i. */
      const readWhenStarted = new Map<number, number>();
      let invocationsRead = 0;
      const emit = WebSocket.prototype.emit;
      vi.spyOn(WebSocket.prototype, 'emit').mockImplementation(function (
        this: WebSocket & { _isServer: boolean },
        event: string | symbol,
        ...args: unknown[]
      ) {
        if (event === 'message' && this._isServer) {
          invocationsRead += String(args[0]).split(RS).length - 1;
        }
        return emit.call(this, event, ...args);
      });
      const pause = vi.spyOn(WebSocket.prototype, 'pause');
      const resume = vi.spyOn(WebSocket.prototype, 'resume');
      const s = await start(
        { maximumParallelInvocationsPerClient: 1 },
        {
          ...demoHub,
          methods: {
            ...demoHub.methods,
            Slow: async (_ctx, i: number) => {
              readWhenStarted.set(i, invocationsRead);
              await delay(1);
              return i;
            },
          },
        },
      );
      const raw = await handshaken(s);
      const frames: string[] = [];
      for (let f = 0; f < total / perFrame; f++) {
        let frame = '';
        for (let i = f * perFrame; i < (f + 1) * perFrame; i++) {
          frame += record({ type: 1, invocationId: String(i), target: 'Slow', arguments: [i, padding] });
        }
        frames.push(frame);
      }
      await Promise.all(frames.map((frame) => raw.sendText(frame)));
      const completions = () => raw.messages().filter((m) => m.type === 3);

      // note: another client is served while the flood is still being worked through.
      await waitFor(() => completions().length > 0);
      const other = await clients.connect(s.url());
      expect(await other.invoke('Echo', 'meanwhile')).toBe('meanwhile');
      expect(completions().length).toBeLessThan(total);

      await waitFor(() => completions().length === total, { timeoutMs: 20_000 });
      expect(completions()).toEqual(
        Array.from({ length: total }, (_, i) => ({ type: 3, invocationId: String(i), result: i })),
      );
      // note: the server stopped reading while invocations were queued, and read again as they drained...
      expect(pause).toHaveBeenCalled();
      expect(resume).toHaveBeenCalled();
      // ...so when the 1,000th started, it had read only a bounded amount beyond it: the queue limit
      // (128), the frame being processed, and what one TCP read brought in; not the whole flood.
      const readAt1000 = readWhenStarted.get(1_000) as number;
      expect(readAt1000).toBeLessThan(total);
      expect(readAt1000).toBeLessThanOrEqual(1_000 + 128 + 3 * perFrame + 300);
      // note: and the connection works normally afterwards.
      await raw.send({ type: 1, invocationId: 'after', target: 'Echo', arguments: [1] });
      expect(await raw.waitForMessage((m) => m.invocationId === 'after')).toEqual({
        type: 3,
        invocationId: 'after',
        result: 1,
      });
      expect(raw.messages().some((m) => m.type === 7)).toBe(false);
      await other.stop();
      await raw.close();
      await expectGoneAndServing(s, raw);
    });
  });

  describe('a client that never reads', () => {
    it('is disconnected once maxBufferedBytesPerClient is passed, and the others keep receiving', async () => {
      const disconnects = new Map<string, Error | undefined>();
      const s = await start(
        { maxBufferedBytesPerClient: 64 * 1024 },
        {
          ...demoHub,
          onDisconnected: (ctx, error) => void disconnects.set(ctx.connectionId, error),
        },
      );
      const reader = await clients.connect(s.url());
      const received = recordCalls(reader, 'message');
      const negotiated = await fetch(`${s.url()}/negotiate?negotiateVersion=1`, { method: 'POST' });
      const { connectionId, connectionToken } = (await negotiated.json()) as {
        connectionId: string;
        connectionToken: string;
      };
      const slow = await raws.connectTcp(s.url(), connectionToken);
      slow.sendText(handshakeRequest(1));
      await waitFor(() => slow.records.length > 0);
      expect(slow.records[0]).toBe('{}');
      await waitFor(() => s.server.connectionCount === 2);
      slow.pause();

      const hub = s.server.hub(DEMO_HUB_PATH);
      const chunk = 'z'.repeat(16 * 1024);
      let sent = 0;
      // note: at most 64 MB; the kernel buffers of a loopback socket take a few MB before the server
      // itself has to hold bytes for the client.
      while (!disconnects.has(connectionId) && sent < 4_096) {
        await hub.clients.all.send('message', 'server', `${sent}:${chunk}`);
        sent++;
        // note: one send per event-loop turn, so that each is written on its own rather than batched...
        await new Promise((resolve) => setImmediate(resolve));
        // ...and the reading client keeps up, so that only the one that does not read falls behind.
        if (sent % 4 === 0) await waitFor(() => received.length >= sent - 4, { timeoutMs: 10_000 });
      }
      expect(disconnects.has(connectionId)).toBe(true);
      // note: not before the limit: more than 64 KB had been sent to it.
      expect(sent * chunk.length).toBeGreaterThan(64 * 1024);
      const error = disconnects.get(connectionId) as Error & { code?: string };
      expect(error.code).toBe('ERR_SLOW_CONSUMER');
      expect(error.message).toMatch(/more than 65536 bytes queued/);
      await waitFor(() => s.server.connectionCount === 1);
      expect(runtime(s).connectionByToken(connectionToken)).toBeUndefined();

      // note: the reader got everything, and keeps receiving after the slow one is gone.
      await waitFor(() => received.length === sent, { timeoutMs: 10_000 });
      await hub.clients.all.send('message', 'server', 'after');
      await waitFor(() => received.length === sent + 1);
      expect(received.map((args) => String(args[1]).split(':')[0])).toEqual([
        ...Array.from({ length: sent }, (_, i) => String(i)),
        'after',
      ]);
      expect(await reader.invoke('Echo', 'fine')).toBe('fine');

      // note: once it reads again, the slow client finds its socket closed by the server.
      slow.resume();
      await slow.closed;
      expect(slow.records.length).toBeLessThan(sent + 1);
    });
  });

  describe('keep-alive', () => {
    const fast = { keepAliveIntervalMs: 100, clientTimeoutMs: 300 };

    it('closes a client silent past clientTimeoutMs with an error that allows reconnecting', async () => {
      const s = await start(fast);
      // note: taken before the handshake is sent, which is the last thing the server receives.
      const opened = Date.now();
      const raw = await handshaken(s);
      await expectCloseError(
        raw,
        /^Client timeout: nothing was received from the client for 300 ms\.$/,
        true,
      );
      expect(Date.now() - opened).toBeGreaterThanOrEqual(300);
      // note: the server kept pinging until then.
      expect(raw.messages().filter((m) => m.type === 6).length).toBeGreaterThanOrEqual(1);
      await expectGoneAndServing(s, raw, { client: { keepAliveIntervalMs: 50 } });
    });

    it('keeps a client that sends anything (here: a Ping per server Ping) past clientTimeoutMs', async () => {
      const s = await start(fast);
      const raw = await handshaken(s);
      const opened = Date.now();
      let answered = 0;
      // note: the server's pings are the clock: eight of them take about 800 ms, over twice the timeout.
      await waitFor(
        async () => {
          const pings = raw.messages().filter((m) => m.type === 6).length;
          while (answered < pings) {
            answered++;
            await raw.send({ type: 6 });
          }
          return pings >= 8;
        },
        { timeoutMs: 5_000 },
      );
      expect(Date.now() - opened).toBeGreaterThan(600);
      expect(raw.messages().some((m) => m.type === 7)).toBe(false);
      expect(raw.isOpen).toBe(true);
      expect(s.server.connectionCount).toBe(1);
    });

    it('sends a Ping when it has sent nothing for keepAliveIntervalMs', async () => {
      const s = await start({ keepAliveIntervalMs: 100, clientTimeoutMs: 10_000 });
      const raw = await handshaken(s);
      const times: number[] = [];
      const seen = () => raw.records.length;
      let count = seen();
      await waitFor(() => {
        while (count < seen()) {
          count++;
          times.push(Date.now());
        }
        return times.length >= 4;
      });
      expect(raw.messages().slice(1, 5)).toEqual([{ type: 6 }, { type: 6 }, { type: 6 }, { type: 6 }]);
      const first = times[0] as number;
      const last = times[times.length - 1] as number;
      expect((last - first) / (times.length - 1)).toBeGreaterThanOrEqual(80);
    });
  });
});
