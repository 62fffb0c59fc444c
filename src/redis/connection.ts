import { Cluster, type ClusterNode, type ClusterOptions, Redis } from 'ioredis';
import {
  connectRedis,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_REDIS_URL,
  openRedis,
  type RedisConnectionOptions,
  retryDelay,
} from '../backplane/pubsub/redis-connection.js';
import { RelayhubError } from '../errors.js';

/**
 * Where Redis is: one node (`{ url }`), a Redis Cluster given by seed nodes (`{ cluster: [...] }`, e.g.
 * `['redis://127.0.0.1:7000', 'redis://127.0.0.1:7001']`), or an ioredis `Cluster` the app already has
 * (relayhub opens its own connections with that cluster's nodes and options, and never closes the app's).
 */
export type RedisTarget = { url: string } | { cluster: readonly (string | ClusterNode)[] } | Cluster;

/** A connection relayhub opened for one role: a standalone `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/** The connection options every Redis-backed piece of relayhub takes. */
export interface RedisOptions extends RedisConnectionOptions {
  /**
   * Where Redis is; takes precedence over `redisUrl`.
   * @default { url: redisUrl }
   */
  redis?: RedisTarget;
}

/** What a role needs from its connection. */
export interface RoleFlags {
  /** Queue commands while disconnected (only subscribers, so that their subscriptions are restored). */
  queueWhileOffline?: boolean;
  /** Batch the commands of one event-loop turn (per node on a Cluster). */
  autoPipelining?: boolean;
  /**
   * The role waits by design (a subscriber, a blocking reader): no command timeout. Else commands fail
   * after `commandTimeoutMs`.
   * @default queueWhileOffline
   */
  waits?: boolean;
}

export function isClusterTarget(target: RedisTarget | undefined): boolean {
  return target instanceof Cluster || (target !== undefined && 'cluster' in target);
}

/** The target of a set of options: `redis`, else `redisUrl`, else the default URL. */
export function targetOf(options: RedisOptions): RedisTarget {
  return options.redis ?? { url: options.redisUrl ?? DEFAULT_REDIS_URL };
}

/** One line naming where Redis is, for errors and logs. */
export function describeTarget(target: RedisTarget): string {
  if (target instanceof Cluster)
    return `${nodeList(target.nodes('master').map((n) => `${n.options.host}:${n.options.port}`))} (Cluster)`;
  if ('cluster' in target) return `${nodeList(target.cluster)} (Cluster)`;
  return target.url;
}

function nodeList(nodes: readonly (string | number | ClusterNode)[]): string {
  return nodes
    .map((n) => (typeof n === 'object' ? `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}` : String(n)))
    .join(',');
}

/**
 * Opens a connection for one role, on one node or on a Cluster, with the same failure policy everywhere:
 * commands fail at once while disconnected (no offline queue, no retry of a command caught by a
 * disconnect: at most once) unless `queueWhileOffline`; reconnects back off with jitter.
 */
export function openClient(options: RedisOptions, role: string, flags: RoleFlags = {}): RedisClient {
  const target = targetOf(options);
  if (!isClusterTarget(target)) {
    return openRedis({ ...options, redisUrl: (target as { url: string }).url }, role, flags);
  }
  const maxDelay = options.maxRetryDelayMs ?? 2_000;
  const queue = flags.queueWhileOffline ?? false;
  const waits = flags.waits ?? queue;
  const clusterOptions: ClusterOptions = {
    lazyConnect: true,
    enableOfflineQueue: queue,
    enableAutoPipelining: flags.autoPipelining ?? false,
    scaleReads: 'master',
    // note: a failover or a slot move answers TRYAGAIN / CLUSTERDOWN for a moment: wait a little before
    // following it, instead of hammering the node that is going away.
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    clusterRetryStrategy: (attempt) => retryDelay(attempt, maxDelay),
    redisOptions: {
      connectionName: role,
      connectTimeout: options.connectTimeoutMs ?? 5_000,
      maxRetriesPerRequest: queue ? null : 0,
      autoResubscribe: true,
      // note: the same stall rule as on one node (see `commandTimeoutMs`).
      ...(waits ? {} : { commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS }),
    },
  };
  if (target instanceof Cluster) return target.duplicate(undefined, { ...target.options, ...clusterOptions });
  const nodes = (target as { cluster: readonly (string | ClusterNode)[] }).cluster.map(seedNode);
  if (nodes.length === 0) {
    throw new RelayhubError('ERR_CONFIG', 'The Redis Cluster needs at least one seed node.', {
      remedy: 'Pass redis: { cluster: ["redis://host:port", ...] } (or REDIS_URL with --redis-cluster).',
    });
  }
  return new Cluster(nodes, clusterOptions);
}

/** `redis://host:port` (or `host:port`) as an ioredis cluster node. */
function seedNode(node: string | ClusterNode): ClusterNode {
  if (typeof node !== 'string') return node;
  const url = new URL(node.includes('://') ? node : `redis://${node}`);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 6379) };
}

/** Connects, turning a failure into one clear sentence that says where Redis was expected. */
export function connectClient(client: RedisClient, target: RedisTarget, timeoutMs: number): Promise<void> {
  // note: a Cluster connects with the same call; the standalone helper owns the timeout and the sentence.
  return connectRedis(client as Redis, describeTarget(target), timeoutMs);
}

/** QUITs a connection (or drops it when it is not ready). Never throws. */
export async function quitClient(client: RedisClient): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  client.disconnect();
}

/**
 * Splits a comma-separated `REDIS_URL` into seed nodes when `cluster` is set (the CLI's `--redis-cluster`),
 * else returns it as one URL.
 */
export function targetFromUrl(url: string, cluster: boolean): RedisTarget {
  if (!cluster) return { url };
  return {
    cluster: url
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  };
}
