import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { describe } from '../backplane/pubsub/redis-connection.js';
import { StallProbe } from '../backplane/pubsub/stall-probe.js';
import { RelayhubError } from '../errors.js';
import { ShardedSubscriber } from './sharded-subscriber.js';
import { keySlot } from './slot.js';
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

/** Channels per UNSUBSCRIBE command when many go at once (a connection that leaves many groups). */
const UNSUBSCRIBE_BATCH = 1_000;

export interface PubSubBusOptions extends RedisOptions {
  /**
   * How often `health()` checks that Redis answers (a PING on each connection): a Redis that accepts
   * connections but answers nothing makes `health().status` (and `/healthz`) `degraded` once a PING has
   * waited this long.
   * @default 1_000
   */
  healthProbeIntervalMs?: number;
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
 * PUB/SUB on one node or on a Cluster, classic or sharded: the one place that knows which commands that
 * takes. One publishing connection; classic mode subscribes on one more, sharded mode on one per primary
 * (`ShardedSubscriber`). **At most once.** Subscribers that lose their subscriptions (a reconnect, a
 * failover, a slot migrated to another node: Redis then pushes `sunsubscribe`) subscribe again by
 * themselves and report each loss through `lost`.
 */
export class PubSubBus {
  readonly mode: PubSubMode;
  readonly target: RedisTarget;
  readonly #options: PubSubBusOptions;
  readonly #pub: RedisClient;
  /** Classic mode: the subscriber connection (one node, or any node of a Cluster). */
  readonly #sub: RedisClient | undefined;
  /** Sharded mode: one subscriber connection per primary, following the cluster's slot map. */
  readonly #sharded: ShardedSubscriber | undefined;
  /** Classic mode: the channels asked for in this event-loop turn, sent as one SUBSCRIBE at its end. */
  #subscribing: { channels: string[]; send: () => void; sent: Promise<unknown> } | undefined;
  readonly #events: PubSubBusEvents;
  readonly #log: Logger;
  readonly #probes: StallProbe[] = [];
  #connecting: Promise<void> | undefined;
  #closing = false;
  #wasReady = false;
  /** The subscriber is (or was last) ready: its next loss counts, once per outage. */
  #subscribed = false;

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
    this.#pub.on('error', (error: Error) => log.debug({ err: error }, 'redis error'));
    if (this.mode === 'sharded') {
      this.#sharded = new ShardedSubscriber(
        this.#pub as Cluster,
        role,
        options.connectTimeoutMs ?? 5_000,
        { message: (c, m) => events.message(c, m), lost: (reason) => events.lost(reason) },
        log,
      );
      return;
    }
    const sub = openClient(options, `${role}:sub`, { queueWhileOffline: true });
    this.#sub = sub;
    sub.on('message', (c: string, m: string) => events.message(c, m));
    sub.on('error', (error: Error) => log.debug({ err: error }, 'redis error'));
    sub.on('ready', () => this.#restored());
    sub.on('close', () => this.#lost('the subscriber connection closed'));
  }

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
          ...(this.#sub ? [connectClient(this.#sub, this.target, timeout)] : []),
        ]);
        this.#sharded?.start();
      } catch (error) {
        this.#pub.disconnect();
        this.#sub?.disconnect();
        throw error;
      }
      // note: sharded subscriber connections are not probed: the publisher's probe covers the cluster,
      // and their placement is checked every second.
      const interval = this.#options.healthProbeIntervalMs ?? 1_000;
      this.#probes.push(new StallProbe(this.#pub, interval));
      if (this.#sub) this.#probes.push(new StallProbe(this.#sub, interval));
    })();
    return this.#connecting;
  }

  /** A connection is up but Redis has not answered its PING in time. */
  get stalled(): boolean {
    return this.#probes.some((p) => p.stalled);
  }

  get ready(): boolean {
    return (
      this.#pub.status === 'ready' && (this.#sharded ? this.#sharded.ready : this.#sub?.status === 'ready')
    );
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
    if (this.#sharded) return this.#sharded.subscribe(channel);
    const sub = this.#sub as RedisClient;
    // note: while Redis is away, the subscription is queued and sent on reconnect instead of holding up
    // the connection that asked for it.
    const pending = this.#subscribeSoon(sub, channel);
    if (sub.status === 'ready') await pending;
    else pending.catch((error: unknown) => this.#log.warn({ err: error, channel }, 'subscribe failed'));
  }

  /**
   * Joins the subscriptions asked for in one event-loop turn (a burst of connections registering, each
   * following its own channel) into one SUBSCRIBE of up to {@link UNSUBSCRIBE_BATCH} channels, sent in
   * the turn's check phase: one command and one socket write instead of one per connection.
   */
  #subscribeSoon(sub: RedisClient, channel: string): Promise<unknown> {
    let batch = this.#subscribing;
    if (batch && batch.channels.length >= UNSUBSCRIBE_BATCH) {
      // note: a full batch goes now, so that at most one waits (and unsubscribe can send it first).
      batch.send();
      batch = undefined;
    }
    if (!batch) {
      const channels: string[] = [];
      let send!: () => void;
      const sent = new Promise((resolve, reject) => {
        let done = false;
        send = () => {
          if (done) return;
          done = true;
          if (this.#subscribing?.channels === channels) this.#subscribing = undefined;
          sub.subscribe(...channels).then(resolve, reject);
        };
      });
      batch = { channels, send, sent };
      this.#subscribing = batch;
      setImmediate(send);
    }
    batch.channels.push(channel);
    return batch.sent;
  }

  /** Unsubscribes from channels, in commands of up to {@link UNSUBSCRIBE_BATCH} channels. */
  async unsubscribe(channels: readonly string[]): Promise<void> {
    if (this.#sharded) {
      const sharded = this.#sharded;
      await Promise.all(channels.map((channel) => sharded.unsubscribe(channel)));
      return;
    }
    const sub = this.#sub as RedisClient;
    // note: a SUBSCRIBE still waiting for the end of the turn goes first, so that Redis sees the two in
    // the order they were asked for (a connection may follow and unfollow its channel in one turn).
    this.#subscribing?.send();
    const pending: Promise<unknown>[] = [];
    for (let at = 0; at < channels.length; at += UNSUBSCRIBE_BATCH) {
      pending.push(sub.unsubscribe(...channels.slice(at, at + UNSUBSCRIBE_BATCH)));
    }
    const done = Promise.all(pending);
    if (sub.status === 'ready') await done;
    else done.catch((error: unknown) => this.#log.debug({ err: error }, 'unsubscribe failed'));
  }

  /** Closes both connections. Idempotent. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const probe of this.#probes) probe.close();
    this.#sharded?.close();
    await Promise.allSettled([quitClient(this.#pub), ...(this.#sub ? [quitClient(this.#sub)] : [])]);
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
