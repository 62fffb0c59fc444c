import type { Logger } from 'pino';
import { RelayhubError } from '../errors.js';
import type { Backplane } from './backplane.js';
import { MemoryBackplane } from './memory/memory-backplane.js';
import { PubSubBackplane } from './pubsub/pubsub-backplane.js';
import { StreamsBackplane, type StreamsBackplaneOptions } from './streams/streams-backplane.js';

/** The backplanes that can be named instead of constructed. */
export type BackplaneKind = Backplane['kind'];

/** Where Redis is: a URL, or the backplane's own options object (passed through unchanged). */
export type RedisOption = string | Omit<StreamsBackplaneOptions, 'channelPrefix' | 'logger'>;

export interface NamedBackplaneOptions {
  redis?: RedisOption;
  channelPrefix?: string;
  logger?: Logger;
}

const KINDS: readonly BackplaneKind[] = ['memory', 'pubsub', 'streams'];

/**
 * Builds the backplane `kind` names: `memory` (one process), `pubsub` (Redis PUB/SUB) or `streams`
 * (PUB/SUB plus the reliable lane). `redis` is a URL or the backplane's options object.
 */
export function createBackplane(kind: BackplaneKind, options: NamedBackplaneOptions = {}): Backplane {
  if (!KINDS.includes(kind)) {
    throw new RelayhubError('ERR_CONFIG', `Unknown backplane '${String(kind)}'.`, {
      remedy: "Use 'memory', 'pubsub' or 'streams', or pass a Backplane instance.",
    });
  }
  if (kind === 'memory') {
    if (options.redis !== undefined) {
      throw new RelayhubError('ERR_CONFIG', "The 'memory' backplane does not use Redis.", {
        remedy: "Drop the redis option, or use backplane: 'pubsub' or 'streams'.",
      });
    }
    return new MemoryBackplane();
  }
  const redis = typeof options.redis === 'string' ? { redisUrl: options.redis } : (options.redis ?? {});
  const merged: StreamsBackplaneOptions = {
    ...redis,
    ...(options.channelPrefix !== undefined ? { channelPrefix: options.channelPrefix } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  };
  return kind === 'pubsub' ? new PubSubBackplane(merged) : new StreamsBackplane(merged);
}
