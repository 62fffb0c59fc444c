import WebSocket from 'ws';
import type { Frame } from '../protocol/hub-protocol.js';
import type { Transport, TransportEvents } from './transport.js';

/** Where a socket's listeners find their transport: the listeners are shared, not closures per socket. */
const TRANSPORT = Symbol('relayhub.transport');
type Owned = WebSocket & { [TRANSPORT]: WebSocketTransport };

/** The WebSockets transport: full duplex; text frames for text protocols, binary frames for binary ones. */
export class WebSocketTransport implements Transport {
  readonly kind = 'WebSockets' as const;
  readonly #ws: WebSocket;
  #events: TransportEvents | undefined;

  constructor(ws: WebSocket) {
    this.#ws = ws;
  }

  get writable(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  bind(events: TransportEvents): void {
    this.#events = events;
    (this.#ws as Owned)[TRANSPORT] = this;
    this.#ws.on('message', WebSocketTransport.#onMessage);
    this.#ws.on('close', WebSocketTransport.#onClose);
    // note: an 'error' is always followed by 'close'; without a listener it would throw.
    this.#ws.on('error', ignore);
  }

  static #onMessage(this: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    (this as Owned)[TRANSPORT].#events?.data(isBinary ? toBuffer(data) : toBuffer(data).toString('utf8'));
  }

  static #onClose(this: WebSocket, code: number): void {
    (this as Owned)[TRANSPORT].#events?.closed(code === 1000, `Socket closed (${code}).`);
  }

  send(payload: Frame): void {
    if (this.writable) this.#ws.send(payload, { binary: typeof payload !== 'string' });
  }

  pause(): void {
    this.#ws.pause();
  }

  resume(): void {
    this.#ws.resume();
  }

  close(): void {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
    else if (this.#ws.readyState === WebSocket.CONNECTING) this.#ws.terminate();
  }

  terminate(): void {
    this.#ws.terminate();
  }
}

const ignore = (): void => undefined;

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
