import type { Logger } from 'pino';
import { RelayhubError } from '../../errors.js';
import { formatMessage } from '../../protocol/json/json-protocol.js';
import { MessageType } from '../../protocol/messages.js';
import type { ReliableRecipient } from '../backplane.js';
import { EncodedArguments } from '../../protocol/encoded-arguments.js';
import type { UserKeys } from '../../redis/keys.js';

/** The client method that tells a user that messages fell out of the retention window unacknowledged. */
export const GAP_TARGET = 'relayhubGap';

/** What the client receives after a reliable message's own arguments, to deduplicate and order by. */
export interface ReliableMeta {
  messageId: string;
  offset: number;
}

export interface SessionOptions {
  ackTimeoutMs: number;
  maxAttempts: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  /**
   * Messages in flight per user: sent to the user's connections and not acknowledged yet. They are sent in
   * offset order; the acked offset moves only over a contiguous run of acknowledged messages. 1 is one
   * message at a time (the next only after the previous one's ack).
   * @default 32, or `RELIABLE_WINDOW` from the environment when it is set
   */
  window: number;
}

export interface SessionCounters {
  delivered: number;
  acked: number;
  redeliveries: number;
  deadLetters: number;
  gaps: number;
}

export interface InboxEntry {
  streamId: string;
  offset: number;
  messageId: string;
  target: string;
  /** The arguments as the inbox holds them: a JSON array (parsed only where the values are needed). */
  argsJson: string;
}

/** The acknowledged position of a user and the inbox entries after it, as one read returns them. */
export interface InboxRead {
  acked: Position;
  entries: InboxEntry[];
}

/** What a session needs from its lane. */
export interface SessionHost {
  readonly options: SessionOptions;
  readonly counters: SessionCounters;
  readonly log: Logger;
  recipients(userId: string): ReliableRecipient[];
  /** Whether the user has a connection here (what `recipients` would say, without building the list). */
  hasRecipients(userId: string): boolean;
  /** The acked position and up to `count` entries after it (one round trip). */
  readFromAcked(keys: UserKeys, count: number): Promise<InboxRead>;
  /** Up to `count` entries after `streamId`. */
  readAfter(keys: UserKeys, streamId: string, count: number): Promise<InboxEntry[]>;
  /** The acked position alone. */
  acked(keys: UserKeys): Promise<Position>;
  /**
   * Acknowledges everything up to `offset` (`count` messages of this session's run); resolves true when
   * that moved the user's acked offset (false: it was there already, or the ack was stale).
   */
  ack(keys: UserKeys, offset: number, streamId: string, count: number): Promise<boolean>;
  /** Records a message given up on (the dead-letter stream and hook); the session then acks past it. */
  deadLetter(userId: string, entry: InboxEntry, reason: string): Promise<void>;
}

export interface Position {
  offset: number;
  streamId: string;
}

export const START: Position = { offset: 0, streamId: '0-0' };

/** Where a run's ack chain starts (one resolved promise for every run). */
const SETTLED: Promise<void> = Promise.resolve();

/** One message of the window. */
interface Slot {
  entry: InboxEntry;
  /** The entry's arguments and the {@link ReliableMeta} after them. */
  args: EncodedArguments;
  /** sending: with the clients; waiting: nacked, to be sent again at `due`; done: acked or dead-lettered. */
  state: 'sending' | 'waiting' | 'done';
  /** Deliveries that counted (a delivery to connections that went away does not). */
  attempt: number;
  due: number;
}

/** The state of one drain: dropped as a whole when the drain ends (settlements of its sends are ignored). */
interface Run {
  /** Acknowledged up to here (contiguously). */
  position: Position;
  /** The last entry read from the inbox. */
  cursor: Position;
  /** In offset order, from position + 1. */
  window: Slot[];
  /**
   * Acks in a row in this burst (a burst starts with a drain, once everything read was acked, and after
   * a nack). The first two messages of a burst go one at a time; after that as many are in flight as acks
   * came in a row, up to the window: it doubles per round trip while the client keeps up.
   */
  streak: number;
  /** Read, not in the window yet. */
  buffer: InboxEntry[];
  /** The last read returned less than it asked for, and no wake-up came since it was sent. */
  exhausted: boolean;
  /** The acks of this run, chained: at most one in flight, and one more waiting for `unacked`. */
  acking: Promise<void>;
  /** Acks of this run queued or in flight (each one's end wakes the drain). */
  acksOut: number;
  /** Acknowledged by the client, not sent to Redis yet (acks are cumulative: only the latest is sent). */
  unacked: { offset: number; streamId: string; count: number } | undefined;
  /**
   * Whether `position` is known to be the user's acked offset in Redis: every ack of this run moved it
   * (none found it moved already by another connection, none was stale).
   */
  sure: boolean;
  failure: unknown;
  /** Settlements of sends, handled by the drain loop in order. */
  settled: { slot: Slot; error: unknown }[];
}

