import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Cluster } from 'ioredis';
import { RelayhubError } from '../../errors.js';
import {
  connectClient,
  isClusterTarget,
  openClient,
  quitClient,
  type RedisClient,
  type RedisOptions,
  type RedisTarget,
  targetOf,
} from '../../redis/connection.js';
import { DEFAULT_CHANNEL_PREFIX, type ReliableKeys, reliableKeys, validateUserId } from '../../redis/keys.js';
import { keySlot } from '../../redis/slot.js';
import type { ReliableMessage, ReliableSendResult } from '../backplane.js';
import { describe } from '../pubsub/redis-connection.js';
import { SendBatcher } from './send-batcher.js';
import {
  ACK_MANY_SCRIPT,
  ACK_SCRIPT,
  BEAT_USER_SCRIPT,
  READ_SCRIPT,
  ROUTE_SCRIPT,
  SEND_SCRIPT,
} from './scripts.js';

/** Delivery wake-ups kept per instance stream (they are tiny; the messages live in the inboxes). */
export const DELIVERY_STREAM_MAX = 100_000;

/** `{ count, (offset, message id, duplicate) × count, instance ids... }`, as SEND_SCRIPT answers. */
type SendReply = (number | string)[];

/** The lane's scripts, as ioredis exposes them after `defineCommand` (EVALSHA with an EVAL fallback). */
export interface LaneScripts {
  relayhubSend(
    seq: string,
    inbox: string,
    presence: string,
    sent: string,
    ...argv: (string | number)[]
  ): Promise<SendReply>;
  relayhubRoute(
    alive: string,
    deliveries: string,
    userId: string,
    offset: number,
    max: number,
  ): Promise<number>;
  relayhubAck(
    acked: string,
    inbox: string,
    offset: number,
    streamId: string,
    maxAgeMs: number,
  ): Promise<number>;
  /** `keyCount` keys: acked, inbox per user; then the max age and, per user, offset and stream id. */
  relayhubAckMany(keyCount: number, ...keysThenArgs: (string | number)[]): Promise<number[]>;
  relayhubRead(acked: string, inbox: string, count: number): Promise<[string, [string, string[]][]]>;
  /** `keyCount` keys: presence, seq, acked per user; then the instance id. */
  relayhubBeatUsers(keyCount: number, ...keysThenInstance: (string | number)[]): Promise<number[]>;
}

/** Registers the lane's scripts on a connection and returns them typed. */
export function laneScripts(redis: RedisClient): LaneScripts & RedisClient {
  redis.defineCommand('relayhubSend', { numberOfKeys: 4, lua: SEND_SCRIPT });
  redis.defineCommand('relayhubRoute', { numberOfKeys: 2, lua: ROUTE_SCRIPT });
  redis.defineCommand('relayhubAck', { numberOfKeys: 2, lua: ACK_SCRIPT });
  redis.defineCommand('relayhubAckMany', { lua: ACK_MANY_SCRIPT });
  redis.defineCommand('relayhubRead', { numberOfKeys: 2, lua: READ_SCRIPT });
  redis.defineCommand('relayhubBeatUsers', { lua: BEAT_USER_SCRIPT });
  return redis as unknown as LaneScripts & RedisClient;
}

export interface Retention {
  /** Messages kept per user inbox. */
  maxLength: number;
  /** How long messages (and idempotency keys) are kept. */
  maxAgeMs: number;
}

/**
 * How many replicas must hold a message before its send counts as done (`WAIT`), so that a primary
 * failover (Redis replicates asynchronously) cannot take back a message the sender was told is safe.
 */
export interface Durability {
  /** @default 1 on a Cluster, 0 on one node */
  replicas: number;
  /** How long to wait for them; a send they did not confirm in time fails (retry it with its key). @default 1_000 */
  replicaTimeoutMs: number;
}

/** The durability a target gets when the options leave it out. */
export function durabilityFor(target: RedisTarget, given: Partial<Durability> = {}): Durability {
  const durability = {
    replicas: given.replicas ?? (isClusterTarget(target) ? 1 : 0),
    replicaTimeoutMs: given.replicaTimeoutMs ?? 1_000,
  };
  if (!Number.isInteger(durability.replicas) || durability.replicas < 0) {
    throw new RelayhubError('ERR_CONFIG', 'replicas must be an integer of 0 or more.', {
      remedy: 'Use the number of replicas per primary (1 by default on a Cluster), or 0 to not wait.',
    });
  }
  if (!(durability.replicaTimeoutMs > 0)) {
    throw new RelayhubError('ERR_CONFIG', 'replicaTimeoutMs must be a positive number of milliseconds.', {
      remedy: 'Leave it unset (1000) or pass e.g. 500.',
    });
  }
  return durability;
}

