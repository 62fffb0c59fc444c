import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Frame } from '../protocol/hub-protocol.js';
import { answer, HttpSends } from './http-sends.js';
import type { Transport, TransportEvents } from './transport.js';

/** How long data left for a poll at close() waits for the client's next poll. */
const LINGER_MS = 5_000;

export interface LongPollingOptions {
  /** A poll with nothing to send ends with 200 and an empty body after this long. */
  pollTimeoutMs: number;
  /** A client that has no poll open for this long is taken for gone. */
  idleTimeoutMs: number;
}

/**
 * The long polling transport: the client keeps one `GET <hub>?id=` open; the server answers it with
 * everything buffered since the last poll (or 200 and an empty body at the poll timeout), and the client
 * polls again. The client's payloads arrive as HTTP POSTs ({@link HttpSends}). `DELETE` ends it.
 */
export class LongPollingTransport implements Transport {
  readonly kind = 'LongPolling' as const;
  readonly sends = new HttpSends((reason) => this.#finish(false, reason));
  readonly drained: Promise<void>;
  readonly #options: LongPollingOptions;
  #events: TransportEvents | undefined;
  #buffer: Frame[] = [];
  #bufferedBytes = 0;
  #poll: { res: ServerResponse; timer: NodeJS.Timeout } | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  /** close() was called; the buffer still waits for a poll. */
  #closing = false;
  #ended = false;
  #markDrained!: () => void;

  constructor(options: LongPollingOptions) {
    this.#options = options;
    this.drained = new Promise((resolve) => (this.#markDrained = resolve));
    this.#startIdleTimer();
  }

  get writable(): boolean {
    return !this.#ended && !this.#closing;
  }

  get bufferedAmount(): number {
    return this.#bufferedBytes;
  }

  /** True while a poll waits for data (for diagnostics and tests). */
  get polling(): boolean {
    return this.#poll !== undefined;
  }

  bind(events: TransportEvents): void {
    this.#events = events;
    this.sends.bind(events);
  }

  /**
   * The first poll of a connection: answered at once with 200 and no data, which is how the official
   * clients learn that the transport is up.
   */
  start(res: ServerResponse): void {
    answer(res, 200);
  }

  /** A `GET <hub>?id=`: answered now when data waits, else when data arrives or at the poll timeout. */
  poll(_req: IncomingMessage, res: ServerResponse): void {
    if (this.#ended) return answer(res, 204);
    // note: the spec's "reconnection": a new poll replaces one the client gave up on, which ends with 204.
    this.#endPoll(204);
    clearTimeout(this.#idleTimer);
    if (this.#bufferedBytes > 0) return this.#answer(res);
    if (this.#closing) return this.#finishDrained(res);
    const timer = setTimeout(() => this.#endPoll(200), this.#options.pollTimeoutMs);
    timer.unref();
    this.#poll = { res, timer };
    // note: the response's 'close' (not the request's): it fires when the client gives up on the poll.
    res.on('close', () => {
      if (this.#poll?.res !== res) return;
      clearTimeout(timer);
      this.#poll = undefined;
      this.#startIdleTimer();
    });
  }

  send(payload: Frame): void {
    if (!this.writable) return;
    this.#buffer.push(payload);
    this.#bufferedBytes += payload.length;
    const poll = this.#poll;
    // note: a poll the client just gave up on is left to its 'close'; the data waits for the next one.
    if (poll && !poll.res.destroyed) {
      clearTimeout(poll.timer);
      this.#poll = undefined;
      this.#answer(poll.res);
    }
  }

  pause(): void {
    this.sends.pause();
  }

  resume(): void {
    this.sends.resume();
  }

  /** Ends the connection: a waiting poll gets 204 now, or the next one collects what is left first. */
  close(): void {
    if (this.#ended || this.#closing) return;
    this.#closing = true;
    if (this.#bufferedBytes === 0 || this.#poll) {
      const poll = this.#poll;
      if (poll && this.#bufferedBytes > 0) {
        clearTimeout(poll.timer);
        this.#poll = undefined;
        this.#answer(poll.res);
      }
      return this.#finish(true, undefined);
    }
    // note: what was sent last (a Close message, a handshake error) waits for the client's next poll.
    const linger = setTimeout(() => this.#finish(true, undefined), LINGER_MS);
    linger.unref();
    void this.drained.then(() => clearTimeout(linger));
  }

  /** A `DELETE <hub>?id=`: the client ended the connection. */
  delete(): void {
    this.#finish(true, 'The client ended the connection (DELETE).');
  }

  terminate(): void {
    this.#buffer = [];
    this.#bufferedBytes = 0;
    this.#finish(false, undefined);
  }

  #answer(res: ServerResponse): void {
    const payload = joinPayloads(this.#buffer);
    this.#buffer = [];
    this.#bufferedBytes = 0;
    const binary = typeof payload !== 'string';
    res.writeHead(200, {
      'Content-Type': binary ? 'application/octet-stream' : 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(payload),
      'Cache-Control': 'no-cache',
    });
    res.end(payload);
    if (this.#closing) this.#finish(true, undefined);
    else this.#startIdleTimer();
  }

  #finishDrained(res: ServerResponse): void {
    answer(res, 204);
    this.#finish(true, undefined);
  }

  #endPoll(status: 200 | 204): void {
    const poll = this.#poll;
    if (!poll) return;
    clearTimeout(poll.timer);
    this.#poll = undefined;
    answer(poll.res, status);
    if (status === 200) this.#startIdleTimer();
  }

  #startIdleTimer(): void {
    clearTimeout(this.#idleTimer);
    if (this.#ended) return;
    this.#idleTimer = setTimeout(
      () => this.#finish(false, `The client did not poll for ${this.#options.idleTimeoutMs} ms.`),
      this.#options.idleTimeoutMs,
    );
    this.#idleTimer.unref();
  }

  /** `reason` undefined: the session ended it (close, terminate) and needs no event. */
  #finish(clean: boolean, reason: string | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#idleTimer);
    this.#endPoll(204);
    this.sends.close();
    this.#markDrained();
    if (reason !== undefined) this.#events?.closed(clean, reason);
  }
}

/** Joins buffered payloads; text stays text unless binary payloads are mixed in (MessagePack). */
function joinPayloads(frames: readonly Frame[]): Frame {
  if (frames.every((f) => typeof f === 'string')) return (frames as string[]).join('');
  return Buffer.concat(frames.map((f) => (typeof f === 'string' ? Buffer.from(f) : f)));
}
