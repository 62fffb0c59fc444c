import { HubError, RelayhubError } from '../errors.js';

/**
 * The items of one client-to-server stream, handed to a hub method as an `AsyncIterable`. Items wait in a
 * queue until the method takes them; `isFull` tells the connection to stop reading from the socket.
 */
export class UploadStream implements AsyncIterable<unknown> {
  readonly #items: unknown[] = [];
  readonly #capacity: number;
  #waiter: ((result: IteratorResult<unknown>) => void) | undefined;
  #failWaiter: ((error: Error) => void) | undefined;
  #done = false;
  #error: Error | undefined;
  #iterated = false;

  constructor(
    readonly streamId: string,
    capacity: number,
    private readonly onDrain: () => void,
  ) {
    this.#capacity = capacity;
  }

  get isFull(): boolean {
    return this.#items.length >= this.#capacity;
  }

  push(item: unknown): void {
    if (this.#done) return;
    if (this.#waiter) {
      const resolve = this.#waiter;
      this.#clearWaiter();
      resolve({ value: item, done: false });
    } else {
      this.#items.push(item);
    }
  }

  /**
   * Ends the stream; with `error` (the client's text), the method's next read throws a `HubError` with
   * exactly that message, which reaches the caller as `HubException: <text>` even without detailed errors.
   */
  end(error?: string): void {
    if (this.#done) return;
    this.#done = true;
    if (error !== undefined) {
      this.#error = new HubError(error);
    }
    if (this.#waiter) this.#settleDone();
  }

  #clearWaiter(): void {
    this.#waiter = undefined;
    this.#failWaiter = undefined;
  }

  #settleDone(): void {
    const resolve = this.#waiter;
    const reject = this.#failWaiter;
    this.#clearWaiter();
    if (this.#error) reject?.(this.#error);
    else resolve?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    if (this.#iterated) throw new RelayhubError('ERR_HUB_METHOD', 'An upload stream can be read only once.');
    this.#iterated = true;
    return {
      next: () => {
        if (this.#items.length > 0) {
          const wasFull = this.isFull;
          const value = this.#items.shift();
          if (wasFull) this.onDrain();
          return Promise.resolve({ value, done: false });
        }
        if (this.#done) {
          return this.#error
            ? Promise.reject(this.#error)
            : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.#waiter = resolve;
          this.#failWaiter = reject;
        });
      },
      return: () => {
        this.#done = true;
        this.#items.length = 0;
        this.onDrain();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
