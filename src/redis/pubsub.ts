import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { describe } from '../backplane/pubsub/redis-connection.js';
import { RelayhubError } from '../errors.js';
import {
  connectClient,
  describeTarget,
  isClusterTarget,
  openClient,
  quitClient,
  type RedisClient,
  type RedisOptions,
  type RedisTarget,
  targetOf,
} from './connection.js';

/**
 * `classic`: PUBLISH / SUBSCRIBE (a standalone Redis; on a Cluster every message is copied to every node).
 * `sharded`: SPUBLISH / SSUBSCRIBE (Redis 7 Cluster): a message travels only within the shard that owns
 * its channel's slot, so PUB/SUB throughput grows with the shards.
 */
export type PubSubMode = 'classic' | 'sharded';

export interface PubSubBusOptions extends RedisOptions {
  /**
   * How channels travel. Only a Cluster can be `sharded`.
   * @default 'sharded' on a Cluster, 'classic' on one node
   */
  pubsubMode?: PubSubMode;
}

export interface PubSubBusEvents {
  message(channel: string, message: string): void;
  /** Subscriptions were (or may have been) lost: what is published until they are back may be missed. */
  lost(reason: string): void;
  /** Subscriptions are in place again. */
  restored(): void;
}

/**
 * PUB/SUB over one publishing and one subscribing connection, on one node or on a Cluster, classic or
 * sharded: the one place that knows which commands that takes. **At most once.** A subscriber that loses
 * its subscriptions (a reconnect, a failover, a slot migrated to another node: Redis then pushes
 * `sunsubscribe`) re-subscribes by itself and reports each loss through `lost`.
 */
export class PubSubBus {
  readonly mode: PubSubMode;
  readonly target: RedisTarget;
  readonly #options: PubSubBusOptions;
  readonly #pub: RedisClient;
  readonly #sub: RedisClient;
  readonly #events: PubSubBusEvents;
  readonly #log: Logger;
  #connecting: Promise<void> | undefined;
  #closing = false;
  #wasReady = false;
  /** The subscriber is (or was last) ready: its next loss counts, once per outage. */
  #subscribed = false;
  #channels = 0;

