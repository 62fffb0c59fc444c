import { randomBytes } from 'node:crypto';

/** The shared Redis every non-chaos test uses; tests isolate themselves by prefix, never by flushing. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A channel prefix no other test uses. */
export const uniquePrefix = (name = 'test'): string => `rh-${name}-${randomBytes(4).toString('hex')}`;
