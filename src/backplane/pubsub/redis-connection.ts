import { Redis, type RedisOptions } from 'ioredis';
import { redisUnavailable } from '../../unavailable.js';

export interface RedisConnectionOptions {
  /**
   * Where Redis is.
   * @default 'redis://127.0.0.1:6379'
   */
  redisUrl?: string;
  /**
   * How long to wait for a connection, at start and on each reconnect attempt.
   * @default 5_000
   */
  connectTimeoutMs?: number;
  /**
   * The longest wait between reconnect attempts; waits grow from 50 ms with jitter up to this.
   * @default 2_000
   */
  maxRetryDelayMs?: number;
  /**
   * A command that Redis has not answered within this time fails (ioredis `commandTimeout`), so that a
   * stalled Redis (paused, swapping, a network black hole) cannot hold a send, a registration or a
   * reliable-lane call forever. Applies to the non-blocking roles only: the subscriber and the blocking
   * XREADGROUP reader wait by design.
   * @default 5_000
   */
  commandTimeoutMs?: number;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** Capped exponential backoff with full jitter, so that many instances do not reconnect in lockstep. */
export function retryDelay(attempt: number, maxDelayMs: number): number {
  const ceiling = Math.min(maxDelayMs, 50 * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/**
 * Opens an ioredis connection for one role. Commands fail at once while disconnected (no offline queue)
 * unless `queueWhileOffline`, which only the subscriber uses, so that its subscriptions are restored.
 * Commands time out after `commandTimeoutMs` unless the role `waits` (the subscriber, a blocking reader).
 */
export function openRedis(
  options: RedisConnectionOptions,
  role: string,
  {
    queueWhileOffline = false,
    autoPipelining = false,
    waits = queueWhileOffline,
  }: { queueWhileOffline?: boolean; autoPipelining?: boolean; waits?: boolean } = {},
): Redis {
  const url = options.redisUrl ?? DEFAULT_REDIS_URL;
  const maxDelay = options.maxRetryDelayMs ?? 2_000;
  const redisOptions: RedisOptions = {
    connectionName: role,
    connectTimeout: options.connectTimeoutMs ?? 5_000,
    lazyConnect: true,
    enableOfflineQueue: queueWhileOffline,
    enableAutoPipelining: autoPipelining,
    // note: at-most-once: a command caught by a disconnect fails instead of being sent again later.
    maxRetriesPerRequest: queueWhileOffline ? null : 0,
    autoResubscribe: true,
    retryStrategy: (attempt) => retryDelay(attempt, maxDelay),
    ...(waits ? {} : { commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS }),
  };
  return new Redis(url, redisOptions);
}

/** Connects, turning a failure into one clear sentence with the command that starts Redis. */
export async function connectRedis(redis: Redis, url: string, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // note: connect() rejects with a bare "Connection is closed."; the 'error' event before it says why.
  let cause: unknown;
  const onError = (error: unknown) => {
    cause ??= error;
  };
  redis.on('error', onError);
  try {
    await Promise.race([
      redis.connect(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (error) {
    throw redisUnavailable(url, cause ?? error);
  } finally {
    clearTimeout(timer);
    redis.off('error', onError);
  }
}

export const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error));
