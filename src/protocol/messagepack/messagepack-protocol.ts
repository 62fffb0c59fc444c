import { Packr, Unpackr } from 'msgpackr';
import { ProtocolError } from '../../errors.js';
import type { Frame, HubProtocol } from '../hub-protocol.js';
import { type Headers, type HubMessage, MessageType } from '../messages.js';
import { readLengthPrefix, writeLengthPrefix } from './varint.js';

// note: plain MessagePack only: no msgpackr records or extra types, which other decoders do not read;
// undefined is nil (as the official clients write it); dates are the Timestamp extension (-1) both ways.
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  encodeUndefinedAsNil: true,
  // note: the smallest map header (fixmap for {}), as other encoders write, at a small cost in speed.
  variableMapSize: true,
});
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** Completion result kinds (the fourth element of a Completion array). */
const ResultKind = { Error: 1, Void: 2, NonVoid: 3 } as const;

/**
 * The MessagePack hub protocol: each message is a MessagePack array behind a VarInt length prefix, in
 * binary frames. Arrays may carry trailing elements that a later protocol version adds; they are ignored.
 */
export const messagePackProtocol: HubProtocol = {
  name: 'messagepack',
  version: 2,
  transferFormat: 'Binary',
  *parse(payload: Frame, maxMessageBytes: number): Iterable<HubMessage> {
    if (typeof payload === 'string') {
      throw new ProtocolError('Text frames are not supported by the MessagePack hub protocol.');
    }
    let offset = 0;
    while (offset < payload.length) {
      const { length, start } = readLengthPrefix(payload, offset);
      if (length > maxMessageBytes) {
        throw new ProtocolError(
          `Message is larger than the server's limit of ${maxMessageBytes} bytes (maximumReceiveMessageSize).`,
          'ERR_MESSAGE_TOO_LARGE',
        );
      }
      const end = start + length;
      if (end > payload.length) throw new ProtocolError('MessagePack message is truncated.');
      offset = end;
      yield toHubMessage(unpack(payload.subarray(start, end)));
    }
  },
  write(message: HubMessage): Buffer {
    const body = packr.pack(toArray(message));
    return Buffer.concat([writeLengthPrefix(body.length), body]);
  },
};

/** Encodes a value with the protocol's codec (no framing): the backplane's form for binary sends. */
export const packValue = (value: unknown): Buffer => packr.pack(value);
export const unpackValue = (bytes: Buffer): unknown => unpack(bytes);

function unpack(bytes: Buffer): unknown {
  if (bytes.length === 0) throw new ProtocolError('MessagePack message is empty.');
  try {
    return unpackr.unpack(bytes);
  } catch {
    throw new ProtocolError('Message is not valid MessagePack.');
  }
}

function toArray(message: HubMessage): unknown[] {
  switch (message.type) {
    case MessageType.Invocation:
    case MessageType.StreamInvocation: {
      const base = [
        message.type,
        message.headers ?? {},
        message.invocationId ?? null,
        message.target,
        message.arguments,
      ];
      return message.streamIds ? [...base, message.streamIds] : base;
    }
    case MessageType.StreamItem:
      return [2, message.headers ?? {}, message.invocationId, message.item];
    case MessageType.Completion: {
      const head = [3, message.headers ?? {}, message.invocationId];
      if (message.error !== undefined) return [...head, ResultKind.Error, message.error];
      if ('result' in message && message.result !== undefined)
        return [...head, ResultKind.NonVoid, message.result];
      return [...head, ResultKind.Void];
    }
    case MessageType.CancelInvocation:
      return [5, message.headers ?? {}, message.invocationId];
    case MessageType.Ping:
      return [6];
    case MessageType.Close:
      return message.allowReconnect === undefined
        ? [7, message.error ?? null]
        : [7, message.error ?? null, message.allowReconnect];
    case MessageType.Ack:
    case MessageType.Sequence:
      return [message.type, message.sequenceId];
  }
}

type Fields = readonly unknown[];

function need(fields: Fields, count: number, what: string): void {
  if (fields.length < count) {
    throw new ProtocolError(`${what} message has ${fields.length} elements; it needs at least ${count}.`);
  }
}

function wrong(what: string, name: string, expected: string): never {
  throw new ProtocolError(`${what} message has '${name}' that is not ${expected}.`);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  !(v instanceof Uint8Array) &&
  !(v instanceof Date);

function headersAt(fields: Fields, what: string): Headers | undefined {
  const value = fields[1];
  if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    wrong(what, 'headers', 'a map of strings');
  }
  return Object.keys(value).length > 0 ? (value as Headers) : undefined;
}

