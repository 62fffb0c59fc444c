/**
 * Gathers items and hands them over together: at once when `max` are waiting, else `delayMs` after the
 * first one came. What the lane uses to send many users' acks, or many consumed wake-ups, in one write.
 */
export class Coalescer<T> {
  #items: T[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly max: number,
    private readonly delayMs: number,
    private readonly deliver: (items: T[]) => void,
  ) {}

  push(...items: T[]): void {
    this.#items.push(...items);
    if (this.#items.length >= this.max) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), this.delayMs);
  }

  /** Hands over what is waiting now (nothing when nothing is). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const items = this.#items;
    if (items.length === 0) return;
    this.#items = [];
    this.deliver(items);
  }

  /** Drops what is waiting, and the timer. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#items = [];
  }
}
