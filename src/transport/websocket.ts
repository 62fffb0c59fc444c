import WebSocket from 'ws';
import type { Frame } from '../protocol/hub-protocol.js';
import type { Transport, TransportEvents } from './transport.js';

/** Where a socket's listeners find their transport: the listeners are shared, not closures per socket. */
const TRANSPORT = Symbol('relayhub.transport');
type Owned = WebSocket & { [TRANSPORT]: WebSocketTransport };

/**
 * The open WebSockets of one server, so that shutdown can terminate those whose close handshake is still
 * running. A list threaded through the transports themselves (two fields each), instead of ws's client
 * tracking, which costs every socket a Set entry, a closure and its context, and a second 'close'
 * listener. It also bounds the pongs a client's pings may queue (ws's automatic pong, which keeps a
 * closure per socket, is off).
 */
export class WebSocketSet {
  /** @internal the first transport of the list. */
  head: WebSocketTransport | undefined;

  /**
   * @param maxBufferedBytes A socket whose unsent bytes pass this when a ping arrives is terminated
   *   instead of answered: a client that pings without reading cannot pile pongs up in memory.
   */
  constructor(readonly maxBufferedBytes: number) {}

  /** Terminates every socket still open. */
  terminateAll(): void {
    for (let t = this.head; t; ) {
      const next = t.next;
      t.terminate();
      t = next;
    }
  }
}

/** The WebSockets transport: full duplex; text frames for text protocols, binary frames for binary ones. */
export class WebSocketTransport implements Transport {
  readonly kind = 'WebSockets' as const;
  readonly #ws: WebSocket;
  readonly #set: WebSocketSet;
  #events: TransportEvents | undefined;
  /** @internal neighbours in {@link WebSocketSet}'s list while the socket is open. */
  prev: WebSocketTransport | undefined;
  /** @internal */
  next: WebSocketTransport | undefined;

  /** Takes `ws` over (listeners, the set) right away; {@link bind} says where its events go. */
  constructor(ws: WebSocket, set: WebSocketSet) {
    this.#ws = ws;
    this.#set = set;
    (ws as Owned)[TRANSPORT] = this;
    ws.on('message', WebSocketTransport.#onMessage);
    ws.on('close', WebSocketTransport.#onClose);
    ws.on('ping', WebSocketTransport.#onPing);
    // note: an 'error' is always followed by 'close'; without a listener it would throw.
    ws.on('error', ignore);
    if (ws.readyState === WebSocket.CLOSED) return;
    this.next = set.head;
    if (set.head) set.head.prev = this;
    set.head = this;
  }

  get writable(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  bind(events: TransportEvents): void {
    this.#events = events;
  }

  static #onMessage(this: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    (this as Owned)[TRANSPORT].#events?.data(isBinary ? toBuffer(data) : toBuffer(data).toString('utf8'));
  }

  static #onClose(this: WebSocket, code: number): void {
    const transport = (this as Owned)[TRANSPORT];
    transport.#unlink();
    transport.#events?.closed(code === 1000, `Socket closed (${code}).`);
  }

  /** A WebSocket ping is answered with its pong (RFC 6455 §5.5.2), unless the client does not read. */
  static #onPing(this: WebSocket, data: Buffer): void {
    if (this.readyState !== WebSocket.OPEN) return;
    if (this.bufferedAmount > (this as Owned)[TRANSPORT].#set.maxBufferedBytes) return this.terminate();
    this.pong(data, false);
  }

  #unlink(): void {
    const set = this.#set;
    if (this.prev) this.prev.next = this.next;
    else if (set.head === this) set.head = this.next;
    if (this.next) this.next.prev = this.prev;
    this.prev = undefined;
    this.next = undefined;
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

  /** Closes with `code` (after the close handshake), for a socket no connection takes. */
  refuse(code: number): void {
    this.#ws.close(code);
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