function stringAt(fields: Fields, index: number, what: string, name: string): string {
  const value = fields[index];
  if (typeof value !== 'string') wrong(what, name, 'a string');
  return value;
}

function sequenceIdAt(fields: Fields, what: string): number {
  const value = fields[1];
  if (!Number.isSafeInteger(value) || (value as number) < 1) wrong(what, 'sequenceId', 'a positive integer');
  return value as number;
}

function withHeaders<T extends object>(message: T, headers: Headers | undefined): T {
  return headers ? { ...message, headers } : message;
}

/** Validates one decoded MessagePack value as a hub message: the spec's arrays, field by field. */
function toHubMessage(value: unknown): HubMessage {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ProtocolError('MessagePack message is not a non-empty array.');
  }
  const fields: Fields = value;
  const type = fields[0];
  if (!Number.isInteger(type)) throw new ProtocolError('MessagePack message type is not an integer.');
  switch (type) {
    case MessageType.Invocation:
    case MessageType.StreamInvocation: {
      const what = type === 1 ? 'Invocation' : 'StreamInvocation';
      need(fields, 5, what);
      const headers = headersAt(fields, what);
      const id = fields[2];
      if (type === 4 ? typeof id !== 'string' : id !== null && typeof id !== 'string') {
        wrong(what, 'invocationId', type === 4 ? 'a string' : 'a string or nil');
      }
      const args = fields[4];
      if (!Array.isArray(args)) wrong(what, 'arguments', 'an array');
      const streamIds = fields[5];
      if (streamIds !== undefined && streamIds !== null) {
        if (!Array.isArray(streamIds) || !streamIds.every((s) => typeof s === 'string')) {
          wrong(what, 'streamIds', 'an array of strings');
        }
      }
      const message = {
        type,
        target: stringAt(fields, 3, what, 'target'),
        arguments: args,
        ...(typeof id === 'string' ? { invocationId: id } : {}),
        ...(Array.isArray(streamIds) && streamIds.length > 0 ? { streamIds: streamIds as string[] } : {}),
      };
      return withHeaders(message, headers) as HubMessage;
    }
    case MessageType.StreamItem: {
      need(fields, 4, 'StreamItem');
      const headers = headersAt(fields, 'StreamItem');
      const invocationId = stringAt(fields, 2, 'StreamItem', 'invocationId');
      return withHeaders({ type: 2, invocationId, item: fields[3] }, headers);
    }
    case MessageType.Completion: {
      need(fields, 4, 'Completion');
      const headers = headersAt(fields, 'Completion');
      const invocationId = stringAt(fields, 2, 'Completion', 'invocationId');
      const kind = fields[3];
      if (kind === ResultKind.Void) return withHeaders({ type: 3, invocationId }, headers);
      if (kind !== ResultKind.Error && kind !== ResultKind.NonVoid) {
        wrong('Completion', 'resultKind', '1, 2 or 3');
      }
      need(fields, 5, 'Completion');
      if (kind === ResultKind.Error) {
        return withHeaders(
          { type: 3, invocationId, error: stringAt(fields, 4, 'Completion', 'error') },
          headers,
        );
      }
      return withHeaders({ type: 3, invocationId, result: fields[4] }, headers);
    }
    case MessageType.CancelInvocation: {
      need(fields, 3, 'CancelInvocation');
      const headers = headersAt(fields, 'CancelInvocation');
      return withHeaders(
        { type: 5, invocationId: stringAt(fields, 2, 'CancelInvocation', 'invocationId') },
        headers,
      );
    }
    case MessageType.Ping:
      return { type: 6 };
    case MessageType.Close: {
      need(fields, 2, 'Close');
      const error = fields[1];
      if (error !== null && typeof error !== 'string') wrong('Close', 'error', 'a string or nil');
      const allowReconnect = fields[2];
      if (allowReconnect !== undefined && typeof allowReconnect !== 'boolean') {
        wrong('Close', 'allowReconnect', 'a boolean');
      }
      return {
        type: 7,
        ...(typeof error === 'string' ? { error } : {}),
        ...(allowReconnect !== undefined ? { allowReconnect } : {}),
      };
    }
    case MessageType.Ack:
    case MessageType.Sequence:
      need(fields, 2, type === 8 ? 'Ack' : 'Sequence');
      return { type, sequenceId: sequenceIdAt(fields, type === 8 ? 'Ack' : 'Sequence') };
    default:
      throw new ProtocolError(`Unknown message type ${String(type)}.`);
  }
}
