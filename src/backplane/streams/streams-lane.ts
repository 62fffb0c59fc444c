import type { Logger } from 'pino';
import { RelayhubError } from '../../errors.js';
import type { RedisClient } from '../../redis/connection.js';
import type {
  LocalUsers,
  ReliableLane,
  ReliableMessage,
  ReliableMetrics,
  ReliableRecipient,
  ReliableSendResult,
} from '../backplane.js';
import { CONSUMER_GROUP, type ReliableKeys, type UserKeys } from '../../redis/keys.js';
import { describe } from '../pubsub/redis-connection.js';
import { sweepDeadInstances } from './dead-instances.js';
import { Coalescer } from './coalescer.js';
import { SendBatcher } from './send-batcher.js';
import {
  DELIVERY_STREAM_MAX,
  type Durability,
  type LaneScripts,
  laneScripts,
  sendReliableBatch,
  unavailable,
} from './reliable-producer.js';
import {
  type InboxEntry,
  inboxArguments,
  type InboxRead,
  parseEntry,
  parsePosition,
  type Position,
  type SessionCounters,
  type SessionHost,
  type SessionOptions,
  sleep,
  UserSession,
} from './user-session.js';

/** Options of the reliable lane; defaults in `DEFAULT_RELIABLE_OPTIONS`. */
export interface ReliableOptions extends SessionOptions {
  /** Messages kept per user inbox (acked or not). */
  maxLength: number;
  /** How long a message is kept (and how long idempotency keys are remembered). */
  maxAgeMs: number;
  /** How often an instance proves it is alive and re-registers its users' presence. */
  heartbeatIntervalMs: number;
  /**
   * An instance silent this long is taken for dead: senders stop routing to it and its delivery stream is
   * deleted. A paused instance (GC, SIGSTOP) shorter than this keeps everything and catches up; one
   * paused longer recreates its stream and replays its users' inboxes when it resumes.
   */
  instanceTimeoutMs: number;
  /** How long one blocking XREADGROUP waits before checking whether the lane is closing. */
  blockMs: number;
  /**
   * Replicas that must confirm a send (`WAIT`) before it resolves, so that a failover cannot lose it.
   * @default 1 on a Cluster, 0 on one node
   */
  replicas?: number;
  /** How long a send waits for them before it fails (retry it with its key). @default 1_000 */
  replicaTimeoutMs?: number;
}

/** The default of `reliable.window`: messages in flight per user. */
export const DEFAULT_WINDOW = 32;

/**
 * The window a lane uses when its options leave it out: `RELIABLE_WINDOW` from the environment when set
 * (so that a deployment, or a test run, can set it for every lane of the process), else {@link DEFAULT_WINDOW}.
 */
export function defaultWindow(env: NodeJS.ProcessEnv = process.env): number {
  const value = env.RELIABLE_WINDOW;
  return value === undefined || value === '' ? DEFAULT_WINDOW : validWindow(Number(value));
}

/** The window, checked: an integer from 1 to 10,000. */
export function validWindow(window: number): number {
  if (!Number.isInteger(window) || window < 1 || window > 10_000) {
    throw new RelayhubError(
      'ERR_CONFIG',
      `reliable.window must be an integer from 1 to 10000 (got ${window}).`,
      {
        remedy: `Leave it unset (${DEFAULT_WINDOW}), or set 1 for one message in flight per user.`,
      },
    );
  }
  return window;
}

export const DEFAULT_RELIABLE_OPTIONS: Readonly<ReliableOptions> = Object.freeze({
  window: DEFAULT_WINDOW,
  ackTimeoutMs: 30_000,
  maxAttempts: 5,
  retryDelayMs: 200,
  maxRetryDelayMs: 5_000,
  maxLength: 10_000,
  maxAgeMs: 24 * 60 * 60 * 1000,
  heartbeatIntervalMs: 5_000,
  instanceTimeoutMs: 15_000,
  blockMs: 1_000,
});

const READ_COUNT = 200;
/**
 * The shortest time between two reads of the delivery stream while it has wake-ups: a busy instance
 * writes one read per this time instead of one per wake-up (a socket write costs more than the read).
 */
