import { ProtocolError } from '../../errors.js';
import type { Frame, HubProtocol } from '../hub-protocol.js';
import { type CompletionMessage, type HubMessage, MessageType } from '../messages.js';

/** Every JSON record ends with the ASCII record separator 0x1E. */
export const RECORD_SEPARATOR = '\u001e';

/**
 * Splits one WebSocket text frame into its records. A frame holds one or more whole records, each ending
 * in 0x1E; a frame that does not end in 0x1E is a protocol error (records never span frames on WebSockets).
 */
export function splitRecords(frame: string): string[] {
  if (!frame.endsWith(RECORD_SEPARATOR)) {
    throw new ProtocolError('Frame does not end with the record separator (0x1E).');
  }
  const records = frame.split(RECORD_SEPARATOR);
  records.pop();
  return records;
}

/** Formats one message as a record, separator included. Binary values become base64 strings, as in ASP.NET. */
export function formatMessage(message: HubMessage): string {
  return JSON.stringify(message, binaryAsBase64) + RECORD_SEPARATOR;
}

/**
 * Formats one message and says whether JSON kept everything: false when it held binary data or dates,
 * which JSON turns into strings (so a MessagePack client must not be served from this text).
 */
export function formatMessageChecked(message: HubMessage): { record: string; lossless: boolean } {
  let lossless = true;
  const record =
    JSON.stringify(message, function (this: Record<string, unknown>, key: string, value: unknown) {
      const raw = this[key];
      if (raw instanceof Uint8Array || raw instanceof Date) lossless = false;
      return binaryAsBase64.call(this, key, value);
    }) + RECORD_SEPARATOR;
  return { record, lossless };
}

// note: Buffer has a toJSON that runs before the replacer, so the replacer looks at the holder's value.
function binaryAsBase64(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  if (raw instanceof Uint8Array) {
    return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64');
  }
  return value;
}

type Json = Record<string, unknown>;

function field<T>(
  obj: Json,
  name: string,
  check: (v: unknown) => v is T,
  what: string,
  required: boolean,
): T | undefined {
  const value = obj[name];
  if (value === undefined || (value === null && !required)) {
    if (required) throw new ProtocolError(`Message of type ${String(obj.type)} is missing '${name}'.`);
    return undefined;
  }
  if (!check(value)) {
    throw new ProtocolError(`Message of type ${String(obj.type)} has '${name}' that is not ${what}.`);
  }
  return value;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isArray = (v: unknown): v is unknown[] => Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
const isHeaders = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every(isString);
const isSequenceId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';

const str = (o: Json, name: string) => field(o, name, isString, 'a string', true) as string;
const optStr = (o: Json, name: string) => field(o, name, isString, 'a string', false);
const headers = (o: Json) => field(o, 'headers', isHeaders, 'an object of strings', false);
const streamIds = (o: Json) => field(o, 'streamIds', isStringArray, 'an array of strings', false);

/** Returns a copy of `message` without the keys whose value is undefined. */
function compact<T extends object>(message: T): T {
  for (const key of Object.keys(message) as (keyof T)[]) {
    if (message[key] === undefined) delete message[key];
  }
  return message;
}

/**
 * Parses and validates one record (without its separator) into a hub message. Unknown properties are
 * ignored, as the spec asks; wrong types and unknown message types are protocol errors.
 */
export function parseMessage(record: string): HubMessage {
  let value: unknown;
  try {
    value = JSON.parse(record);
  } catch {
    throw new ProtocolError('Message is not valid JSON.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('Message is not a JSON object.');
  }
  const o = value as Json;
  if (!Number.isInteger(o.type)) throw new ProtocolError("Message is missing an integer 'type'.");
  switch (o.type) {
    case MessageType.Invocation:
    case MessageType.StreamInvocation: {
      const invocationId =
        o.type === MessageType.StreamInvocation ? str(o, 'invocationId') : optStr(o, 'invocationId');
      return compact({
        type: o.type,
        invocationId,
        target: str(o, 'target'),
        arguments: field(o, 'arguments', isArray, 'an array', true) as unknown[],
        streamIds: streamIds(o),
        headers: headers(o),
      }) as HubMessage;
    }
    case MessageType.StreamItem:
      if (!('item' in o)) throw new ProtocolError("Message of type 2 is missing 'item'.");
      return compact({ type: 2, invocationId: str(o, 'invocationId'), item: o.item, headers: headers(o) });
    case MessageType.Completion: {
      const error = optStr(o, 'error');
      if (error !== undefined && 'result' in o && o.result !== undefined) {
        throw new ProtocolError("Completion has both 'result' and 'error'.");
      }
      // note: built field by field (no spread, no delete): a Completion is parsed for every reliable ack.
      const completion: CompletionMessage = { type: 3, invocationId: str(o, 'invocationId') };
      if ('result' in o) completion.result = o.result;
      if (error !== undefined) completion.error = error;
      const extra = headers(o);
      if (extra !== undefined) completion.headers = extra;
      return completion;
    }
    case MessageType.CancelInvocation:
      return compact({ type: 5, invocationId: str(o, 'invocationId'), headers: headers(o) });
    case MessageType.Ping:
      return { type: 6 };
    case MessageType.Close:
      return compact({
        type: 7,
        error: optStr(o, 'error'),
        allowReconnect: field(o, 'allowReconnect', isBoolean, 'a boolean', false),
      });
    case MessageType.Ack:
    case MessageType.Sequence:
      return {
        type: o.type,
        sequenceId: field(o, 'sequenceId', isSequenceId, 'a positive integer', true) as number,
      };
    default:
      throw new ProtocolError(`Unknown message type ${String(o.type)}.`);
  }
}

/** The JSON hub protocol: text records ending in 0x1E. */
export const jsonProtocol: HubProtocol = {
  name: 'json',
  version: 2,
  transferFormat: 'Text',
  *parse(payload: Frame, maxMessageBytes: number): Iterable<HubMessage> {
    const text = typeof payload === 'string' ? payload : payload.toString('utf8');
    for (const record of splitRecords(text)) {
      checkRecordSize(record, maxMessageBytes);
      yield parseMessage(record);
    }
  },
  write: formatMessage,
};

/** Throws `ERR_MESSAGE_TOO_LARGE` when one record is larger than `limit` bytes in UTF-8. */
export function checkRecordSize(record: string, limit: number): void {
  // note: a UTF-16 length under limit/3 cannot exceed the limit in UTF-8, so most records skip the count.
  if (record.length * 3 > limit && Buffer.byteLength(record) > limit) {
    throw new ProtocolError(
      `Message is larger than the server's limit of ${limit} bytes (maximumReceiveMessageSize).`,
      'ERR_MESSAGE_TOO_LARGE',
    );
  }
}
