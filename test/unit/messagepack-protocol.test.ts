import { NullLogger } from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import { jsonProtocol } from '../../src/protocol/json/json-protocol.js';
import { messagePackProtocol } from '../../src/protocol/messagepack/messagepack-protocol.js';
import { readLengthPrefix, writeLengthPrefix } from '../../src/protocol/messagepack/varint.js';
import type { HubMessage } from '../../src/protocol/messages.js';
import { SharedMessage } from '../../src/protocol/shared-message.js';

/** The official client's MessagePack protocol: what the server writes must be what it reads, and back. */
const official = new MessagePackHubProtocol();
const toArrayBuffer = (b: Buffer) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const clientReads = (message: HubMessage) =>
  official.parseMessages(toArrayBuffer(messagePackProtocol.write(message) as Buffer), NullLogger.instance);
const serverReads = (message: object) => [
  ...messagePackProtocol.parse(Buffer.from(official.writeMessage(message as never)), 1 << 20),
];

describe('VarInt length prefixes', () => {
  it.each([
    [0, [0x00]],
    [127, [0x7f]],
    [128, [0x80, 0x01]],
    [16_383, [0xff, 0x7f]],
    [16_384, [0x80, 0x80, 0x01]],
    [0x7fffffff, [0xff, 0xff, 0xff, 0xff, 0x07]],
  ])('writes and reads %i', (length, bytes) => {
    expect([...writeLengthPrefix(length)]).toEqual(bytes);
    expect(readLengthPrefix(Buffer.from([9, ...bytes]), 1)).toEqual({ length, start: bytes.length + 1 });
  });

  it('refuses cut-off and oversized prefixes', () => {
    expect(() => readLengthPrefix(Buffer.from([0x80, 0x80]), 0)).toThrow(
      'MessagePack length prefix is truncated.',
    );
    expect(() => readLengthPrefix(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x08]), 0)).toThrow(ProtocolError);
    expect(() => readLengthPrefix(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), 0)).toThrow(/too large/);
  });
});

describe('messagePackProtocol and the official client', () => {
  it('writes every server message the client reads, with binary and timestamps', () => {
    const when = new Date('2026-03-04T05:06:07.089Z');
    expect(clientReads({ type: 1, target: 't', arguments: [new Uint8Array([1, 2]), when, null] })).toEqual([
      { type: 1, target: 't', arguments: [new Uint8Array([1, 2]), when, null], headers: {}, streamIds: [] },
    ]);
    expect(clientReads({ type: 1, invocationId: 's0', target: 't', arguments: [] })[0]).toMatchObject({
      invocationId: 's0',
    });
    expect(clientReads({ type: 2, invocationId: '1', item: { a: 1 } })).toEqual([
      { type: 2, invocationId: '1', item: { a: 1 }, headers: {} },
    ]);
    expect(clientReads({ type: 3, invocationId: '1', result: 42 })[0]).toMatchObject({ result: 42 });
    expect(clientReads({ type: 3, invocationId: '1', error: 'bad' })[0]).toMatchObject({ error: 'bad' });
    const voidCompletion = clientReads({ type: 3, invocationId: '1' })[0] as unknown as Record<
      string,
      unknown
    >;
    expect([voidCompletion.result, voidCompletion.error]).toEqual([undefined, undefined]);
    expect(clientReads({ type: 6 })).toEqual([{ type: 6 }]);
    expect(clientReads({ type: 7, error: 'bye', allowReconnect: true })).toEqual([
      { type: 7, error: 'bye', allowReconnect: true },
    ]);
    expect(clientReads({ type: 8, sequenceId: 5 })).toEqual([{ type: 8, sequenceId: 5 }]);
    expect(clientReads({ type: 9, sequenceId: 6 })).toEqual([{ type: 9, sequenceId: 6 }]);
  });

  it('reads every message the client writes', () => {
    expect(
      serverReads({
        type: 1,
        invocationId: '1',
        target: 'Echo',
        arguments: [new Uint8Array([7])],
        streamIds: ['s'],
      }),
    ).toEqual([
      { type: 1, invocationId: '1', target: 'Echo', arguments: [Buffer.from([7])], streamIds: ['s'] },
    ]);
    expect(serverReads({ type: 4, invocationId: '2', target: 'Count', arguments: [3] })).toEqual([
      { type: 4, invocationId: '2', target: 'Count', arguments: [3] },
    ]);
    expect(serverReads({ type: 2, invocationId: 's', item: 5 })).toEqual([
      { type: 2, invocationId: 's', item: 5 },
    ]);
    expect(serverReads({ type: 3, invocationId: 's0', result: 'ok' })).toEqual([
      { type: 3, invocationId: 's0', result: 'ok' },
    ]);
    expect(serverReads({ type: 3, invocationId: 's0', error: 'no' })).toEqual([
      { type: 3, invocationId: 's0', error: 'no' },
    ]);
    expect(serverReads({ type: 5, invocationId: '2' })).toEqual([{ type: 5, invocationId: '2' }]);
    expect(serverReads({ type: 6 })).toEqual([{ type: 6 }]);
    expect(serverReads({ type: 7 })).toEqual([{ type: 7 }]);
    expect(serverReads({ type: 8, sequenceId: 3 })).toEqual([{ type: 8, sequenceId: 3 }]);
    expect(serverReads({ type: 9, sequenceId: 4 })).toEqual([{ type: 9, sequenceId: 4 }]);
  });

  it('ignores elements a later protocol version appends', () => {
    const ok = Buffer.concat([writeLengthPrefix(4), Buffer.from([0x93, 0x06, 0x01, 0x02])]);
    expect([...messagePackProtocol.parse(ok, 100)]).toEqual([{ type: 6 }]);
  });
});

describe('SharedMessage', () => {
  it('encodes once per protocol and carries JSON-safe messages as the JSON record itself', () => {
    const shared = SharedMessage.of({ type: 1, target: 'm', arguments: ['hi'] });
    expect(shared.wire).toBe(`{"type":1,"target":"m","arguments":["hi"]}\x1e`);
    expect(shared.encoded(jsonProtocol)).toBe(shared.wire);
    const packed = shared.encoded(messagePackProtocol);
    expect(shared.encoded(messagePackProtocol)).toBe(packed);
    const remote = SharedMessage.fromWire(shared.wire);
    expect(remote.encoded(jsonProtocol)).toBe(shared.wire);
    expect(remote.encoded(messagePackProtocol)).toEqual(packed);
  });

  it('carries binary and dates packed, so that a remote MessagePack client gets them unchanged', () => {
    const when = new Date(1_700_000_000_123);
    const shared = SharedMessage.of({ type: 1, target: 'm', arguments: [Buffer.from([1, 2, 3]), when] });
    expect(shared.wire.startsWith('m:')).toBe(true);
    const remote = SharedMessage.fromWire(shared.wire);
    expect(remote.message).toEqual({ type: 1, target: 'm', arguments: [Buffer.from([1, 2, 3]), when] });
    expect(remote.encoded(messagePackProtocol)).toEqual(shared.encoded(messagePackProtocol));
    expect(remote.encoded(jsonProtocol)).toBe(
      `{"type":1,"target":"m","arguments":["AQID","${when.toISOString()}"]}\x1e`,
    );
  });
});
