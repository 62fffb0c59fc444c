import type { RedisClient } from '../../redis/connection.js';
import type { ReliableKeys } from '../../redis/keys.js';

/**
 * Deletes the delivery streams of instances whose `alive` key expired (they died without closing) and
 * returns their ids. Their users' messages are safe in the users' inboxes: those users reconnect to another
 * instance and resume from their acked offset. Idempotent, so every instance and the worker may run it.
 */
export async function sweepDeadInstances(
  redis: RedisClient,
  keys: ReliableKeys,
  self?: string,
): Promise<string[]> {
  const dead: string[] = [];
  for (const instance of await redis.smembers(keys.instances)) {
    if (instance === self || (await redis.exists(keys.alive(instance)))) continue;
    await redis.del(keys.deliveries(instance));
    await redis.srem(keys.instances, instance);
    dead.push(instance);
  }
  return dead;
}