/**
 * Delivers one user's inbox to the user's connections on this instance: from the acknowledged offset on,
 * up to `window` messages in flight, sent in offset order; each acknowledged contiguous run advances the
 * acked offset with one ack. The window opens as acks come (one more per ack, from 1 at the start of a
 * drain) and closes to 1 on a nack, so that the first message of a burst, and the messages after a nacked
 * one, wait for the one before them. A nack or timeout redelivers that message with backoff (redeliveries in
 * offset order), and after `maxAttempts` it is dead-lettered and the acked offset moves past it.
 */
export class UserSession {
  #running: Promise<void> | undefined;
  /** Wake-ups seen so far: a read sent before the latest one may have missed a message. */
  #wakes = 0;
  /** The wake-ups a read that came back short was sent after: the inbox was caught up as of them. */
  #covered = 0;
  #run_: Run | undefined;
  /**
   * Where the last drain left the user, when it ended caught up with every ack its own: a wake-up that
   * carries the next message is then delivered without reading the inbox. Dropped when a drain starts and
   * whenever Redis may have changed under it ({@link forget}).
   */
  #known: Position | undefined;
  #kick: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #stop = new AbortController();

  constructor(
    readonly userId: string,
    private readonly keys: UserKeys,
    private readonly host: SessionHost,
  ) {}

  /** When the oldest unacknowledged message being delivered entered the inbox (ms); 0 when none is. */
  get inFlightSince(): number {
    const head = this.#run_?.window.find((slot) => slot.state !== 'done');
    return head ? Number.parseInt(head.entry.streamId, 10) : 0;
  }

  /**
   * Makes the session look at the inbox; resolves when it has caught up: everything read was settled and
   * a read sent after the latest wake-up came back short (or nobody is left to deliver to). `next` are the
   * messages the wake-up carried, the user's last ones (see `SEND_SCRIPT`): when the session knows it is
   * caught up to the offset before them (idle after a drain, or a drain that read everything), it takes
   * them without a read.
   */
  wake(next?: InboxEntry[]): Promise<void> {
    this.#wakes++;
    const carried = next !== undefined && next.length > 0 && consecutive(next) ? next : undefined;
    if (this.#running) {
      const run = this.#run_;
      if (run && run.exhausted && carried && (carried[0] as InboxEntry).offset === run.cursor.offset + 1) {
        // note: the run had read everything, and this wake-up holds what came since.
        run.buffer.push(...carried);
        run.cursor = carried.at(-1) as InboxEntry;
        this.#covered = this.#wakes;
      } else if (run) {
        run.exhausted = false;
      }
      this.#notify();
      return this.#running;
    }
    this.#running = this.#loop(carried).finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Drops what the session knows of the user's position (Redis may have restarted or failed over). */
  forget(): void {
    this.#known = undefined;
  }

  close(): void {
    this.#stop.abort();
    this.#notify();
  }

  get #closed(): boolean {
    return this.#stop.signal.aborted;
  }

