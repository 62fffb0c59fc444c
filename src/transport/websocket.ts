import WebSocket from 'ws';
import type { Frame } from '../protocol/hub-protocol.js';
import type { Transport, TransportEvents } from './transport.js';

/**
 * The WebSocket class the server's `WebSocketServer` creates (its `WebSocket` option): events go straight
 * to the socket's transport from `emit`, so a socket carries no listeners at all (ws's listener
 * dictionary, one entry and array per event, was ~300 B per idle socket) and no closure.
 */
export class HubWebSocket extends WebSocket {
  /** @internal set once by the transport that owns the socket. */
  transport: WebSocketTransport | undefined = undefined;

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const transport = this.transport;
    if (transport === undefined) return super.emit(event, ...args);
    switch (event) {
      case 'message':
        transport.onMessage(args[0] as WebSocket.RawData, args[1] === true);
        return true;
      case 'close':
        transport.onClose(args[0] as number);
        return true;
      case 'ping':
        transport.onPing(args[0] as Buffer);
        return true;
      case 'error':
        // note: an 'error' is always followed by 'close', which ends the connection.
        return true;
      default:
        return super.emit(event, ...args);
    }
  }
}

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
    for (let t = this.head; t;) {
      const next = t.next;
      t.terminate();
      t = next;
    }
  }
}

/** The WebSockets transport: full duplex; text frames for text protocols, binary frames for binary ones. */
export class WebSocketTransport implements Transport {
  readonly kind = 'WebSockets' as const;
  readonly #ws: HubWebSocket;
  readonly #set: WebSocketSet;
  #events: TransportEvents | undefined;
  /** @internal neighbours in {@link WebSocketSet}'s list while the socket is open. */
  prev: WebSocketTransport | undefined;
  /** @internal */
  next: WebSocketTransport | undefined;

  /** Takes `ws` over (listeners, the set) right away; {@link bind} says where its events go. */
  constructor(ws: HubWebSocket, set: WebSocketSet) {
    this.#ws = ws;
    this.#set = set;
    ws.transport = this;
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

  /** @internal from {@link HubWebSocket.emit} */
  onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    this.#events?.data(isBinary ? toBuffer(data) : toBuffer(data).toString('utf8'));
  }

  /** @internal */
  onClose(code: number): void {
    this.#unlink();
    this.#events?.closed(code === 1000, `Socket closed (${code}).`);
  }

  /**
   * @internal A WebSocket ping is answered with its pong (RFC 6455 §5.5.2), unless the client does not
   * read what it is sent.
   */
  onPing(data: Buffer): void {
    const ws = this.#ws;
    if (ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > this.#set.maxBufferedBytes) return ws.terminate();
    ws.pong(data, false);
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

  /**
   * The keep-alive, a whole WebSocket frame encoded once and written to the socket in one write, when ws
   * has nothing of its own waiting (it never has without compression, which the server turns off): ws's
   * send builds a header, corks, buffers two writes and joins them for every ping of every idle socket,
   * ~1 KB of garbage each time. With anything waiting, it goes through ws, behind what waits.
   */
  sendConstant(payload: Frame): void {
    if (!this.writable) return;
    const { _socket: socket, _sender: sender } = this.#ws as unknown as WsInternals;
    const frame = constantFrame(payload);
    if (frame && socket?.writable && sender?._state === SENDER_IDLE && sender._queue.length === 0) {
      socket.write(frame);
    } else this.send(payload);
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

/** What {@link WebSocketTransport.sendConstant} reads of ws 8's own fields (both checked before use). */
interface WsInternals {
  _socket?: { writable: boolean; write(chunk: Buffer): boolean };
  _sender?: { _state: number; _queue: unknown[] };
}

/** ws's Sender state when it is not compressing or reading a Blob (`DEFAULT` in ws/lib/sender.js). */
const SENDER_IDLE = 0;

/** Encoded frames of the constant payloads (one per hub protocol: a handful at most). */
const CONSTANT_FRAMES = new Map<Frame, Buffer | undefined>();
const MAX_CONSTANT_FRAMES = 16;

/**
 * A short payload (under 126 bytes) as one final, unmasked server frame (RFC 6455 §5.2): FIN and the text
 * or binary opcode, the 7-bit length, the payload; undefined for a longer one.
 */
function constantFrame(payload: Frame): Buffer | undefined {
  if (CONSTANT_FRAMES.has(payload)) return CONSTANT_FRAMES.get(payload);
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  const frame =
    body.length < 126
      ? Buffer.concat([Buffer.from([0x80 | (typeof payload === 'string' ? 0x1 : 0x2), body.length]), body])
      : undefined;
  if (CONSTANT_FRAMES.size < MAX_CONSTANT_FRAMES) CONSTANT_FRAMES.set(payload, frame);
  return frame;
}

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
