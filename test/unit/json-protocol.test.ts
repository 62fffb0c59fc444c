import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import {
  formatMessage,
  parseMessage,
  RECORD_SEPARATOR,
  splitRecords,
} from '../../src/protocol/json/json-protocol.js';
import type { HubMessage } from '../../src/protocol/messages.js';

const RS = '\u001e';
const parse = (value: unknown) => parseMessage(JSON.stringify(value));

/** Asserts that `fn` throws a ProtocolError (code ERR_PROTOCOL) whose message matches `message`. */
function expectProtocolError(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect((caught as ProtocolError).code).toBe('ERR_PROTOCOL');
  expect((caught as ProtocolError).message).toMatch(message);
}

describe('splitRecords', () => {
  it('uses 0x1E as the record separator', () => {
    expect(RECORD_SEPARATOR).toBe('\x1e');
  });

  it('returns the one record of a frame without its separator', () => {
    expect(splitRecords(`{"type":6}${RS}`)).toEqual(['{"type":6}']);
  });

  it('returns every record of a frame that holds several, in order', () => {
    const frame = `{"type":6}${RS}{"type":1,"target":"A","arguments":[]}${RS}{"type":7}${RS}`;
    expect(splitRecords(frame)).toEqual([
      '{"type":6}',
      '{"type":1,"target":"A","arguments":[]}',
      '{"type":7}',
    ]);
  });

  it('keeps empty records (which then fail to parse) instead of dropping them', () => {
    expect(splitRecords(`${RS}`)).toEqual(['']);
    expect(splitRecords(`{"type":6}${RS}${RS}`)).toEqual(['{"type":6}', '']);
  });

  it('refuses a frame that does not end with the separator', () => {
    expectProtocolError(() => splitRecords('{"type":6}'), /record separator/);
  });

  it('refuses a frame whose last record is cut off, even when earlier records are whole', () => {
    expectProtocolError(() => splitRecords(`{"type":6}${RS}{"type":6}`), /record separator/);
  });

  it('refuses an empty frame', () => {
    expectProtocolError(() => splitRecords(''), /record separator/);
  });
});

describe('parseMessage: framing of the JSON value', () => {
  it.each(['{', '', 'undefined', "{'type':1}", '{"type":1,}', 'NaN'])('refuses invalid JSON %j', (text) => {
    expectProtocolError(() => parseMessage(text), /not valid JSON/);
  });

  it.each(['null', '[]', '[{"type":6}]', '1', '"text"', 'true'])('refuses the non-object JSON %s', (text) => {
    expectProtocolError(() => parseMessage(text), /not a JSON object/);
  });

  it.each([{}, { type: '1' }, { type: null }, { type: 1.5 }, { type: true }, { type: [1] }])(
    'refuses a message without an integer type: %j',
    (value) => {
      expectProtocolError(() => parse(value), /integer 'type'/);
    },
  );

  it.each([0, -1, 10, 42, 1000])('refuses the unknown message type %i', (type) => {
    expectProtocolError(() => parse({ type }), new RegExp(`Unknown message type ${type}\\.`));
  });

  it('accepts `type` anywhere in the object, as the official client writes it last', () => {
    expect(parseMessage('{"target":"Send","arguments":[1],"invocationId":"0","type":1}')).toEqual({
      type: 1,
      invocationId: '0',
      target: 'Send',
      arguments: [1],
    });
  });

  it('ignores unknown properties on every message type', () => {
    const extra = { unknown: 1, nested: { a: [1] }, type2: 'x' };
    expect(parse({ type: 1, target: 'A', arguments: [], ...extra })).toEqual({
      type: 1,
      target: 'A',
      arguments: [],
    });
    expect(parse({ type: 2, invocationId: '1', item: 5, ...extra })).toEqual({
      type: 2,
      invocationId: '1',
      item: 5,
    });
    expect(parse({ type: 3, invocationId: '1', ...extra })).toEqual({ type: 3, invocationId: '1' });
    expect(parse({ type: 5, invocationId: '1', ...extra })).toEqual({ type: 5, invocationId: '1' });
    expect(parse({ type: 6, ...extra })).toEqual({ type: 6 });
    expect(parse({ type: 7, ...extra })).toEqual({ type: 7 });
    expect(parse({ type: 8, sequenceId: 2, ...extra })).toEqual({ type: 8, sequenceId: 2 });
  });
});