  #present(): boolean {
    return !this.#closed && this.host.hasRecipients(this.userId);
  }

  async #loop(next: InboxEntry[] | undefined): Promise<void> {
    let failures = 0;
    while (this.#present()) {
      try {
        const carried = next;
        next = undefined;
        await this.#drain(carried);
        // note: a wake-up after the drain's last short read may name a message it did not see.
        if (this.#wakes === this.#covered) return;
        failures = 0;
      } catch (error) {
        // note: Redis is unreachable; the inbox is still there, so try again with a growing pause.
        failures++;
        this.host.log.warn({ err: error, userId: this.userId }, 'reliable delivery interrupted');
        await this.#pause(
          Math.min(this.host.options.maxRetryDelayMs, this.host.options.retryDelayMs * 2 ** failures),
        );
      }
    }
  }

  /**
   * Delivers from the acked position until the inbox is caught up, or nobody is left to deliver to.
   * `next`: the messages a wake-up carried (delivered without a read when they follow the known position).
   */
  async #drain(next?: InboxEntry[]): Promise<void> {
    const size = Math.max(1, this.host.options.window);
    const wakes = this.#wakes;
    const known = this.#known;
    this.#known = undefined;
    // note: the wake-up carried the user's last messages, and the last drain ended at the one before them:
    // the inbox holds nothing else to deliver, as of this wake-up.
    const carried = next !== undefined && known !== undefined && next[0]?.offset === known.offset + 1;
    const first = carried ? { acked: known, entries: next } : await this.host.readFromAcked(this.keys, size);
    const run: Run = {
      position: first.acked,
      cursor: first.entries.at(-1) ?? first.acked,
      window: [],
      streak: 0,
      buffer: first.entries,
      exhausted: carried ? this.#coveredBy(wakes) : this.#short(first.entries.length, size, wakes),
      acking: SETTLED,
      acksOut: 0,
      unacked: undefined,
      sure: true,
      failure: undefined,
      settled: [],
    };
    this.#run_ = run;
    try {
      for (;;) {
        if (!this.#present()) {
          this.#keepAcks(run);
          return;
        }
        if (run.failure) throw run.failure;
        // note: answers that need Redis (a nack) make this asynchronous; acks are applied at once.
        const settling = this.#handleSettled(run);
        if (settling) await settling;
        if (run.failure) throw run.failure;
        this.#advance(run);
        this.#fill(run);
        const now = Date.now();
        const due = this.#redeliver(run, now);
        if (run.window.length === 0 && run.buffer.length === 0) {
          if (run.exhausted) {
            // note: the drain ends once its acks are in Redis; a wake-up meanwhile is served at once.
            if (run.acksOut > 0) {
              await this.#waitForEvent(due);
              continue;
            }
            if (run.sure) this.#known = run.position;
            return;
          }
          await this.#readMore(run, size);
          continue;
        }
        if (run.buffer.length === 0 && !run.exhausted && run.window.length < size) {
          // note: read ahead while the window has room; settlements meanwhile wait in run.settled.
          await this.#readMore(run, size);
          continue;
        }
        if (run.settled.length > 0) continue;
        await this.#waitForEvent(due);
      }
    } finally {
      clearTimeout(this.#timer);
      if (this.#run_ === run) this.#run_ = undefined;
      await run.acking.catch(() => undefined);
    }
  }

  async #readMore(run: Run, size: number): Promise<void> {
    const wakes = this.#wakes;
    const count = Math.max(1, size - run.window.length);
    const entries = await this.host.readAfter(this.keys, run.cursor.streamId, count);
    // note: a read that was sent before another instance's ack may return entries before the position.
    const fresh = entries.filter((e) => e.offset > run.position.offset);
    run.buffer.push(...fresh);
    const last = entries.at(-1);
    if (last) run.cursor = last;
    run.exhausted = this.#short(entries.length, count, wakes);
  }

  /** Whether a read of `count` sent after `wakes` wake-ups shows the inbox caught up. */
  #short(got: number, count: number, wakes: number): boolean {
    return got < count && this.#coveredBy(wakes);
  }

  /** The inbox was caught up as of `wakes` wake-ups: whether no wake-up came since. */
  #coveredBy(wakes: number): boolean {
    this.#covered = wakes;
    return wakes === this.#wakes;
  }

  /** Moves read entries into the window (reporting a gap before an entry that does not follow on). */
  #fill(run: Run): void {
    const limit = this.#limit(run);
    while (run.window.length < limit && run.buffer.length > 0) {
      const entry = run.buffer.shift() as InboxEntry;
      const previous = run.window.at(-1)?.entry.offset ?? run.position.offset;
      if (entry.offset <= previous) continue;
      // note: the ack of the entry after a gap moves the acked offset past it (acks are cumulative).
      if (entry.offset > previous + 1) this.#reportGap(previous + 1, entry.offset);
      // note: the ReliableMeta `{ messageId, offset }`, written as JSON at once (no object to stringify)
      const meta = `{"messageId":${JSON.stringify(entry.messageId)},"offset":${entry.offset}}`;
      const args = EncodedArguments.withLast(entry.argsJson, meta);
      const slot: Slot = { entry, args, state: 'sending', attempt: 0, due: 0 };
      run.window.push(slot);
      this.#send(run, slot);
    }
  }

  /** How many messages may be in flight now (see `Run.streak`). */
  #limit(run: Run): number {
    return run.streak < 2 ? 1 : Math.min(this.host.options.window, run.streak);
  }

  /** Sends a slot to every connection of the user here; the first answer acknowledges it. */
  #send(run: Run, slot: Slot): void {
    const recipients = this.host.recipients(this.userId);
    slot.state = 'sending';
    slot.attempt++;
    this.host.counters.delivered++;
    if (slot.attempt > 1) this.host.counters.redeliveries++;
    const { target } = slot.entry;
    const timeout = this.host.options.ackTimeoutMs;
    const answer =
      recipients.length === 1
        ? (recipients[0] as ReliableRecipient).invoke(target, slot.args, timeout)
        : Promise.any(recipients.map((r) => r.invoke(target, slot.args, timeout)));
    answer.then(
      () => this.#settle(run, slot, undefined),
      (error: unknown) => this.#settle(run, slot, error ?? new Error('nacked')),
    );
  }

  #settle(run: Run, slot: Slot, error: unknown): void {
    run.settled.push({ slot, error });
    this.#notify();
  }

  /**
   * Applies the answers that came in: acks mark their slot done, nacks schedule or dead-letter it. Returns a
   * promise only when an answer needs Redis (a nack: the acked offset is read first).
   */
  #handleSettled(run: Run): Promise<void> | undefined {
    while (run.settled.length > 0) {
      const { slot, error } = run.settled[0] as { slot: Slot; error: unknown };
      if (!this.#settledAtOnce(run, slot, error)) return this.#handleNacks(run);
      run.settled.shift();
    }
    return undefined;
  }

  /**
   * Applies an answer that needs no Redis: an ack, a stale answer, or connections that went away (not the
   * message's fault: it is sent again at once). False for a nack.
   */
  #settledAtOnce(run: Run, slot: Slot, error: unknown): boolean {
    if (slot.state !== 'sending' || !run.window.includes(slot)) return true;
    if (error === undefined) {
      slot.state = 'done';
      run.streak++;
      return true;
    }
    const errors = error instanceof AggregateError ? error.errors : [error];
    if (!errors.every((e) => e instanceof RelayhubError && e.code === 'ERR_CONNECTION_CLOSED')) return false;
    slot.attempt--;
    slot.state = 'waiting';
    slot.due = 0;
    return true;
  }

  /**
   * The user left (or the session closed): the acks that came before still go to Redis (the drain waits for
   * them), so that a message the user confirmed is not delivered again at the next connect. Nacks are left:
   * those messages are delivered again anyway.
   */
  #keepAcks(run: Run): void {
    for (const { slot, error } of run.settled.splice(0)) this.#settledAtOnce(run, slot, error);
    this.#advance(run);
  }

  /** {@link #handleSettled} from a nack on: reads the acked offset, then redelivers or dead-letters. */
  async #handleNacks(run: Run): Promise<void> {
    while (run.settled.length > 0) {
      const { slot, error } = run.settled.shift() as { slot: Slot; error: unknown };
      if (this.#settledAtOnce(run, slot, error)) continue;
      const errors = error instanceof AggregateError ? error.errors : [error];
      const reason = errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ');
      run.streak = 0;
      const acked = await this.host.acked(this.keys);
      if (acked.offset >= slot.entry.offset) {
        this.#ackedElsewhere(run, acked);
        continue;
      }
      if (slot.attempt >= this.host.options.maxAttempts) {
        await this.host.deadLetter(this.userId, slot.entry, reason);
        slot.state = 'done';
        continue;
      }
      this.host.log.info(
        { userId: this.userId, offset: slot.entry.offset, attempt: slot.attempt, reason },
        'reliable message nacked',
      );
      slot.state = 'waiting';
      slot.due =
        Date.now() +
        Math.min(this.host.options.maxRetryDelayMs, this.host.options.retryDelayMs * 2 ** (slot.attempt - 1));
    }
  }

  /** Another connection of the user (here or elsewhere) acknowledged up to `acked`: skip what it covers. */
  #ackedElsewhere(run: Run, acked: Position): void {
    run.sure = false;
    while (run.window.length > 0 && (run.window[0] as Slot).entry.offset <= acked.offset) run.window.shift();
    run.buffer = run.buffer.filter((e) => e.offset > acked.offset);
    if (acked.offset > run.position.offset) run.position = acked;
    if (run.window.length === 0 && run.buffer.length === 0 && acked.offset >= run.cursor.offset) {
      run.cursor = acked;
      run.exhausted = false;
    }
  }

  /** Drops the acknowledged run at the head of the window and acks its last message (one ack per run). */
  #advance(run: Run): void {
    let count = 0;
    while (run.window.length > 0 && (run.window[0] as Slot).state === 'done') {
      const slot = run.window.shift() as Slot;
      run.position = { offset: slot.entry.offset, streamId: slot.entry.streamId };
      count++;
    }
    if (count === 0) return;
    // note: caught up with everything read: what comes next starts a new burst.
    if (run.window.length === 0 && run.buffer.length === 0) run.streak = 0;
    const { offset, streamId } = run.position;
    const queued = run.unacked !== undefined;
    run.unacked = { offset, streamId, count: (run.unacked?.count ?? 0) + count };
    // note: an ack is already waiting for the one in flight; it will carry this position instead.
    if (queued) return;
    run.acksOut++;
    run.acking = run.acking
      .then(() => {
        const unacked = run.unacked;
        run.unacked = undefined;
        return unacked ? this.host.ack(this.keys, unacked.offset, unacked.streamId, unacked.count) : true;
      })
      .then((advanced) => {
        if (!advanced) run.sure = false;
      })
      .catch((error: unknown) => {
        run.failure ??= error;
      })
      .finally(() => {
        run.acksOut--;
        this.#notify();
      });
  }

  /**
   * Sends again the waiting slots that are due, in offset order (a later one waits for an earlier one);
   * returns when the next one is due (0: none waiting).
   */
  #redeliver(run: Run, now: number): number {
    for (const slot of run.window) {
      if (slot.state !== 'waiting') continue;
      if (slot.due > now) return slot.due;
      this.#send(run, slot);
    }
    return 0;
  }

  #notify(): void {
    const kick = this.#kick;
    this.#kick = undefined;
    kick?.();
  }

  #waitForEvent(due: number): Promise<void> {
    return new Promise((resolve) => {
      this.#kick = resolve;
      clearTimeout(this.#timer);
      if (due > 0) this.#timer = setTimeout(() => this.#notify(), Math.max(0, due - Date.now()));
      if (this.#closed) this.#notify();
    });
  }

  #reportGap(fromOffset: number, firstAvailableOffset: number): void {
    this.host.counters.gaps++;
    this.host.log.warn(
      { userId: this.userId, fromOffset, firstAvailableOffset },
      'unacked messages fell out of retention',
    );
    const frame = formatMessage({
      type: MessageType.Invocation,
      target: GAP_TARGET,
      arguments: [{ recovered: false, fromOffset, toOffset: firstAvailableOffset - 1, firstAvailableOffset }],
    });
    for (const recipient of this.host.recipients(this.userId)) recipient.write(frame);
  }

  #pause(ms: number): Promise<void> {
    return sleep(ms, this.#stop.signal);
  }
}

