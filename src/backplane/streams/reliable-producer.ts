import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RelayhubError } from '../../errors.js';
import type { ReliableMessage, ReliableSendResult } from '../backplane.js';
import { DEFAULT_CHANNEL_PREFIX, type ReliableKeys, reliableKeys, validateUserId } from '../keys.js';
import {
  connectRedis,
  DEFAULT_REDIS_URL,
  describe,
  openRedis,
  type RedisConnectionOptions,
} from '../pubsub/redis-connection.js';
import { ACK_SCRIPT, SEND_SCRIPT } from './scripts.js';

/** Delivery wake-ups kept per instance stream (they are tiny; the messages live in the inboxes). */
export const DELIVERY_STREAM_MAX = 100_000;

/** The lane's scripts, as ioredis exposes them after `defineCommand` (EVALSHA with an EVAL fallback). */
interface LaneScripts {
  relayhubSend(
    seq: string,
    inbox: string,
    presence: string,
    dedup: string,
    ...argv: (string | number)[]
  ): Promise<[number, string, number]>;
  relayhubAck(acked: string, offset: number, streamId: string, maxAgeMs: number): Promise<number>;
}

/** Registers the lane's scripts on a connection and returns them typed. */
export function laneScripts(redis: Redis): LaneScripts {
  redis.defineCommand('relayhubSend', { numberOfKeys: 4, lua: SEND_SCRIPT });
  redis.defineCommand('relayhubAck', { numberOfKeys: 1, lua: ACK_SCRIPT });
  return redis as unknown as LaneScripts;
}

export interface Retention {
  /** Messages kept per user inbox. */
  maxLength: number;
  /** How long messages (and idempotency keys) are kept. */
  maxAgeMs: number;
}

/** Appends reliable messages to users' inboxes: what a hub instance and the outbox worker both do. */
export async function sendReliable(
  scripts: LaneScripts,
  keys: ReliableKeys,
  retention: Retention,
  message: ReliableMessage,
): Promise<ReliableSendResult> {
  const user = keys.user(validateUserId(message.userId));
  try {
    const [offset, messageId, duplicate] = await scripts.relayhubSend(
      user.seq,
      user.inbox,
      user.presence,
      message.key === undefined ? '' : user.dedup(message.key),
      message.key ?? randomUUID(),
      message.target,
      JSON.stringify(message.args),
      retention.maxLength,
      retention.maxAgeMs,
      keys.instancePrefix,
      message.userId,
      DELIVERY_STREAM_MAX,
    );
    return { messageId, offset: Number(offset), duplicate: duplicate === 1 };
  } catch (error) {
    throw unavailable(error);
  }
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

export interface ReliableProducerOptions extends RedisConnectionOptions, Partial<Retention> {
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
  readonly #redis: Redis;
  readonly #scripts: LaneScripts;
  readonly #keys: ReliableKeys;
  readonly #retention: Retention;
  readonly #url: string;
  readonly #timeout: number;
  #connected: Promise<void> | undefined;

  constructor(options: ReliableProducerOptions) {
    this.#url = options.redisUrl ?? DEFAULT_REDIS_URL;
    this.#timeout = options.connectTimeoutMs ?? 5_000;
    this.#redis = openRedis(options, 'relayhub:producer');
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
    this.#connected ??= connectRedis(this.#redis, this.#url, this.#timeout);
    await this.#connected.catch((error: unknown) => {
      this.#connected = undefined;
      throw error;
    });
    return sendReliable(this.#scripts, this.#keys, this.#retention, message);
  }

  async close(): Promise<void> {
    if (this.#redis.status === 'ready') await this.#redis.quit().catch(() => this.#redis.disconnect());
    else this.#redis.disconnect();
  }
}
