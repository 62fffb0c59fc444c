import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import {
  formatHandshakeError,
  HANDSHAKE_OK,
  parseHandshakeRequest,
  SUPPORTED_PROTOCOL_VERSIONS,
} from '../../src/protocol/handshake.js';
import { splitRecords } from '../../src/protocol/json/json-protocol.js';

/** Asserts that parsing `record` throws a ProtocolError with code ERR_HANDSHAKE matching `message`. */
function expectHandshakeError(record: string, message: RegExp): void {
  let caught: unknown;
  try {
    parseHandshakeRequest(record);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect((caught as ProtocolError).code).toBe('ERR_HANDSHAKE');
  expect((caught as ProtocolError).message).toMatch(message);
}

describe('parseHandshakeRequest', () => {
  it('accepts the json protocol, versions 1 and 2', () => {
    expect(SUPPORTED_PROTOCOL_VERSIONS).toEqual([1, 2]);
    expect(parseHandshakeRequest('{"protocol":"json","version":1}')).toEqual({
      protocol: 'json',
      version: 1,
    });
    expect(parseHandshakeRequest('{"protocol":"json","version":2}')).toEqual({
      protocol: 'json',
      version: 2,
    });
  });

  it('accepts the fields in any order and ignores unknown ones', () => {
    expect(parseHandshakeRequest('{"version":1,"extra":[1,2],"protocol":"json"}')).toEqual({
      protocol: 'json',
      version: 1,
    });
  });

  it.each(['', '{', 'json', '{"protocol":"json","version":1}}', "{'protocol':'json'}"])(
    'refuses the invalid JSON %j',
    (record) => {
      expectHandshakeError(record, /not valid JSON/);
    },
  );

  it.each(['null', '[]', '[{"protocol":"json","version":1}]', '1', '"json"', 'false'])(
    'refuses the non-object %s',
    (record) => {
      expectHandshakeError(record, /not a JSON object/);
    },
  );

  it.each(['{"version":1}', '{"protocol":1,"version":1}', '{"protocol":null,"version":1}'])(
    'refuses %s, which has no protocol name',
    (record) => {
      expectHandshakeError(record, /missing 'protocol'/);
    },
  );

  it.each(['JSON', 'MessagePack', 'blazorpack', ''])('refuses the protocol %j and names it', (protocol) => {
    expectHandshakeError(
      JSON.stringify({ protocol, version: 1 }),
      new RegExp(`The protocol '${protocol}' is not supported; this server speaks 'json' and 'messagepack'`),
    );
  });

  it('accepts messagepack, and refuses it when the server turned it off', () => {
    expect(parseHandshakeRequest('{"protocol":"messagepack","version":1}')).toEqual({
      protocol: 'messagepack',
      version: 1,
    });
    let caught: unknown;
    try {
      parseHandshakeRequest('{"protocol":"messagepack","version":1}', ['json']);
    } catch (error) {
      caught = error;
    }
    expect((caught as ProtocolError).code).toBe('ERR_HANDSHAKE');
    expect((caught as ProtocolError).message).toBe(
      "The protocol 'messagepack' is not supported; this server speaks 'json'.",
    );
  });

  it.each([0, 3, -1, 1.5, '1', null, true, [1]])('refuses the version %j', (version) => {
    expectHandshakeError(
      JSON.stringify({ protocol: 'json', version }),
      /protocol version .* is not supported/,
    );
  });

  it('refuses a missing version', () => {
    expectHandshakeError('{"protocol":"json"}', /protocol version 'undefined' is not supported/);
  });

  it.each([
    '{"protocol":"json","version":{}}',
    '{"protocol":"json","version":{"toString":1}}',
    '{"protocol":"json","version":{"toString":1,"valueOf":2}}',
  ])('refuses the object version %s with a ProtocolError (not a TypeError)', (record) => {
    expectHandshakeError(record, /protocol version .* is not supported/);
  });
});

describe('handshake responses', () => {
  it('answers success with an empty object and the separator', () => {
    expect(HANDSHAKE_OK).toBe('{}\u001e');
    expect(JSON.parse(splitRecords(HANDSHAKE_OK)[0] as string)).toEqual({});
  });

  it('formats an error as one record with the error text, escaping what needs it', () => {
    const text = `The protocol 'x"y' is not supported.\n`;
    const frame = formatHandshakeError(text);
    expect(frame.endsWith('\u001e')).toBe(true);
    const records = splitRecords(frame);
    expect(records).toHaveLength(1);
    expect(JSON.parse(records[0] as string)).toEqual({ error: text });
  });
});