describe('parseMessage: Invocation (1)', () => {
  it('parses a non-blocking invocation (no invocationId)', () => {
    expect(parse({ type: 1, target: 'Send', arguments: ['a', 1, null] })).toEqual({
      type: 1,
      target: 'Send',
      arguments: ['a', 1, null],
    });
  });

  it('parses a blocking invocation with invocationId, streamIds and headers', () => {
    const message = parse({
      type: 1,
      invocationId: '7',
      target: 'Up',
      arguments: [],
      streamIds: ['0', '1'],
      headers: { trace: 'abc' },
    });
    expect(message).toEqual({
      type: 1,
      invocationId: '7',
      target: 'Up',
      arguments: [],
      streamIds: ['0', '1'],
      headers: { trace: 'abc' },
    });
  });

  it('treats a null invocationId, streamIds or headers as absent', () => {
    const message = parse({
      type: 1,
      invocationId: null,
      target: 'A',
      arguments: [],
      streamIds: null,
      headers: null,
    });
    expect(message).toEqual({ type: 1, target: 'A', arguments: [] });
    expect(Object.keys(message)).toEqual(['type', 'target', 'arguments']);
  });

  it.each([
    [{ type: 1, arguments: [] }, /missing 'target'/],
    [{ type: 1, target: 'A' }, /missing 'arguments'/],
    [{ type: 1, target: 42, arguments: [] }, /'target' that is not a string/],
    [{ type: 1, target: null, arguments: [] }, /'target' that is not a string/],
    [{ type: 1, target: 'A', arguments: {} }, /'arguments' that is not an array/],
    [{ type: 1, target: 'A', arguments: 'x' }, /'arguments' that is not an array/],
    [{ type: 1, target: 'A', arguments: null }, /'arguments' that is not an array/],
    [{ type: 1, invocationId: 1, target: 'A', arguments: [] }, /'invocationId' that is not a string/],
    [{ type: 1, target: 'A', arguments: [], streamIds: '0' }, /'streamIds' that is not an array of strings/],
    [{ type: 1, target: 'A', arguments: [], streamIds: [0] }, /'streamIds' that is not an array of strings/],
    [
      { type: 1, target: 'A', arguments: [], headers: { a: 1 } },
      /'headers' that is not an object of strings/,
    ],
    [{ type: 1, target: 'A', arguments: [], headers: ['a'] }, /'headers' that is not an object of strings/],
    [{ type: 1, target: 'A', arguments: [], headers: 'a' }, /'headers' that is not an object of strings/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });

  it('names the message type in field errors', () => {
    expectProtocolError(() => parse({ type: 1, target: 1, arguments: [] }), /^Message of type 1 /);
  });
});

describe('parseMessage: StreamItem (2)', () => {
  it.each([null, 0, false, '', 'x', [1], { a: 1 }])('parses the item %j', (item) => {
    expect(parse({ type: 2, invocationId: '3', item })).toEqual({ type: 2, invocationId: '3', item });
  });

  it('keeps headers', () => {
    expect(parse({ type: 2, invocationId: '3', item: 1, headers: { h: 'v' } })).toEqual({
      type: 2,
      invocationId: '3',
      item: 1,
      headers: { h: 'v' },
    });
  });

  it.each([
    [{ type: 2, invocationId: '3' }, /missing 'item'/],
    [{ type: 2, item: 1 }, /missing 'invocationId'/],
    [{ type: 2, invocationId: 3, item: 1 }, /'invocationId' that is not a string/],
    [{ type: 2, invocationId: null, item: 1 }, /'invocationId' that is not a string/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });
});

describe('parseMessage: Completion (3)', () => {
  it('parses a completion without a result', () => {
    const message = parse({ type: 3, invocationId: '1' });
    expect(message).toEqual({ type: 3, invocationId: '1' });
    expect('result' in message).toBe(false);
  });

  it.each([null, 0, false, '', { a: [1] }])('parses the result %j and keeps it present', (result) => {
    const message = parse({ type: 3, invocationId: '1', result });
    expect(message).toEqual({ type: 3, invocationId: '1', result });
    expect('result' in message).toBe(true);
  });

  it('parses an error', () => {
    expect(parse({ type: 3, invocationId: '1', error: 'boom', headers: { a: 'b' } })).toEqual({
      type: 3,
      invocationId: '1',
      error: 'boom',
      headers: { a: 'b' },
    });
  });

  it.each([
    { type: 3, invocationId: '1', result: 1, error: 'boom' },
    { type: 3, invocationId: '1', result: null, error: 'boom' },
    { type: 3, invocationId: '1', result: false, error: '' },
  ])('refuses a completion with both a result and an error: %j', (value) => {
    expectProtocolError(() => parse(value), /both 'result' and 'error'/);
  });

  it.each([
    [{ type: 3 }, /missing 'invocationId'/],
    [{ type: 3, invocationId: 1 }, /'invocationId' that is not a string/],
    [{ type: 3, invocationId: '1', error: 42 }, /'error' that is not a string/],
    [{ type: 3, invocationId: '1', error: { message: 'x' } }, /'error' that is not a string/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });
});

describe('parseMessage: StreamInvocation (4)', () => {
  it('parses a stream invocation', () => {
    expect(parse({ type: 4, invocationId: '2', target: 'Count', arguments: [3], streamIds: ['1'] })).toEqual({
      type: 4,
      invocationId: '2',
      target: 'Count',
      arguments: [3],
      streamIds: ['1'],
    });
  });

  it.each([
    [{ type: 4, target: 'Count', arguments: [] }, /missing 'invocationId'/],
    [{ type: 4, invocationId: null, target: 'Count', arguments: [] }, /'invocationId' that is not a string/],
    [{ type: 4, invocationId: 2, target: 'Count', arguments: [] }, /'invocationId' that is not a string/],
    [{ type: 4, invocationId: '2', arguments: [] }, /missing 'target'/],
    [{ type: 4, invocationId: '2', target: 'Count', arguments: 3 }, /'arguments' that is not an array/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });
});

describe('parseMessage: CancelInvocation (5)', () => {
  it('parses a cancel', () => {
    expect(parse({ type: 5, invocationId: '2' })).toEqual({ type: 5, invocationId: '2' });
  });

  it.each([
    [{ type: 5 }, /missing 'invocationId'/],
    [{ type: 5, invocationId: 2 }, /'invocationId' that is not a string/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });
});

describe('parseMessage: Ping (6)', () => {
  it('parses a ping and drops any headers', () => {
    expect(parse({ type: 6 })).toEqual({ type: 6 });
    expect(parse({ type: 6, headers: { a: 'b' } })).toEqual({ type: 6 });
  });
});

describe('parseMessage: Close (7)', () => {
  it.each([
    [{ type: 7 }, { type: 7 }],
    [
      { type: 7, error: 'bye' },
      { type: 7, error: 'bye' },
    ],
    [
      { type: 7, allowReconnect: true },
      { type: 7, allowReconnect: true },
    ],
    [
      { type: 7, error: 'bye', allowReconnect: false },
      { type: 7, error: 'bye', allowReconnect: false },
    ],
    [{ type: 7, error: null, allowReconnect: null }, { type: 7 }],
  ])('parses %j', (value, expected) => {
    expect(parse(value)).toEqual(expected);
  });

  it.each([
    [{ type: 7, error: 1 }, /'error' that is not a string/],
    [{ type: 7, allowReconnect: 'yes' }, /'allowReconnect' that is not a boolean/],
    [{ type: 7, allowReconnect: 1 }, /'allowReconnect' that is not a boolean/],
  ])('refuses %j', (value, message) => {
    expectProtocolError(() => parse(value), message);
  });
});

describe.each([
  [8, 'Ack'],
  [9, 'Sequence'],
])('parseMessage: %s (%s)', (type) => {
  it.each([1, 2, 1_000_000, Number.MAX_SAFE_INTEGER])('parses sequenceId %i', (sequenceId) => {
    expect(parse({ type, sequenceId })).toEqual({ type, sequenceId });
  });

  it('refuses a message without sequenceId', () => {
    expectProtocolError(() => parse({ type }), /missing 'sequenceId'/);
    expectProtocolError(
      () => parse({ type, sequenceId: null }),
      /'sequenceId' that is not a positive integer/,
    );
  });

  it.each([0, -1, 1.5, '1', true, [1], 2 ** 60])('refuses sequenceId %j', (sequenceId) => {
    expectProtocolError(() => parse({ type, sequenceId }), /'sequenceId' that is not a positive integer/);
  });
});

describe('formatMessage', () => {
  const messages: HubMessage[] = [
    { type: 1, target: 'Send', arguments: ['a', 1, { b: [true, null] }] },
    { type: 1, invocationId: '0', target: 'Up', arguments: [], streamIds: ['1'], headers: { k: 'v' } },
    { type: 2, invocationId: '1', item: { deep: ['x'] } },
    { type: 2, invocationId: '1', item: null },
    { type: 3, invocationId: '1' },
    { type: 3, invocationId: '1', result: 0 },
    { type: 3, invocationId: '1', result: null },
    { type: 3, invocationId: '1', error: 'boom' },
    { type: 4, invocationId: '2', target: 'Count', arguments: [10] },
    { type: 5, invocationId: '2' },
    { type: 6 },
    { type: 7 },
    { type: 7, error: 'bye', allowReconnect: true },
    { type: 8, sequenceId: 3 },
    { type: 9, sequenceId: 4 },
  ];

  it.each(messages)('round-trips %j through splitRecords and parseMessage', (message) => {
    const frame = formatMessage(message);
    expect(frame.endsWith(RS)).toBe(true);
    expect(frame.indexOf(RS)).toBe(frame.length - 1);
    const records = splitRecords(frame);
    expect(records).toHaveLength(1);
    expect(parseMessage(records[0] as string)).toEqual(message);
  });

  it('round-trips many messages joined into one frame', () => {
    const frame = messages.map(formatMessage).join('');
    expect(splitRecords(frame).map(parseMessage)).toEqual(messages);
  });

  it('escapes a record separator inside a string so that it cannot split the record', () => {
    const message: HubMessage = { type: 1, target: 'Send', arguments: [`a${RS}b`] };
    const frame = formatMessage(message);
    expect(splitRecords(frame)).toHaveLength(1);
    expect(parseMessage(splitRecords(frame)[0] as string)).toEqual(message);
  });
});
