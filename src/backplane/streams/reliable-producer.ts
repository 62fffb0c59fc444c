import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Cluster } from 'ioredis';
import { RelayhubError } from '../../errors.js';
import {
  connectClient,
  isClusterTarget,
  openClient,
  type RedisClient,
  type RedisOptions,
  type RedisTarget,
  targetOf,
} from '../../redis/connection.js';
import { DEFAULT_CHANNEL_PREFIX, type ReliableKeys, reliableKeys, validateUserId } from '../../redis/keys.js';
import type { ReliableMessage, ReliableSendResult } from '../backplane.js';
import { describe } from '../pubsub/redis-connection.js';
import { ACK_SCRIPT, BEAT_USER_SCRIPT, ROUTE_SCRIPT, SEND_SCRIPT } from './scripts.js';

/** Delivery wake-ups kept per instance stream (they are tiny; the messages live in the inboxes). */
export const DELIVERY_STREAM_MAX = 100_000;

type SendReply = [number, string, number, ...string[]];

/** The lane's scripts, as ioredis exposes them after `defineCommand` (EVALSHA with an EVAL fallback). */
export interface LaneScripts {
  relayhubSend(
    seq: string,
    inbox: string,
    presence: string,
    dedup: string,
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
  relayhubBeatUser(
    presence: string,
    seq: string,
    acked: string,
    instanceId: string,
  ): Promise<[number, number]>;
}

/** Registers the lane's scripts on a connection and returns them typed. */
export function laneScripts(redis: RedisClient): LaneScripts & RedisClient {
  redis.defineCommand('relayhubSend', { numberOfKeys: 4, lua: SEND_SCRIPT });
  redis.defineCommand('relayhubRoute', { numberOfKeys: 2, lua: ROUTE_SCRIPT });
  redis.defineCommand('relayhubAck', { numberOfKeys: 2, lua: ACK_SCRIPT });
  redis.defineCommand('relayhubBeatUser', { numberOfKeys: 3, lua: BEAT_USER_SCRIPT });
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
  durability: Durability = { replicas: 0, replicaTimeoutMs: 0 },
): Promise<ReliableSendResult> {
  const user = keys.user(validateUserId(message.userId));
  const args = [
    user.seq,
    user.inbox,
    user.presence,
    user.dedup(message.key ?? '-'),
    message.key ?? randomUUID(),
    message.target,
    JSON.stringify(message.args),
    retention.maxLength,
    retention.maxAgeMs,
    // note: one node routes inside the script (atomic); a Cluster cannot, so the sender routes after it.
    scripts.isCluster ? '' : keys.instancePrefix,
    message.userId,
    DELIVERY_STREAM_MAX,
    message.key === undefined ? '0' : '1',
  ] as const;
  let reply: SendReply;
  try {
    if (durability.replicas > 0) {
      reply = await sendAndWait(scripts, args, durability);
    } else {
      reply = await scripts.relayhubSend(...args);
    }
  } catch (error) {
    throw unavailable(error);
  }
  const [offset, messageId, duplicate, ...instances] = reply;
  await route(scripts, keys, message.userId, Number(offset), instances);
  return { messageId, offset: Number(offset), duplicate: duplicate === 1 };
}

/** One message's outcome in {@link sendReliableBatch}. */
export type BatchSendOutcome = { ok: true; result: ReliableSendResult } | { ok: false; error: RelayhubError };

/**
 * Sends many reliable messages, each user's in the order given, users concurrently. The outcomes line
 * up with `messages`. When a message of a user fails, that user's later messages of the batch are not
 * sent and fail with the same error (so that per-user order holds when the caller retries them).
 * Guarantees as {@link sendReliable} for each message.
 */
// note: the seam the outbox worker's bulk relay calls; how it batches Redis work is this file's business.
export async function sendReliableBatch(
  scripts: LaneScripts & RedisClient,
  keys: ReliableKeys,
  retention: Retention,
  messages: readonly ReliableMessage[],
  durability: Durability = { replicas: 0, replicaTimeoutMs: 0 },
): Promise<BatchSendOutcome[]> {
  const outcomes: BatchSendOutcome[] = new Array<BatchSendOutcome>(messages.length);
  const byUser = new Map<string, number[]>();
  messages.forEach((message, index) => {
    const list = byUser.get(message.userId);
    if (list) list.push(index);
    else byUser.set(message.userId, [index]);
  });
  await Promise.all(
    [...byUser.values()].map(async (indexes) => {
      let failure: RelayhubError | undefined;
      for (const index of indexes) {
        if (failure) {
          outcomes[index] = { ok: false, error: failure };
          continue;
        }
        try {
          const result = await sendReliable(scripts, keys, retention, messages[index]!, durability);
          outcomes[index] = { ok: true, result };
        } catch (error) {
          failure = unavailable(error);
          outcomes[index] = { ok: false, error: failure };
        }
      }
    }),
  );
  return outcomes;
}

/** How many times a send that hit a moved slot is tried again (a MOVED reply means it did not run). */
const MOVED_RETRIES = 3;

/**
 * The send script and `WAIT` in one pipeline, so that both run on the same connection (WAIT counts the
 * replicas of that connection's writes).
 */
async function sendAndWait(
  scripts: LaneScripts & RedisClient,
  args: readonly (string | number)[],
  durability: Durability,
): Promise<SendReply> {
  for (let attempt = 0; ; attempt++) {
    const pipeline = scripts.pipeline() as ChainableCommander & {
      relayhubSend(...a: (string | number)[]): ChainableCommander;
    };
    const results = await pipeline
      .relayhubSend(...args)
      .wait(durability.replicas, durability.replicaTimeoutMs)
      .exec();
    const [sent, waited] = results ?? [];
    const error = sent?.[0] ?? waited?.[0];
    // note: ioredis follows a MOVED in a pipeline only when every command got the same one; WAIT answers
    // differently (a former primary is a replica now), so the slot map is refreshed here and the pipeline
    // sent again. MOVED / TRYAGAIN / CLUSTERDOWN mean the script did not run: sending it again is safe.
    if (
      error &&
      scripts.isCluster &&
      attempt < MOVED_RETRIES &&
      /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)/.test(describe(error))
    ) {
      await new Promise<void>((resolve) => (scripts as Cluster).refreshSlotsCache(() => resolve()));
      continue;
    }
    if (!sent || !waited) throw new Error('no reply from Redis');
    if (error) throw error;
    if (Number(waited[1]) < durability.replicas) throw notReplicated(durability, Number(waited[1]));
    return sent[1] as SendReply;
  }
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
  async send(message: ReliableMessage): Promise<ReliableSendResult> {
    this.#connected ??= connectClient(this.#redis, this.#target, this.#timeout);
    await this.#connected.catch((error: unknown) => {
      this.#connected = undefined;
      throw error;
    });
    return sendReliable(this.#scripts, this.#keys, this.#retention, message, this.#durability);
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

  async close(): Promise<void> {
    if (this.#redis.status === 'ready') await this.#redis.quit().catch(() => this.#redis.disconnect());
    else this.#redis.disconnect();
  }
}
