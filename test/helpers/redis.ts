import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';

/** The shared Redis every non-chaos test uses; tests isolate themselves by prefix, never by flushing. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A channel prefix no other test uses. */
export const uniquePrefix = (name = 'test'): string => `rh-${name}-${randomBytes(4).toString('hex')}`;

/** Deletes the keys of one test's unique prefix (SCAN + UNLINK; never a flush). */
export async function deletePrefix(redisUrl: string, prefix: string): Promise<void> {
  if (!prefix.startsWith('rh-')) throw new Error(`Refusing to delete keys of prefix '${prefix}'.`);
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2_000 });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