/**
 * Appends a reliable message to a user's inbox (one script in the user's slot, followed by `WAIT` when
 * replicas are asked for) and wakes each instance holding the user: on one node inside that script; on a
 * Cluster afterwards (one script per instance, in that instance's slot, sent together). What a hub
 * instance and the outbox worker both do.
 *
 * note: on a Cluster the second step is best effort: when it fails or the process dies before it, the
 * message is safe in the inbox and the instances holding the user find it at their next heartbeat (bound:
 * `reliable.heartbeatIntervalMs`, default 5 s), which re-reads every local user with unacked messages.
 */
export async function sendReliable(
  scripts: LaneScripts & RedisClient,
  keys: ReliableKeys,
  retention: Retention,
  message: ReliableMessage,
  durability: Durability = NO_REPLICAS,
): Promise<ReliableSendResult> {
  const [outcome] = await sendReliableBatch(scripts, keys, retention, [message], durability);
  if (!outcome) throw unavailable(new Error('no reply from Redis'));
  if (!outcome.ok) throw outcome.error;
  return outcome.result;
}

/** One message's outcome in {@link sendReliableBatch}. */
export type BatchSendOutcome = { ok: true; result: ReliableSendResult } | { ok: false; error: RelayhubError };

const NO_REPLICAS: Durability = { replicas: 0, replicaTimeoutMs: 0 };

/** One send script call: one user's messages of the batch, in order, and where their outcomes go. */
interface UserChunk {
  userId: string;
  indexes: number[];
  args: (string | number)[];
  /** The Cluster slot of the user's keys (0 on one node). */
  slot: number;
}

/**
 * Sends many reliable messages, each user's in the order given. The outcomes line up with `messages`.
 * When a message of a user fails, that user's later messages of the batch are not sent and fail with the
 * same error (so that per-user order holds when the caller retries them). Guarantees as
 * {@link sendReliable} for each message.
 *
 * Redis work: one send script call per user (all its messages of the batch: they are sent or fail
 * together), all users' calls in one pipeline per Redis node, with one `WAIT` at the end of each pipeline
 * when replicas are asked for; then (on a Cluster) one wake-up per user and instance.
 */
export async function sendReliableBatch(
  scripts: LaneScripts & RedisClient,
  keys: ReliableKeys,
  retention: Retention,
  messages: readonly ReliableMessage[],
  durability: Durability = NO_REPLICAS,
): Promise<BatchSendOutcome[]> {
  const outcomes: BatchSendOutcome[] = new Array<BatchSendOutcome>(messages.length);
  const inline = scripts.isCluster ? '' : keys.instancePrefix;
  // note: per user, all its messages of the batch in order, in one script call (atomic: all or none).
  const byUser = new Map<string, UserChunk>();
  // note: a message that cannot be sent stops its user's later ones (they fail with the same error).
  const refused = new Map<string, RelayhubError>();
  messages.forEach((message, index) => {
    const earlier = refused.get(message.userId);
    if (earlier) {
      outcomes[index] = { ok: false, error: earlier };
      return;
    }
    let userId: string;
    let args: string;
    try {
      userId = validateUserId(message.userId);
      args = JSON.stringify(message.args);
    } catch (error) {
      outcomes[index] = { ok: false, error: invalid(error) };
      refused.set(message.userId, outcomes[index].error);
      return;
    }
    let chunk = byUser.get(userId);
    if (!chunk) {
      const user = keys.user(userId);
      chunk = {
        userId,
        indexes: [],
        args: [
          user.seq,
          user.inbox,
          user.presence,
          user.sent,
          retention.maxLength,
          retention.maxAgeMs,
          // note: one node routes inside the script (atomic); a Cluster cannot, so the sender routes after.
          inline,
          userId,
          DELIVERY_STREAM_MAX,
        ],
        slot: scripts.isCluster ? keySlot(user.seq) : 0,
      };
      byUser.set(userId, chunk);
    }
    chunk.indexes.push(index);
    chunk.args.push(message.key ?? randomUUID(), message.target, args, message.key === undefined ? '0' : '1');
  });
  const chunks = [...byUser.values()];
  const replies = await sendChunks(scripts, chunks, durability);
  const routes: Promise<void>[] = [];
  chunks.forEach((chunk, i) => {
    const reply = replies[i] as SendReply | RelayhubError;
    if (reply instanceof RelayhubError) {
      for (const index of chunk.indexes) outcomes[index] = { ok: false, error: reply };
      return;
    }
    const count = Number(reply[0]);
    let last = 0;
    for (let m = 0; m < count; m++) {
      const offset = Number(reply[1 + m * 3]);
      const result = {
        offset,
        messageId: String(reply[2 + m * 3]),
        duplicate: Number(reply[3 + m * 3]) === 1,
      };
      outcomes[chunk.indexes[m] as number] = { ok: true, result };
      last = Math.max(last, offset);
    }
    // note: on one node the script routed already and names no instance.
    if (reply.length > 1 + count * 3) {
      routes.push(route(scripts, keys, chunk.userId, last, reply.slice(1 + count * 3).map(String)));
    }
  });
  await Promise.all(routes);
  return outcomes;
}