const READ_INTERVAL_MS = 2;
/** How long a client's ack waits for others to go to Redis with (it delays no delivery). */
const ACK_DELAY_MS = 2;
/** The most acks sent together (one script on one node). */
const ACK_BATCH = 100;
/** How long consumed wake-ups wait to be acknowledged together (fewer writes at a moderate rate). */
const CONSUME_DELAY_MS = 20;
/** Users re-registered by one heartbeat script on one node. */
const BEAT_USERS_PER_SCRIPT = 200;

export interface StreamsLaneDeps {
  /** Commands (no offline queue: they fail fast while Redis is away). */
  redis: RedisClient;
  /** A connection of its own for the blocking XREADGROUP. */
  blocking: RedisClient;
  /** What a send waits for before it resolves. */
  durability: Durability;
  keys: ReliableKeys;
  instanceId: string;
  users: LocalUsers;
  options: ReliableOptions;
  log: Logger;
  onDeadLetter?: (letter: DeadLetter) => void | Promise<void>;
}

/** A client's ack waiting to go to Redis. */
interface PendingAck {
  keys: UserKeys;
  offset: number;
  streamId: string;
  count: number;
  resolve: (advanced: boolean) => void;
  reject: (error: unknown) => void;
}

/** A message the lane gave up on. */
export interface DeadLetter {
  userId: string;
  messageId: string;
  offset: number;
  target: string;
  args: unknown[];
  reason: string;
}

/**
 * The reliable lane of one hub on one instance: sends (a Lua script appends to the user's inbox, then a
 * wake-up is routed to each instance holding the user, one script per instance slot), this instance's
 * delivery consumer (XREADGROUP on its own stream), its users' sessions, and its heartbeat (which also
 * re-reads the inboxes of local users with unacked messages, closing the window between those two steps).
 */
