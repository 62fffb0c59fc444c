import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TransportEvents } from './transport.js';

/**
 * The client-to-server half of the HTTP transports (SSE and long polling): `POST <hub>?id=` bodies become
 * payloads, one POST at a time (a second one meanwhile gets 409, as the spec says). While the session
 * pauses reading, the answer to the current POST waits: the official clients send one POST at a time, so
 * this is their backpressure.
 */
export class HttpSends {
  #events: TransportEvents | undefined;
  #busy = false;
  #paused = false;
  #closed = false;
  #waiters: (() => void)[] = [];
  readonly #onTooLarge: (reason: string) => void;

  /** `onTooLarge`: a POST was over the limit; the owning transport ends the connection. */
  constructor(onTooLarge: (reason: string) => void) {
    this.#onTooLarge = onTooLarge;
  }

  bind(events: TransportEvents): void {
    this.#events = events;
  }

  /** Reads one POST body of at most `maxBytes` and hands it to the session. */
  async receive(req: IncomingMessage, res: ServerResponse, maxBytes: number): Promise<void> {
    if (this.#closed) return answer(res, 404, 'The connection has ended.');
    if (this.#busy) return answer(res, 409, 'Another send is in progress for this connection.');
    this.#busy = true;
    try {
      const body = await readBody(req, maxBytes);
      if (body === undefined) {
        answer(res, 413, `The request body is larger than ${maxBytes} bytes.`);
        return this.#onTooLarge(`A send was larger than ${maxBytes} bytes.`);
      }
      if (this.#closed) return answer(res, 404, 'The connection has ended.');
      this.#events?.data(body);
      while (this.#paused && !this.#closed) await new Promise<void>((resolve) => this.#waiters.push(resolve));
      answer(res, 200);
    } catch {
      answer(res, 400, 'The request body could not be read.');
    } finally {
      this.#busy = false;
    }
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#wake();
  }

  close(): void {
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/** Reads the whole body; `undefined` when it is larger than `maxBytes` (the rest is not read). */
function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    // note: a client that goes away mid-body must not hold the send slot for good.
    req.on('close', () => {
      if (!req.complete) reject(new Error('The request was aborted.'));
    });
  });
}

export function answer(res: ServerResponse, status: number, text = ''): void {
  if (res.headersSent) return;
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}
