import type { RedisClient } from '../../redis/connection.js';
import type { Logger } from 'pino';
import { RelayhubError } from '../../errors.js';
import { formatMessage } from '../../protocol/json/json-protocol.js';
import { MessageType } from '../../protocol/messages.js';
import type { ReliableRecipient } from '../backplane.js';
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
  args: unknown[];
}

/** What a session needs from its lane. */
export interface SessionHost {
  readonly redis: RedisClient;
  readonly options: SessionOptions;
  readonly counters: SessionCounters;
  readonly log: Logger;
  recipients(userId: string): ReliableRecipient[];
  ack(keys: UserKeys, offset: number, streamId: string): Promise<void>;
  deadLetter(userId: string, entry: InboxEntry, reason: string): Promise<void>;
}

interface Position {
  offset: number;
  streamId: string;
}

const START: Position = { offset: 0, streamId: '0-0' };

/**
 * Delivers one user's inbox to the user's connections on this instance: from the acknowledged offset on,
 * one message at a time (the next only after the client acknowledged the previous one, so order holds),
 * redelivering with backoff on a nack or timeout, and dead-lettering after `maxAttempts`.
 */
export class UserSession {
  #running: Promise<void> | undefined;
  #again = false;
  readonly #stop = new AbortController();
  /** When the message being delivered entered the inbox (ms, from its stream id); 0 when none is. */
  inFlightSince = 0;

  constructor(
    readonly userId: string,
    private readonly keys: UserKeys,
    private readonly host: SessionHost,
  ) {}

  /** Makes the session look at the inbox; resolves when it has caught up (or has nobody to deliver to). */
  wake(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  close(): void {
    this.#stop.abort();
  }

  get #closed(): boolean {
    return this.#stop.signal.aborted;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#closed && this.host.recipients(this.userId).length > 0) {
      try {
        await this.#drain();
        if (!this.#again) return;
        this.#again = false;
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

  async #drain(): Promise<void> {
    let position = await this.#acked();
    for (;;) {
      if (this.#closed || this.host.recipients(this.userId).length === 0) return;
      const entry = await this.#next(position);
      if (!entry) return;
      if (entry.offset > position.offset + 1) this.#reportGap(position.offset + 1, entry.offset);
      this.inFlightSince = Number.parseInt(entry.streamId, 10);
      const done = await this.#deliver(entry).finally(() => {
        this.inFlightSince = 0;
      });
      if (done === 'left') return;
      if (done === 'acked elsewhere') {
        position = await this.#acked();
        continue;
      }
      // note: a dead letter has already been acknowledged by deadLetter() (counted once, one round trip).
      if (done !== 'dead') await this.host.ack(this.keys, entry.offset, entry.streamId);
      position = { offset: entry.offset, streamId: entry.streamId };
    }
  }

  /** Delivers until the client acknowledges it, it is given up on, or nobody is left to deliver to. */
  async #deliver(entry: InboxEntry): Promise<'acked' | 'dead' | 'left' | 'acked elsewhere'> {
    const meta: ReliableMeta = { messageId: entry.messageId, offset: entry.offset };
    const args = [...entry.args, meta];
    for (let attempt = 1; ; attempt++) {
      const recipients = this.host.recipients(this.userId);
      if (recipients.length === 0 || this.#closed) return 'left';
      this.host.counters.delivered++;
      if (attempt > 1) this.host.counters.redeliveries++;
      let reason: string;
      try {
        // note: every connection of the user here gets it; the first answer acknowledges it.
        await Promise.any(
          recipients.map((r) => r.invoke(entry.target, args, this.host.options.ackTimeoutMs)),
        );
        return 'acked';
      } catch (error) {
        const errors = error instanceof AggregateError ? error.errors : [error];
        if (errors.every((e) => e instanceof RelayhubError && e.code === 'ERR_CONNECTION_CLOSED')) {
          attempt--; // the connections went away: not the message's fault
          continue;
        }
        reason = errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ');
      }
      if ((await this.#acked()).offset >= entry.offset) return 'acked elsewhere';
      if (attempt >= this.host.options.maxAttempts) {
        await this.host.deadLetter(this.userId, entry, reason);
        return 'dead';
      }
      this.host.log.info(
        { userId: this.userId, offset: entry.offset, attempt, reason },
        'reliable message nacked',
      );
      await this.#pause(
        Math.min(this.host.options.maxRetryDelayMs, this.host.options.retryDelayMs * 2 ** (attempt - 1)),
      );
    }
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

  async #acked(): Promise<Position> {
    const value = await this.host.redis.get(this.keys.acked);
    if (!value) return START;
    const [offset, streamId] = value.split(' ');
    return { offset: Number(offset), streamId: streamId ?? '0-0' };
  }

  async #next(after: Position): Promise<InboxEntry | undefined> {
    const start = after.streamId === '0-0' ? '-' : `(${after.streamId}`;
    const entries = (await this.host.redis.xrange(this.keys.inbox, start, '+', 'COUNT', 1)) as [
      string,
      string[],
    ][];
    const first = entries[0];
    return first ? parseEntry(first) : undefined;
  }

  #pause(ms: number): Promise<void> {
    return sleep(ms, this.#stop.signal);
  }
}

export function parseEntry([streamId, fields]: [string, string[]]): InboxEntry {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i] as string, fields[i + 1] as string);
  return {
    streamId,
    offset: Number(map.get('o')),
    messageId: map.get('m') ?? '',
    target: map.get('t') ?? '',
    args: JSON.parse(map.get('a') ?? '[]') as unknown[],
  };
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