/** How many times a send that hit a moved slot is tried again (a MOVED reply means it did not run). */
const MOVED_RETRIES = 3;

type SendPipeline = ChainableCommander & {
  relayhubSend(...a: (string | number)[]): ChainableCommander;
};

/**
 * Runs the chunks' send scripts: one pipeline per Redis node (one write, one round trip), with `WAIT` at
 * its end when replicas are asked for (WAIT counts the replicas of that connection's writes, so it must
 * share the pipeline). Answers per chunk: the script's reply, or the error of that chunk.
 */
async function sendChunks(
  scripts: LaneScripts & RedisClient,
  chunks: readonly UserChunk[],
  durability: Durability,
): Promise<(SendReply | RelayhubError)[]> {
  const replies = new Array<SendReply | RelayhubError>(chunks.length);
  let pending = chunks.map((_, i) => i);
  for (let attempt = 0; pending.length > 0; attempt++) {
    const groups = new Map<string, number[]>();
    for (const i of pending) {
      const node = nodeOf(scripts, (chunks[i] as UserChunk).slot);
      const group = groups.get(node);
      if (group) group.push(i);
      else groups.set(node, [i]);
    }
    const retry: number[] = [];
    await Promise.all(
      [...groups.values()].map(async (group) => {
        const pipeline = scripts.pipeline() as SendPipeline;
        for (const i of group) pipeline.relayhubSend(...(chunks[i] as UserChunk).args);
        if (durability.replicas > 0) pipeline.wait(durability.replicas, durability.replicaTimeoutMs);
        let results: [Error | null, unknown][];
        try {
          results = (await pipeline.exec()) ?? [];
        } catch (error) {
          for (const i of group) replies[i] = unavailable(error);
          return;
        }
        const waited = durability.replicas > 0 ? results[group.length] : undefined;
        group.forEach((i, g) => {
          const [error, value] = results[g] ?? [new Error('no reply from Redis'), undefined];
          // note: ioredis follows a MOVED in a pipeline only when every command got the same one; WAIT
          // answers differently (a former primary is a replica now), so the slot map is refreshed and the
          // chunk sent again. MOVED / ASK / TRYAGAIN / CLUSTERDOWN mean the script did not run.
          if (error && scripts.isCluster && attempt < MOVED_RETRIES && MOVED.test(describe(error))) {
            retry.push(i);
          } else if (error) {
            replies[i] = unavailable(error);
          } else if (waited && (waited[0] || Number(waited[1]) < durability.replicas)) {
            replies[i] = waited[0] ? unavailable(waited[0]) : notReplicated(durability, Number(waited[1]));
          } else {
            replies[i] = value as SendReply;
          }
        });
      }),
    );
    if (retry.length > 0) {
      await new Promise<void>((resolve) => (scripts as Cluster).refreshSlotsCache(() => resolve()));
    }
    pending = retry;
  }
  return replies;
}

const MOVED = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)/;

/** The node serving a slot in the client's current slot map ("" on one node). */
function nodeOf(scripts: RedisClient, slot: number): string {
  if (!scripts.isCluster) return '';
  return (scripts as Cluster).slots[slot]?.[0] ?? '';
}