  constructor(options: PubSubBusOptions, role: string, events: PubSubBusEvents, log: Logger) {
    this.#options = options;
    this.target = targetOf(options);
    const cluster = isClusterTarget(this.target);
    this.mode = options.pubsubMode ?? (cluster ? 'sharded' : 'classic');
    if (this.mode === 'sharded' && !cluster) {
      throw new RelayhubError('ERR_CONFIG', "pubsubMode 'sharded' needs a Redis Cluster.", {
        remedy: "Pass redis: { cluster: [...] }, or leave pubsubMode unset ('classic' on one node).",
      });
    }
    this.#events = events;
    this.#log = log;
    this.#pub = openClient(options, `${role}:pub`, { autoPipelining: true });
    this.#sub = openClient(options, `${role}:sub`, {
      queueWhileOffline: true,
      sharded: this.mode === 'sharded',
    });
    const sub = this.#sub as Redis;
    if (this.mode === 'sharded') sub.on('smessage', (c: string, m: string) => events.message(c, m));
    else sub.on('message', (c: string, m: string) => events.message(c, m));
    for (const client of [this.#pub, this.#sub]) {
      client.on('error', (error: Error) => log.debug({ err: error }, 'redis error'));
    }
    sub.on('ready', () => this.#restored());
    sub.on('close', () => this.#lost('the subscriber connection closed'));
    if (this.mode === 'sharded') {
      // note: a sharded subscriber is one connection per primary; ioredis re-subscribes after a failover,
      // a node loss or a slot migration and then says `subscribersReady`. Each such round may have missed
      // messages on the channels it moved.
      const cluster = this.#sub as Cluster;
      cluster.on('-node', () => this.#lost('a node holding subscriptions went away'));
      cluster.on('subscribersReady', () => {
        if (this.#subscribedViaGroup) {
          if (this.#channels > 0) this.#lost('subscriptions moved to other nodes', true);
          this.#restored();
        }
        this.#subscribedViaGroup = true;
      });
    }
  }

  #subscribedViaGroup = false;

  #lost(reason: string, always = false): void {
    // note: 'close' also fires on every failed reconnect attempt; only the first one loses anything.
    if (this.#closing || (!always && !this.#subscribed)) return;
    this.#subscribed = false;
    this.#events.lost(reason);
  }

  #restored(): void {
    if (this.#wasReady && !this.#subscribed) this.#events.restored();
    this.#wasReady = true;
    this.#subscribed = true;
  }

  connect(): Promise<void> {
    this.#connecting ??= (async () => {
      const timeout = this.#options.connectTimeoutMs ?? 5_000;
      try {
        await Promise.all([
          connectClient(this.#pub, this.target, timeout),
          connectClient(this.#sub, this.target, timeout),
        ]);
      } catch (error) {
        this.#pub.disconnect();
        this.#sub.disconnect();
        throw error;
      }
    })();
    return this.#connecting;
  }

  get ready(): boolean {
    return this.#pub.status === 'ready' && this.#sub.status === 'ready';
  }

  /**
   * Publishes and resolves with the subscribers that got it: on a Cluster in sharded mode, those of the
   * shard (all of them); `-1` when it cannot tell (classic PUBLISH on a Cluster counts one node only).
   */
  async publish(channel: string, message: string): Promise<number> {
    try {
      if (this.mode === 'sharded') return Number(await this.#pub.spublish(channel, message));
      const count = await this.#pub.publish(channel, message);
      return this.#pub.isCluster ? -1 : count;
    } catch (error) {
      throw new RelayhubError(
        'ERR_BACKPLANE_UNAVAILABLE',
        `Redis at ${describeTarget(this.target)} is unreachable (${describe(error)}).`,
        {
          remedy: 'The send was not delivered to other instances; retry once health().status is ready.',
          cause: error,
        },
      );
    }
  }

  /** Subscribers of a channel (0: nobody holds what it addresses; -1: unknown, classic on a Cluster). */
  async receivers(channel: string): Promise<number> {
    if (this.mode === 'sharded') {
      // note: SHARDNUMSUB has no key for ioredis to route by; ask the primary that owns the channel's slot.
      const node = primaryFor(this.#pub as Cluster, channel);
      const reply = (await node.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
      return Number(reply[1]);
    }
    if (this.#pub.isCluster) return -1;
    const reply = (await this.#pub.pubsub('NUMSUB', channel)) as [string, number];
    return Number(reply[1]);
  }

  async subscribe(channel: string): Promise<void> {
    this.#channels++;
    // note: while Redis is away, the subscription is queued and sent on reconnect instead of holding up
    // the connection that asked for it.
    const pending = this.mode === 'sharded' ? this.#sub.ssubscribe(channel) : this.#sub.subscribe(channel);
    if (this.#sub.status === 'ready') await pending;
    else pending.catch((error: unknown) => this.#log.warn({ err: error, channel }, 'subscribe failed'));
  }

  async unsubscribe(channel: string): Promise<void> {
    this.#channels = Math.max(0, this.#channels - 1);
    const pending =
      this.mode === 'sharded' ? this.#sub.sunsubscribe(channel) : this.#sub.unsubscribe(channel);
    if (this.#sub.status === 'ready') await pending;
    else pending.catch((error: unknown) => this.#log.debug({ err: error, channel }, 'unsubscribe failed'));
  }

  /** Closes both connections. Idempotent. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.allSettled([quitClient(this.#pub), quitClient(this.#sub)]);
  }
}

/** The connection to the primary that serves `key`'s slot, from the cluster's current slot map. */
export function primaryFor(cluster: Cluster, key: string): Redis {
  const slot = keySlot(key);
  const nodeKey = cluster.slots[slot]?.[0];
  const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === nodeKey);
  if (!node) {
    throw new RelayhubError('ERR_BACKPLANE_UNAVAILABLE', `No Redis Cluster node serves slot ${slot} now.`, {
      remedy: 'Retry once the cluster has finished its failover or resharding.',
    });
  }
  return node;
}

// note: CRC16 (XMODEM) of the hashtag, as Redis Cluster computes slots; 16384 slots.
const CRC_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The Redis Cluster slot of a key or channel: the CRC16 of its `{hashtag}` (or of all of it) mod 16384. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(key))
    crc = ((crc << 8) & 0xffff) ^ (CRC_TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc % 16_384;
}