/** Whether the entries' offsets follow one another. */
function consecutive(entries: readonly InboxEntry[]): boolean {
  for (let i = 1; i < entries.length; i++) {
    if ((entries[i] as InboxEntry).offset !== (entries[i - 1] as InboxEntry).offset + 1) return false;
  }
  return true;
}

/** Parses the acked key's value `"<offset> <stream id>"`. */
export function parsePosition(value: string | null | undefined): Position {
  if (!value) return START;
  const [offset, streamId] = value.split(' ');
  return { offset: Number(offset), streamId: streamId ?? '0-0' };
}

export function parseEntry([streamId, fields]: [string, string[]]): InboxEntry {
  // note: the fields are read in place (no map per entry): this runs for every message delivered.
  let offset: string | undefined;
  let messageId = '';
  let target = '';
  let argsJson = '[]';
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = fields[i + 1] as string;
    switch (fields[i]) {
      case 'o':
        offset = value;
        break;
      case 'm':
        messageId = value;
        break;
      case 't':
        target = value;
        break;
      case 'a':
        argsJson = value;
        break;
    }
  }
  return { streamId, offset: Number(offset), messageId, target, argsJson: inboxArguments(argsJson) };
}

/**
 * A message's arguments as an inbox entry (or a wake-up) holds them: the producer writes
 * `JSON.stringify(args)`, a JSON array; anything else is taken for no arguments.
 */
export function inboxArguments(json: string): string {
  return json.startsWith('[') && json.endsWith(']') ? json : '[]';
}

/** Resolves after `ms`, or at once when `signal` aborts (it never rejects). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
