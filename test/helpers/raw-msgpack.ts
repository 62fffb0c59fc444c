import { decode, encode } from '@msgpack/msgpack';
import WebSocket from 'ws';
import { writeLengthPrefix } from '../../src/protocol/messagepack/varint.js';
import { wsUrl } from './raw-ws.js';

/** A VarInt length prefix (the server's writer; the messages themselves are encoded independently). */
export const lengthPrefix = writeLengthPrefix;

/** One framed MessagePack hub message, encoded with @msgpack/msgpack (the official client's codec). */
export const packed = (value: unknown): Buffer => {
  const body = Buffer.from(encode(value));
  return Buffer.concat([lengthPrefix(body.length), body]);
};

/** Splits a binary payload into decoded messages. */
export function unpackAll(payload: Buffer): unknown[] {
  const out: unknown[] = [];
  let offset = 0;
  while (offset < payload.length) {
    let length = 0;
    let shift = 0;
    let byte: number;
    do {
      byte = payload[offset++] as number;
      length += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    out.push(decode(payload.subarray(offset, offset + length)));
    offset += length;
  }
  return out;
}

/** A hand-written MessagePack hub protocol client on `ws`: every decoded message, and frames of any shape. */
export class RawMsgpackClient {
  readonly messages: unknown[][] = [];
  handshake: unknown;
  closeCode: number | undefined;
  readonly #closed: Promise<number>;

  private constructor(readonly ws: WebSocket) {
    this.#closed = new Promise((resolve) => ws.on('close', (code) => resolve((this.closeCode = code))));
    ws.on('message', (data: Buffer, isBinary) => {
      let body = data;
      if (this.handshake === undefined) {
        const end = data.indexOf(0x1e);
        this.handshake = JSON.parse(data.toString('utf8', 0, end));
        body = data.subarray(end + 1);
      }
      if (isBinary && body.length > 0) this.messages.push(...(unpackAll(body) as unknown[][]));
    });
  }

  /** Opens `url`, sends the messagepack handshake and waits for its answer. */
  static async open(url: string, version = 1): Promise<RawMsgpackClient> {
    const ws = new WebSocket(wsUrl(url));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const client = new RawMsgpackClient(ws);
    ws.send(`{"protocol":"messagepack","version":${version}}\x1e`);
    const deadline = Date.now() + 5_000;
    while (client.handshake === undefined && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    return client;
  }

  send(payload: Buffer | string): void {
    this.ws.send(payload, { binary: typeof payload !== 'string' });
  }

  waitForClose(): Promise<number> {
    return this.#closed;
  }

  close(): void {
    this.ws.terminate();
  }
}
