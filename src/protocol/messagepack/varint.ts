import { ProtocolError } from '../../errors.js';

/** The largest message length a prefix may carry: 2^31 - 1 (five 7-bit groups, as in the spec). */
const MAX_LENGTH = 0x7fffffff;
const MAX_PREFIX_BYTES = 5;

/** Writes `length` as the spec's VarInt: 7 bits per byte, least significant first, high bit = more. */
export function writeLengthPrefix(length: number): Buffer {
  const bytes: number[] = [];
  let rest = length;
  do {
    let byte = rest & 0x7f;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return Buffer.from(bytes);
}

/**
 * Reads a VarInt length prefix at `offset`; returns the length and where the message starts. Throws a
 * `ProtocolError` when the prefix is cut off or longer than five bytes (more than 2 GiB).
 */
export function readLengthPrefix(buffer: Buffer, offset: number): { length: number; start: number } {
  let length = 0;
  for (let i = 0; i < MAX_PREFIX_BYTES; i++) {
    const at = offset + i;
    if (at >= buffer.length) throw new ProtocolError('MessagePack length prefix is truncated.');
    const byte = buffer[at] as number;
    length += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) {
      if (length > MAX_LENGTH) break;
      return { length, start: at + 1 };
    }
  }
  throw new ProtocolError('MessagePack length prefix is too large (messages are limited to 2 GiB).');
}
