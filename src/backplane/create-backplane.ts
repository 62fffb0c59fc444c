import type { Logger } from 'pino';
import { RelayhubError } from '../errors.js';
import type { Backplane } from './backplane.js';
import { MemoryBackplane } from './memory/memory-backplane.js';
import { PubSubBackplane, type PubSubBackplaneOptions } from './pubsub/pubsub-backplane.js';
import { StreamsBackplane, type StreamsBackplaneOptions } from './streams/streams-backplane.js';
import type { EndpointConfig } from '../redis/endpoints.js';
import { EndpointsBackplane } from './endpoints/endpoints-backplane.js';
import type { EndpointRouter } from './endpoints/endpoint-router.js';

/** The backplanes that can be named instead of constructed. */
export type BackplaneKind = Backplane['kind'];

/**
 * Where Redis is: a URL, or the form the backplanes' own `redis` option takes (`{ url }`, and where the
 * backplanes support it a Cluster, `{ cluster: [...] }`), passed through to them.
 */
// note: follows the backplanes' `redis` option when they have one, so that the forms compose.
export type RedisOption =
  string | (PubSubBackplaneOptions extends { redis?: infer Target } ? NonNullable<Target> : { url: string });

export interface NamedBackplaneOptions {
  redis?: RedisOption;
  channelPrefix?: string;
  /** @default a random id */
  instanceId?: string;
  logger?: Logger;
  /**
   * Several Redis endpoints instead of `redis` (`pubsub` and `streams` only): see `EndpointsBackplane`.
   * @default undefined (one Redis, at `redis`)
   */
  endpoints?: readonly EndpointConfig[];
  /** With `endpoints`: which endpoints each send and negotiate go to. @default new DefaultEndpointRouter() */
  router?: EndpointRouter;
  /** With `endpoints`: this instance's public base URL (see `EndpointsBackplaneOptions.selfUrl`). */
  selfUrl?: string;
}

const KINDS: readonly BackplaneKind[] = ['memory', 'pubsub', 'streams'];

/**
 * Builds the backplane `kind` names: `memory` (one process), `pubsub` (Redis PUB/SUB) or `streams`
 * (PUB/SUB plus the reliable lane), on the Redis `redis` points at, or over several Redis `endpoints`
 * (an `EndpointsBackplane` holding one such backplane per endpoint).
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
    if (options.endpoints !== undefined) {
      throw new RelayhubError('ERR_CONFIG', "The 'memory' backplane does not use Redis endpoints.", {
        remedy: "Drop the endpoints option, or use backplane: 'pubsub' or 'streams'.",
      });
    }
    return new MemoryBackplane();
  }
  if (options.endpoints !== undefined) return endpointsBackplane(kind, options);
  const merged = {
    ...redisOptions(options.redis),
    ...(options.channelPrefix !== undefined ? { channelPrefix: options.channelPrefix } : {}),
    ...(options.instanceId !== undefined ? { instanceId: options.instanceId } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  } as StreamsBackplaneOptions;
  return kind === 'pubsub' ? new PubSubBackplane(merged) : new StreamsBackplane(merged);
}

function endpointsBackplane(kind: 'pubsub' | 'streams', options: NamedBackplaneOptions): Backplane {
  if (options.redis !== undefined) {
    throw new RelayhubError('ERR_CONFIG', 'Give either redis or endpoints, not both.', {
      remedy: 'Put every Redis in endpoints: [{ name, redis: { url }, type }].',
    });
  }
  const { endpoints = [], router, selfUrl, channelPrefix, instanceId, logger } = options;
  return new EndpointsBackplane({
    kind,
    endpoints,
    ...(router ? { router } : {}),
    ...(selfUrl !== undefined ? { selfUrl } : {}),
    ...(channelPrefix !== undefined ? { channelPrefix } : {}),
    ...(instanceId !== undefined ? { instanceId } : {}),
    ...(logger ? { logger } : {}),
  });
}

function redisOptions(redis: RedisOption | undefined): Record<string, unknown> {
  if (redis === undefined) return {};
  if (typeof redis === 'string') return { redisUrl: redis };
  // note: `{ url }` also as redisUrl, which every backplane version reads; the object itself as `redis`.
  const url = (redis as { url?: unknown }).url;
  return { ...(typeof url === 'string' ? { redisUrl: url } : {}), redis };
}
