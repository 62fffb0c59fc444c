/**
 * Random bytes for connection ids and tokens, drawn from the CSPRNG in bulk: one call per 256 ids instead
 * of one per id (the opening path makes two per connection).
 */
import { randomBytes } from 'node:crypto';

/** Bytes of a connection id or token's random part: 128 bits. */
export const ID_BYTES = 16;

let pool = Buffer.alloc(0);
let offset = 0;

/** The next {@link ID_BYTES} random bytes of the pool (a view: copy or encode it before the next call). */
function take(): Buffer {
  if (offset + ID_BYTES > pool.length) {
    pool = randomBytes(ID_BYTES * 256);
    offset = 0;
  }
  offset += ID_BYTES;
  return pool.subarray(offset - ID_BYTES, offset);
}

/** URL-safe and unguessable: the client puts ids and tokens in the WebSocket URL without encoding them. */
export function newId(): string {
  return take().toString('base64url');
}

/** Writes {@link ID_BYTES} random bytes into `target` at `at`. */
export function fillRandomId(target: Buffer, at: number): void {
  take().copy(target, at);
}
