/**
 * What lets a message travel over several endpoints and still reach each connection once: the endpoints
 * backplane gives every send (and every request to another instance) a message id, carried in front of
 * the frame (or the group name, or the first argument of a client-result invocation), and each instance
 * remembers the ids it has handled in a bounded window.
 */
import { randomBytes } from 'node:crypto';

/** Starts a tagged value; never the first character of a SignalR frame, a group name or a user value. */
const MARK = '\u0001';

let counter = 0;
const prefix = randomBytes(6).toString('base64url');

/** A message id unique across instances: a random per-process prefix and a counter. */
export function newMessageId(): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${prefix}${counter.toString(36)}`;
}

export function tag(id: string, value: string): string {
  return `${MARK}${id}\n${value}`;
}

/** The id and the value of a tagged value; `undefined` id for a value that is not tagged. */
export function untag(value: string): { id: string | undefined; value: string } {
  const id = idOf(value);
  return id === undefined ? { id, value } : { id, value: value.slice(id.length + 2) };
}

/** The id of a tagged value, without copying the value. */
export function idOf(value: string): string | undefined {
  if (!value.startsWith(MARK)) return undefined;
  const newline = value.indexOf('\n');
  return newline < 0 ? undefined : value.slice(1, newline);
}

export interface DedupWindowOptions {
  /**
   * How long an id is remembered: a copy arriving over another endpoint later than this is delivered
   * again.
   * @default 60_000
   */
  windowMs?: number;
  /**
   * The most ids remembered at once (about 100 bytes each); past it the oldest are forgotten first.
   * @default 100_000
   */
  maxEntries?: number;
}

/** Keys seen recently, each with a value (`true`, or the outcome of a request), oldest first. */
export class DedupWindow<V = true> {
  readonly #windowMs: number;
  readonly #maxEntries: number;
  readonly #seen = new Map<string, { at: number; value: V }>();

  constructor(options: DedupWindowOptions = {}) {
    this.#windowMs = options.windowMs ?? 60_000;
    this.#maxEntries = options.maxEntries ?? 100_000;
  }

  get size(): number {
    return this.#seen.size;
  }

  /** The value remembered for `key`, if it is still in the window. */
  get(key: string): V | undefined {
    this.#expire(Date.now());
    return this.#seen.get(key)?.value;
  }

  /** Remembers `key`; false when it was already there (a duplicate). */
  add(key: string, value: V): boolean {
    const now = Date.now();
    this.#expire(now);
    if (this.#seen.has(key)) return false;
    this.#seen.set(key, { at: now, value });
    if (this.#seen.size > this.#maxEntries) {
      const oldest = this.#seen.keys().next();
      if (!oldest.done) this.#seen.delete(oldest.value);
    }
    return true;
  }

  /** Forgets `key`. */
  delete(key: string): void {
    this.#seen.delete(key);
  }

  #expire(now: number): void {
    for (const [key, entry] of this.#seen) {
      if (now - entry.at <= this.#windowMs) return;
      this.#seen.delete(key);
    }
  }
}
