/**
 * Malformed MessagePack from a client: each case ends that connection with a Close message that names the
 * problem (then a normal socket close), never a crash, and the server keeps serving others.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HttpTransportType } from '@microsoft/signalr';
import { ClientPool } from '../helpers/client.js';
import { lengthPrefix, packed, RawMsgpackClient, unpackAll } from '../helpers/raw-msgpack.js';
import { negotiate } from '../helpers/raw-ws.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('bad MessagePack input', () => {
  const raws: RawMsgpackClient[] = [];
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.close();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  async function open(): Promise<{ s: TestServer; raw: RawMsgpackClient }> {
    server ??= await startServer();
    const raw = await RawMsgpackClient.open(server.url());
    raws.push(raw);
    expect(raw.handshake).toEqual({});
    return { s: server, raw };
  }

  /** The last message is a Close with `error`, the socket closes normally, and the server still serves. */
  async function expectClose(raw: RawMsgpackClient, s: TestServer, error: string | RegExp): Promise<void> {
    expect(await raw.waitForClose()).toBe(1000);
    const last = raw.messages.at(-1) as unknown[];
    expect(last[0]).toBe(7);
    expect(last[1]).toMatch(error);
    expect(last[2]).toBe(false);
    await waitFor(() => s.server.connectionCount === 0);
    const healthy = await clients.connect(s.url(), {
      protocol: 'messagepack',
      transport: HttpTransportType.WebSockets,
    });
    expect(await healthy.invoke('Echo', new Uint8Array([9]))).toEqual(new Uint8Array([9]));
  }

  const invocation = (target: unknown = 'Echo', args: unknown = [1]) => [1, {}, '1', target, args];

  it.each<[string, Buffer | string, string | RegExp]>([
    ['a truncated VarInt', Buffer.from([0x80]), 'MessagePack length prefix is truncated.'],
    [
      'a truncated VarInt after a good message',
      Buffer.concat([packed([6]), Buffer.from([0xff, 0xff])]),
      'MessagePack length prefix is truncated.',
    ],
    ['a VarInt over 2 GiB', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), /length prefix is too large/],
    ['a six-byte VarInt', Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), /length prefix is too large/],
    [
      'a length past the end of the frame',
      Buffer.concat([lengthPrefix(10), Buffer.from([0x95, 1])]),
      'MessagePack message is truncated.',
    ],
    ['an empty message', lengthPrefix(0), 'MessagePack message is empty.'],
    [
      'a MessagePack value cut short',
      Buffer.concat([lengthPrefix(2), Buffer.from([0x92, 0x01])]),
      'Message is not valid MessagePack.',
    ],
    [
      'the never-used byte 0xc1',
      Buffer.concat([lengthPrefix(1), Buffer.from([0xc1])]),
      /^(Message is not valid MessagePack|MessagePack message is not a non-empty array)\.$/,
    ],
    [
      'trailing bytes inside a message',
      Buffer.concat([lengthPrefix(3), Buffer.from([0x91, 0x06, 0x06])]),
      'Message is not valid MessagePack.',
    ],
    ['a map instead of an array', packed({ type: 1 }), 'MessagePack message is not a non-empty array.'],
    ['an empty array', packed([]), 'MessagePack message is not a non-empty array.'],
    [
      'a string message type',
      packed(['1', {}, '1', 'Echo', []]),
      'MessagePack message type is not an integer.',
    ],
    ['an unknown message type', packed([42]), 'Unknown message type 42.'],
    [
      'an Invocation with 4 elements',
      packed([1, {}, '1', 'Echo']),
      'Invocation message has 4 elements; it needs at least 5.',
    ],
    [
      'a StreamItem with 3 elements',
      packed([2, {}, 's1']),
      'StreamItem message has 3 elements; it needs at least 4.',
    ],
    [
      'a Completion without its result',
      packed([3, {}, 'x', 3]),
      'Completion message has 4 elements; it needs at least 5.',
    ],
    [
      'a Completion with result kind 9',
      packed([3, {}, 'x', 9, 1]),
      "Completion message has 'resultKind' that is not 1, 2 or 3.",
    ],
    ['a numeric target', packed(invocation(42)), "Invocation message has 'target' that is not a string."],
    [
      'arguments that are a map',
      packed(invocation('Echo', { a: 1 })),
      "Invocation message has 'arguments' that is not an array.",
    ],
    [
      'headers that are a string',
      packed([1, 'h', '1', 'Echo', []]),
      "Invocation message has 'headers' that is not a map of strings.",
    ],
    [
      'header values that are numbers',
      packed([1, { a: 1 }, '1', 'Echo', []]),
      "Invocation message has 'headers' that is not a map of strings.",
    ],
    [
      'a numeric invocation id',
      packed([1, {}, 7, 'Echo', []]),
      "Invocation message has 'invocationId' that is not a string or nil.",
    ],
    [
      'stream ids that are numbers',
      packed([1, {}, '1', 'Echo', [], [1]]),
      "Invocation message has 'streamIds' that is not an array of strings.",
    ],
    [
      'a StreamInvocation without an id',
      packed([4, {}, null, 'Count', []]),
      "StreamInvocation message has 'invocationId' that is not a string.",
    ],
    [
      'an Ack with sequence id 0',
      packed([8, 0]),
      "Ack message has 'sequenceId' that is not a positive integer.",
    ],
    [
      'a Close with a numeric error',
      packed([7, 5]),
      "Close message has 'error' that is not a string or nil.",
    ],
    ['a text frame', '{"type":6}\x1e', 'Text frames are not supported by the MessagePack hub protocol.'],
    [
      'a message over maximumReceiveMessageSize',
      packed(invocation('Echo', ['x'.repeat(40_000)])),
      /larger than the server's limit of 32768 bytes/,
    ],
  ])('%s', async (_name, frame, error) => {
    const { s, raw } = await open();
    raw.send(frame);
    await expectClose(raw, s, error);
  });

  it('checks the declared size before decoding anything', async () => {
    const { s, raw } = await open();
    // note: the prefix claims 1 MB; the server must refuse it from the prefix alone.
    raw.send(Buffer.concat([lengthPrefix(1_000_000), Buffer.alloc(16)]));
    await expectClose(raw, s, /larger than the server's limit of 32768 bytes/);
  });

  it('refuses messagepack when the server turned it off, naming what it speaks', async () => {
    server = await startServer({ protocols: ['json'] });
    const raw = await RawMsgpackClient.open(server.url());
    raws.push(raw);
    expect(raw.handshake).toEqual({
      error: "The protocol 'messagepack' is not supported; this server speaks 'json'.",
    });
    expect(await raw.waitForClose()).toBe(1000);
  });

  it('closes a long-polling MessagePack connection on bad input too, the Close collected by the next poll', async () => {
    server ??= await startServer();
    const s = server;
    const { body } = await negotiate(s.url());
    const url = `${s.url()}?id=${body.connectionToken as string}`;
    await fetch(url);
    await fetch(url, { method: 'POST', body: `{"protocol":"messagepack","version":1}\x1e` });
    const handshake = Buffer.from(await (await fetch(url)).arrayBuffer());
    expect(handshake.toString()).toBe('{}\x1e');
    expect((await fetch(url, { method: 'POST', body: Buffer.from([0x80]) })).status).toBe(200);
    const poll = await fetch(url);
    expect(poll.headers.get('content-type')).toBe('application/octet-stream');
    expect(unpackAll(Buffer.from(await poll.arrayBuffer()))).toEqual([
      [7, 'MessagePack length prefix is truncated.', false],
    ]);
    expect((await fetch(url)).status).toBe(404);
  });
});