/** Wakes each live instance holding the user; drops the dead ones from the user's presence. Never throws. */
async function route(
  scripts: LaneScripts & RedisClient,
  keys: ReliableKeys,
  userId: string,
  offset: number,
  instances: string[],
): Promise<void> {
  if (instances.length === 0) return;
  const routed = await Promise.allSettled(
    instances.map((instance) =>
      scripts.relayhubRoute(
        keys.alive(instance),
        keys.deliveries(instance),
        userId,
        offset,
        DELIVERY_STREAM_MAX,
      ),
    ),
  );
  const gone = instances.filter((_, i) => {
    const r = routed[i];
    return r?.status === 'fulfilled' && Number(r.value) === 0;
  });
  if (gone.length > 0) await scripts.srem(keys.user(userId).presence, ...gone).catch(() => undefined);
}

function invalid(error: unknown): RelayhubError {
  if (error instanceof RelayhubError) return error;
  return new RelayhubError(
    'ERR_INVALID_MESSAGE',
    `The reliable message cannot be sent (${describe(error)}).`,
    {
      remedy: 'Pass arguments that JSON can encode (no cycles, no BigInt).',
      cause: error,
    },
  );
}

function notReplicated(durability: Durability, got: number): RelayhubError {
  return new RelayhubError(
    'ERR_BACKPLANE_UNAVAILABLE',
    `Only ${got} of ${durability.replicas} Redis replicas confirmed the reliable message within ${durability.replicaTimeoutMs} ms.`,
    {
      remedy:
        'Retry with the same key (it is safe); if the primary has no replica, set replicas: 0 (a failover may then lose recent messages).',
    },
  );
}

export function unavailable(error: unknown): RelayhubError {
  if (error instanceof RelayhubError) return error;
  return new RelayhubError(
    'ERR_BACKPLANE_UNAVAILABLE',
    `Redis did not take the reliable message (${describe(error)}).`,
    {
      remedy: 'Retry with the same key once Redis is reachable: the key makes the retry safe.',
      cause: error,
    },
  );
}

export interface ReliableProducerOptions extends RedisOptions, Partial<Retention>, Partial<Durability> {
  /** @default 'relayhub' */
  channelPrefix?: string;
  /** The hub path whose users receive the messages, e.g. `/hubs/demo`. */
  hub: string;
}

/**
 * Sends on a hub's reliable lane without being a hub instance (the outbox worker, a script). Messages reach
 * the users' clients through whichever instances hold them, exactly as `hub.reliable.user(id).send`.
 */
export class ReliableProducer {
  readonly #redis: RedisClient;
  readonly #scripts: LaneScripts & RedisClient;
  readonly #keys: ReliableKeys;
  readonly #retention: Retention;
  readonly #durability: Durability;
  readonly #target: RedisTarget;
  readonly #timeout: number;
  readonly #batcher = new SendBatcher((messages) => this.sendMany(messages));
  #connected: Promise<void> | undefined;

  constructor(options: ReliableProducerOptions) {
    this.#target = targetOf(options);
    this.#timeout = options.connectTimeoutMs ?? 5_000;
    this.#durability = durabilityFor(this.#target, options);
    this.#redis = openClient(options, 'relayhub:producer');
    this.#redis.on('error', () => undefined);
    this.#scripts = laneScripts(this.#redis);
    this.#keys = reliableKeys(options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX, options.hub);
    this.#retention = {
      maxLength: options.maxLength ?? 10_000,
      maxAgeMs: options.maxAgeMs ?? 24 * 60 * 60 * 1000,
    };
  }

  /**
   * Delivery as `ReliableUserProxy.send`: at least once, in order per user. Resolves once Redis holds the
   * message; rejects with `ERR_BACKPLANE_UNAVAILABLE` otherwise (retry with the same `key`).
   */
  send(message: ReliableMessage): Promise<ReliableSendResult> {
    // note: the sends of one event-loop turn go to Redis together (one script per user, one pipeline).
    return this.#batcher.send(message);
  }

  /** Many messages at once: see {@link sendReliableBatch} (per-user order, a failure stops that user's rest). */
  async sendMany(messages: readonly ReliableMessage[]): Promise<BatchSendOutcome[]> {
    this.#connected ??= connectClient(this.#redis, this.#target, this.#timeout);
    await this.#connected.catch((error: unknown) => {
      this.#connected = undefined;
      throw error;
    });
    return sendReliableBatch(this.#scripts, this.#keys, this.#retention, messages, this.#durability);
  }

  close(): Promise<void> {
    return quitClient(this.#redis);
  }
}
