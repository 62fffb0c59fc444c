import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Frame } from '../protocol/hub-protocol.js';
import { HttpSends } from './http-sends.js';
import type { Transport, TransportEvents } from './transport.js';

/**
 * The Server-Sent Events transport: one long `text/event-stream` response carries the server's payloads,
 * one event each (`data:` lines); the client's payloads arrive as HTTP POSTs ({@link HttpSends}). Text only.
 */
export class ServerSentEventsTransport implements Transport {
  readonly kind = 'ServerSentEvents' as const;
  readonly sends = new HttpSends((reason) => this.#cut(reason));
  readonly #res: ServerResponse;
  #events: TransportEvents | undefined;
  #ended = false;

  constructor(req: IncomingMessage, res: ServerResponse) {
    this.#res = res;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      // note: tells nginx not to buffer the stream (see deploy/nginx.conf).
      'X-Accel-Buffering': 'no',
    });
    // note: as ASP.NET does, a comment line first, so that proxies and browsers see the stream start.
    res.write(':\r\n');
    req.socket.setNoDelay(true);
    res.on('close', () => this.#finish(true, 'The event stream closed.'));
  }

  get writable(): boolean {
    return !this.#ended;
  }

  get bufferedAmount(): number {
    return this.#res.writableLength;
  }

  bind(events: TransportEvents): void {
    this.#events = events;
    this.sends.bind(events);
  }

  send(payload: Frame): void {
    if (this.#ended) return;
    const text = typeof payload === 'string' ? payload : payload.toString('utf8');
    // note: one event per payload; every line of it is a data line (JSON records have no raw newlines).
    this.#res.write(`data: ${text.split(/\r\n|\r|\n/).join('\r\ndata: ')}\r\n\r\n`);
  }

  pause(): void {
    this.sends.pause();
  }

  resume(): void {
    this.sends.resume();
  }

  close(): void {
    if (this.#ended) return;
    this.#res.end();
    this.#finish(true, undefined);
  }

  terminate(): void {
    this.#cut(undefined);
  }

  #cut(reason: string | undefined): void {
    if (this.#ended) return;
    this.#res.destroy();
    this.#finish(false, reason);
  }

  /** `reason` undefined: the session ended it (close, terminate) and needs no event. */
  #finish(clean: boolean, reason: string | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.sends.close();
    if (reason !== undefined) this.#events?.closed(clean, reason);
  }
}
