/**
 * The deadlines of many items (a hub's connections) on one timer: an item sits in the slot of its next
 * deadline, slots are `resolutionMs` wide, and each tick visits only the slots that came due. Idle items
 * cost nothing between their deadlines, however many there are.
 *
 * Deadlines are checked, not trusted: when a slot comes due the wheel calls `due(item, now)`, which does
 * what is due (or nothing, when activity moved the deadline on since) and returns the item's next
 * deadline, or `undefined` to drop it. So activity (a frame received or sent) needs no rescheduling: it
 * only updates the timestamps that `due` reads. An item is in at most one slot; {@link schedule} moves it
 * only to an earlier one.
 */
export class TimerWheel<T> {
  readonly #resolutionMs: number;
  readonly #due: (item: T, now: number) => number | undefined;
  /** Slot number (deadline / resolution, rounded up) → the items due then. */
  readonly #slots = new Map<number, Set<T>>();
  readonly #slotOf: SlotStore<T>;
  #size = 0;
  /** The first slot not visited yet. */
  #cursor: number;
  #timer: NodeJS.Timeout | undefined;

  /**
   * @param slotOf Where each item's slot is kept: a map by default; an item type with a field for it
   *   saves the map entry (~50 B per item at 20,000 items).
   */
  constructor(
    resolutionMs: number,
    due: (item: T, now: number) => number | undefined,
    now: number = Date.now(),
    slotOf: SlotStore<T> = new Map<T, number>(),
  ) {
    this.#resolutionMs = resolutionMs;
    this.#due = due;
    this.#slotOf = slotOf;
    this.#cursor = Math.floor(now / resolutionMs) + 1;
  }

  /** How many items the wheel holds. */
  get size(): number {
    return this.#size;
  }

  /** Ticks every `resolutionMs` on an unref'd interval until {@link stop}. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.advance(Date.now()), this.#resolutionMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Makes sure `item` is looked at no later than `at` (never before it, never in a slot already visited). */
  schedule(item: T, at: number): void {
    const slot = Math.max(Math.ceil(at / this.#resolutionMs), this.#cursor);
    const current = this.#slotOf.get(item);
    if (current !== undefined) {
      if (current <= slot) return;
      this.#remove(item, current);
    }
    this.#slotOf.set(item, slot);
    this.#size++;
    const items = this.#slots.get(slot);
    if (items) items.add(item);
    else this.#slots.set(slot, new Set([item]));
  }

  /** Forgets `item`. */
  cancel(item: T): void {
    const current = this.#slotOf.get(item);
    if (current !== undefined) this.#remove(item, current);
  }

  /** Visits every slot due by `now`: calls `due` for their items and files each at its next deadline. */
  advance(now: number): void {
    const last = Math.floor(now / this.#resolutionMs);
    if (last - this.#cursor > this.#slots.size) {
      // note: a long gap (a stalled process, the clock set forward): visit the slots held, not every slot.
      const due = [...this.#slots.keys()].filter((s) => s <= last).sort((a, b) => a - b);
      this.#cursor = last + 1;
      for (const slot of due) this.#visit(slot, now);
      return;
    }
    while (this.#cursor <= last) this.#visit(this.#cursor++, now);
  }

  #visit(slot: number, now: number): void {
    const items = this.#slots.get(slot);
    if (!items) return;
    this.#slots.delete(slot);
    for (const item of items) {
      this.#slotOf.delete(item);
      this.#size--;
      const next = this.#due(item, now);
      if (next !== undefined) this.schedule(item, next);
    }
  }

  #remove(item: T, slot: number): void {
    this.#slotOf.delete(item);
    this.#size--;
    const items = this.#slots.get(slot);
    items?.delete(item);
    if (items?.size === 0) this.#slots.delete(slot);
  }
}

/** Where a {@link TimerWheel} keeps the slot of each item it holds (a `Map` is one). */
export interface SlotStore<T> {
  get(item: T): number | undefined;
  set(item: T, slot: number): unknown;
  delete(item: T): unknown;
}