export class StreamsLane implements ReliableLane, SessionHost {
  readonly redis: RedisClient;
  readonly options: ReliableOptions;
  readonly log: Logger;
  readonly counters: SessionCounters = { delivered: 0, acked: 0, redeliveries: 0, deadLetters: 0, gaps: 0 };
  readonly #deps: StreamsLaneDeps;
  readonly #scripts: LaneScripts & RedisClient;
  readonly #sessions = new Map<string, UserSession>();
  /** Users whose presence could not be registered: messages sent to them are not routed here yet. */
  readonly #unannounced = new Set<string>();
  readonly #stop = new AbortController();
  #heartbeat: NodeJS.Timeout | undefined;
  #lastBeat = 0;
  #reading: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  /** Clients' acks, sent together (see {@link ack}). */
  readonly #acks = new Coalescer<PendingAck>(ACK_BATCH, ACK_DELAY_MS, (acks) => this.#sendAcks(acks));
  /** Consumed wake-ups, deleted together (see {@link #consumed}). */
  readonly #consumedWakeups = new Coalescer<string>(READ_COUNT, CONSUME_DELAY_MS, (ids) =>
    this.#deleteWakeups(ids),
  );
  /** The sends of one event-loop turn, sent together. */
  readonly #batcher = new SendBatcher((messages) =>
    sendReliableBatch(this.#scripts, this.#deps.keys, this.options, messages, this.#deps.durability),
  );

  constructor(deps: StreamsLaneDeps) {
    this.#deps = deps;
    this.redis = deps.redis;
    this.options = deps.options;
    this.log = deps.log;
    this.#scripts = laneScripts(deps.redis);
  }

  async start(): Promise<void> {
    await this.#ensureGroup();
    await this.#beat();
    this.#heartbeat = setInterval(() => void this.#beat(), this.options.heartbeatIntervalMs);
    this.#heartbeat.unref();
    this.#reading = this.#readLoop();
  }

  // ---- sending ----

  send(message: ReliableMessage): Promise<ReliableSendResult> {
    if (this.#closing) return Promise.reject(new RelayhubError('ERR_CLOSED', 'The reliable lane is closed.'));
    return this.#batcher.send(message);
  }

  // ---- users on this instance ----

  async userArrived(userId: string): Promise<void> {
    let session = this.#sessions.get(userId);
    if (!session) {
      session = new UserSession(userId, this.#deps.keys.user(userId), this);
      this.#sessions.set(userId, session);
    }
    try {
      // note: presence first, then the replay: a message sent in between is routed here and also found by
      // the replay, and the session's offset drops the second copy.
      await this.redis.sadd(this.#deps.keys.user(userId).presence, this.#deps.instanceId);
    } catch (error) {
      this.#unannounced.add(userId);
      this.log.warn({ err: error, userId }, 'could not register presence; the heartbeat will retry');
    }
    void session.wake();
  }

  userLeft(userId: string): void {
    this.#unannounced.delete(userId);
    this.#sessions.get(userId)?.close();
    this.#sessions.delete(userId);
    this.redis
      .srem(this.#deps.keys.user(userId).presence, this.#deps.instanceId)
      .catch((error: unknown) => this.log.debug({ err: error, userId }, 'could not remove presence'));
  }

  recipients(userId: string): ReliableRecipient[] {
    return this.#deps.users.connectionsOf(userId);
  }

  hasRecipients(userId: string): boolean {
    const users = this.#deps.users;
    return users.hasConnections ? users.hasConnections(userId) : users.connectionsOf(userId).length > 0;
  }

  async readFromAcked(keys: UserKeys, count: number): Promise<InboxRead> {
    const [acked, entries] = await this.#scripts.relayhubRead(keys.acked, keys.inbox, count);
    return { acked: parsePosition(acked), entries: entries.map(parseEntry) };
  }

  async readAfter(keys: UserKeys, streamId: string, count: number): Promise<InboxEntry[]> {
    const start = streamId === '0-0' ? '-' : `(${streamId}`;
    const entries = (await this.redis.xrange(keys.inbox, start, '+', 'COUNT', count)) as [string, string[]][];
    return entries.map(parseEntry);
  }

  async acked(keys: UserKeys): Promise<Position> {
    return parsePosition(await this.redis.get(keys.acked));
  }

  /**
   * Acks wait up to {@link ACK_DELAY_MS} (or until {@link ACK_BATCH} are waiting) and go to Redis together:
   * on one node in one script per {@link ACK_BATCH} users, on a Cluster one script per user, pipelined per node.
   */
  ack(keys: UserKeys, offset: number, streamId: string, count: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#acks.push({ keys, offset, streamId, count, resolve, reject });
      // note: closing: the sessions' last acks go at once, while the connection is still open.
      if (this.#stop.signal.aborted) this.#acks.flush();
    });
  }

  #sendAcks(acks: PendingAck[]): void {
    const maxAge = this.options.maxAgeMs;
    if (this.redis.isCluster) {
      for (const a of acks) {
        this.#scripts
          .relayhubAck(a.keys.acked, a.keys.inbox, a.offset, a.streamId, maxAge)
          .then((answer) => a.resolve(this.#acked(a, Number(answer))), a.reject);
      }
      return;
    }
    const keys = acks.flatMap((a) => [a.keys.acked, a.keys.inbox]);
    const args = acks.flatMap((a) => [a.offset, a.streamId]);
    this.#scripts.relayhubAckMany(keys.length, ...keys, maxAge, ...args).then(
      (answers) => acks.forEach((a, i) => a.resolve(this.#acked(a, Number(answers[i])))),
      (error: unknown) => acks.forEach((a) => a.reject(error)),
    );
  }

  /** Counts an ack's answer (1 advanced, 0 already there, -1 stale); whether it moved the acked offset. */
  #acked(ack: PendingAck, answer: number): boolean {
    // note: -1: this Redis never held that entry (it restarted empty or failed over meanwhile): the ack
    // belongs to an older generation and must not acknowledge what was relayed again under its offset.
    if (answer === -1) {
      this.log.info(
        { offset: ack.offset, streamId: ack.streamId },
        'stale ack ignored: the inbox no longer holds that entry',
      );
      return false;
    }
    this.counters.acked += ack.count;
    return answer === 1;
  }

  async deadLetter(userId: string, entry: InboxEntry, reason: string): Promise<void> {
    this.counters.deadLetters++;
    this.log.warn({ userId, offset: entry.offset, reason }, 'reliable message dead-lettered');
    await this.redis.xadd(
      this.#deps.keys.deadLetters,
      'MAXLEN',
      '~',
      DELIVERY_STREAM_MAX,
      '*',
      'u',
      userId,
      'o',
      entry.offset,
      'm',
      entry.messageId,
      't',
      entry.target,
      'a',
      entry.argsJson,
      'r',
      reason,
    );
    try {
      const { argsJson, ...fields } = entry;
      await this.#deps.onDeadLetter?.({ userId, ...fields, args: JSON.parse(argsJson) as unknown[], reason });
    } catch (error) {
      this.log.error({ err: error }, 'onDeadLetter hook failed');
    }
  }

  // ---- this instance's delivery stream ----

  get #deliveries(): string {
    return this.#deps.keys.deliveries(this.#deps.instanceId);
  }

  async #ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', this.#deliveries, CONSUMER_GROUP, '0', 'MKSTREAM');
    } catch (error) {
      if (!describe(error).includes('BUSYGROUP')) throw unavailable(error);
    }
  }

  async #readLoop(): Promise<void> {
    const signal = this.#stop.signal;
    // note: first this consumer's own pending entries (read before a crash or pause), page by page from an
    // id, then new ones ('>').
    let cursor = '0';
    let failures = 0;
    while (!signal.aborted) {
      try {
        const issued = performance.now();
        const reply = (await this.#deps.blocking.xreadgroup(
          'GROUP',
          CONSUMER_GROUP,
          this.#deps.instanceId,
          'COUNT',
          READ_COUNT,
          'BLOCK',
          cursor === '>' ? this.options.blockMs : 1,
          'STREAMS',
          this.#deliveries,
          cursor,
        )) as [string, [string, string[]][]][] | null;
        failures = 0;
        const entries = reply?.[0]?.[1] ?? [];
        if (cursor !== '>') cursor = entries.length < READ_COUNT ? '>' : (entries.at(-1)?.[0] ?? '>');
        this.#dispatch(entries);
        // note: at most one read per READ_INTERVAL_MS while wake-ups keep coming: the wake-ups of that
        // time come in one reply (a blocking read that waited longer is sent again at once).
        const early = READ_INTERVAL_MS - (performance.now() - issued);
        if (entries.length > 0 && entries.length < READ_COUNT && early > 0) await sleep(early, signal);
      } catch (error) {
        if (signal.aborted) return;
        failures++;
        this.#forgetAll();
        // note: a read whose answer was lost with the connection left its entries pending for this
        // consumer, and '>' never returns them again: read the pending ones first.
        cursor = '0';
        if (describe(error).includes('NOGROUP')) {
          // note: the stream is gone (Redis lost its memory, or this instance was taken for dead while
          // paused): recreate it and replay every local user's inbox from its acked offset.
          this.log.warn('delivery stream missing; recreating it and replaying local users');
          await this.#ensureGroup().catch(() => undefined);
          this.#wakeAll();
        } else {
          this.log.warn({ err: error }, 'reading the delivery stream failed');
        }
        await sleep(Math.min(this.options.maxRetryDelayMs, 50 * 2 ** failures), signal);
      }
    }
  }

  /**
   * Wakes the sessions of the users in `entries`; each entry is acknowledged (and deleted) once its user's
   * session has caught up (`relayhub_reliable_pending` counts the wake-ups of users still being delivered to).
   */
  #dispatch(entries: [string, string[]][]): void {
    const byUser = new Map<string, { ids: string[]; carried: InboxEntry[] | undefined }>();
    for (const [id, fields] of entries) {
      // note: a pending entry trimmed from the stream comes back without fields: just acknowledge it.
      const user = (fields ? fields[fields.indexOf('u') + 1] : undefined) ?? '';
      const wakeups = byUser.get(user);
      if (!wakeups) {
        byUser.set(user, { ids: [id], carried: carriedEntries(fields) });
        continue;
      }
      wakeups.ids.push(id);
      // note: the session takes what the wake-ups carry only when every one of them carries its messages.
      const more = carriedEntries(fields);
      wakeups.carried = more && wakeups.carried ? [...wakeups.carried, ...more] : undefined;
    }
    for (const [user, { ids, carried }] of byUser) {
      const session = this.#sessions.get(user);
      if (!session) {
        this.#consumed(ids);
        continue;
      }
      session.wake(carried).then(
        () => this.#consumed(ids),
        (error: unknown) => this.log.debug({ err: error }, 'wake failed'),
      );
    }
  }

  /**
   * Acknowledges and deletes consumed wake-ups, those of up to {@link CONSUME_DELAY_MS} together (one XACK
   * and one XDEL): an entry is only a wake-up, and once acknowledged nothing reads it again. One that is
   * read again (its XACK was lost or not sent yet when the connection dropped) only wakes a session.
   */
  #consumed(ids: string[]): void {
    this.#consumedWakeups.push(...ids);
  }

  #deleteWakeups(batch: string[]): void {
    if (this.#stop.signal.aborted) return;
    this.redis
      .pipeline()
      .xack(this.#deliveries, CONSUMER_GROUP, ...batch)
      .xdel(this.#deliveries, ...batch)
      .exec()
      .catch((error: unknown) => this.log.debug({ err: error }, 'xack failed'));
  }

  /** Every session reads its inbox again, from the acked offset (after a lost stream or a long pause). */
  #wakeAll(): void {
    this.#forgetAll();
    for (const session of this.#sessions.values()) void session.wake();
  }

  /** Redis may have lost data or failed over: no session trusts the position it last saw. */
  #forgetAll(): void {
    for (const session of this.#sessions.values()) session.forget();
  }

  /**
   * Proves this instance alive, re-registers its users (one script per user, in the user's slot), re-reads
   * the inbox of every local user with unacked messages, and deletes the streams of dead instances.
   */
  async #beat(): Promise<void> {
    const keys = this.#deps.keys;
    const id = this.#deps.instanceId;
    const now = Date.now();
    const away = this.#lastBeat !== 0 && now - this.#lastBeat > this.options.instanceTimeoutMs;
    try {
      const previous = await this.redis.set(
        keys.alive(id),
        String(now),
        'PX',
        this.options.instanceTimeoutMs,
        'GET',
      );
      await this.redis.sadd(keys.instances, id);
      const users = [...this.#sessions.keys()];
      // note: one script per user on a Cluster (its keys are in the user's slot), per 200 users on one node.
      const group = this.redis.isCluster ? 1 : BEAT_USERS_PER_SCRIPT;
      const calls: Promise<number[]>[] = [];
      for (let i = 0; i < users.length; i += group) {
        const keysOf = users.slice(i, i + group).flatMap((user) => {
          const u = keys.user(user);
          return [u.presence, u.seq, u.acked];
        });
        calls.push(this.#scripts.relayhubBeatUsers(keysOf.length, ...keysOf, id));
      }
      const flat = (await Promise.all(calls)).flat();
      const positions = users.map((_, i) => [flat[2 * i] ?? 0, flat[2 * i + 1] ?? 0]);
      // note: while the alive key was gone (it expired, or Redis lost its memory), senders skipped this
      // instance and dropped it from its users' presence: their messages wait in the inboxes unannounced.
      const wasGone = this.#lastBeat !== 0 && previous === null;
      this.#lastBeat = now;
      // note: after a pause longer than the instance timeout, senders stopped routing here: catch up.
      if (away || wasGone) this.#wakeAll();
      else {
        // note: the re-read that closes the window between a send and its routing (the sender died in
        // between, or a failover dropped the wake-up): a user with unacked messages is looked at again.
        users.forEach((user, i) => {
          const [last, acked] = positions[i] ?? [0, 0];
          if (Number(last) > Number(acked)) void this.#sessions.get(user)?.wake();
        });
      }
      // note: the heartbeat registered them just now; what was sent before it was not routed here.
      for (const user of this.#unannounced) void this.#sessions.get(user)?.wake();
      this.#unannounced.clear();
      await this.#sweep();
    } catch (error) {
      this.log.warn({ err: error }, 'reliable lane heartbeat failed');
    }
  }

  async #sweep(): Promise<void> {
    const dead = await sweepDeadInstances(this.redis, this.#deps.keys, this.#deps.instanceId);
    if (dead.length > 0) this.log.info({ dead }, 'removed the delivery streams of dead instances');
  }

  async metrics(): Promise<ReliableMetrics> {
    let lag = 0;
    let pending = 0;
    try {
      const groups = (await this.redis.xinfo('GROUPS', this.#deliveries)) as unknown[][];
      for (const group of groups) {
        const fields = new Map<string, unknown>();
        for (let i = 0; i + 1 < group.length; i += 2) fields.set(String(group[i]), group[i + 1]);
        if (fields.get('name') !== CONSUMER_GROUP) continue;
        lag = Number(fields.get('lag') ?? 0);
        pending = Number(fields.get('pending') ?? 0);
      }
    } catch (error) {
      throw unavailable(error);
    }
    let oldest = 0;
    for (const session of this.#sessions.values()) {
      if (session.inFlightSince > 0 && (oldest === 0 || session.inFlightSince < oldest)) {
        oldest = session.inFlightSince;
      }
    }
    return { lag, pending, ...this.counters, oldestUnackedAgeMs: oldest === 0 ? 0 : Date.now() - oldest };
  }

  /** Stops reading, ends the sessions, and withdraws this instance (its users reconnect elsewhere). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      clearInterval(this.#heartbeat);
      this.#consumedWakeups.clear();
      // note: the acks clients gave are sent, not dropped (the lane's connection stays open until below).
      this.#acks.flush();
      for (const session of this.#sessions.values()) session.close();
      this.#deps.blocking.disconnect();
      await this.#reading;
      const keys = this.#deps.keys;
      const id = this.#deps.instanceId;
      try {
        // note: one command per slot (users' presence, this instance's keys, the instance set).
        await Promise.all([
          ...[...this.#sessions.keys()].map((user) => this.redis.srem(keys.user(user).presence, id)),
          this.redis.del(keys.alive(id), keys.deliveries(id)),
          this.redis.srem(keys.instances, id),
        ]);
      } catch (error) {
        this.log.warn({ err: error }, 'could not withdraw the instance from Redis');
      }
      this.#sessions.clear();
    })();
    return this.#closing;
  }
}

/** Fields of one carried message in a wake-up: `s` stream id, `m`, `t`, `a` (see `SEND_SCRIPT`). */
const CARRIED_FIELDS = 8;

/**
 * The inbox entries a wake-up carries (`u`, `o`, then per message `s`, `m`, `t`, `a`, their offsets ending
 * at `o`), or undefined when it carries none (large arguments, a Cluster's routed wake-up).
 */
function carriedEntries(fields: string[] | undefined): InboxEntry[] | undefined {
  if (!fields || fields.length < 4 + CARRIED_FIELDS || fields[2] !== 'o' || fields[4] !== 's')
    return undefined;
  const count = (fields.length - 4) / CARRIED_FIELDS;
  const last = Number(fields[3]);
  if (!Number.isInteger(count) || !Number.isSafeInteger(last)) return undefined;
  const entries: InboxEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 4 + i * CARRIED_FIELDS;
    if (fields[at] !== 's' || fields[at + 2] !== 'm' || fields[at + 4] !== 't' || fields[at + 6] !== 'a') {
      return undefined;
    }
    entries.push({
      streamId: fields[at + 1] as string,
      offset: last - count + 1 + i,
      messageId: fields[at + 3] as string,
      target: fields[at + 5] as string,
      argsJson: inboxArguments(fields[at + 7] as string),
    });
  }
  return entries;
}
