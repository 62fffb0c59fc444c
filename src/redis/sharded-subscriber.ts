import { type Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { keySlot } from './slot.js';

/** How often every channel's placement is checked against the cluster's slot map. */
export const RECONCILE_INTERVAL_MS = 1_000;
/** How soon a subscription that failed (e.g. MOVED during a migration) is tried again. */
const RETRY_SOON_MS = 100;

export interface ShardedSubscriberEvents {
  message(channel: string, message: string): void;
  /** Subscriptions were (or may have been) lost: what is published until they are back may be missed. */
  lost(reason: string): void;
}

/**
 * Sharded PUB/SUB subscriptions (SSUBSCRIBE) on a Redis Cluster: one connection per primary that owns a
 * subscribed channel's slot, each channel subscribed on the primary that owns it. It follows the cluster
 * by itself: when a slot migrates (the old owner pushes `sunsubscribe`), a primary fails over or goes away,
 * or an SSUBSCRIBE lands on a node that no longer owns the slot, the channel is subscribed again on the
 * owner in the current slot map, checked every {@link RECONCILE_INTERVAL_MS}; each loss is reported once.
 *
 * note: ioredis' own sharded subscribers re-subscribe after a topology change, but an SSUBSCRIBE that
 * races a slot migration fails silently there and is never tried again; this one keeps checking.
 */
export class ShardedSubscriber {
  /** Channel → the node (`host:port`) it is subscribed on, or undefined while it waits for one. */
  readonly #placed = new Map<string, string | undefined>();
  /** Channel → its slot, computed once (the check every second looks the owner up for each channel). */
  readonly #slots = new Map<string, number>();
  readonly #connections = new Map<string, Redis>();
  readonly #cluster: Cluster;
  readonly #events: ShardedSubscriberEvents;
  readonly #log: Logger;
  readonly #role: string;
  readonly #connectTimeoutMs: number;
  #timer: NodeJS.Timeout | undefined;
  #reconciling: Promise<void> | undefined;
  #closed = false;

  /** `cluster`: a connected Cluster whose slot map says who owns what (the publisher's). */
  constructor(
    cluster: Cluster,
    role: string,
    connectTimeoutMs: number,
    events: ShardedSubscriberEvents,
    log: Logger,
  ) {
    this.#cluster = cluster;
    this.#role = role;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#events = events;
    this.#log = log;
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.reconcile(), RECONCILE_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Every channel is subscribed on a live connection (none waits for a new owner). */
  get ready(): boolean {
    for (const [, node] of this.#placed)
      if (!node || this.#connections.get(node)?.status !== 'ready') return false;
    return this.#cluster.status === 'ready';
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#placed.has(channel)) return;
    this.#placed.set(channel, undefined);
    this.#slots.set(channel, keySlot(channel));
    await this.#place(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    const node = this.#placed.get(channel);
    this.#placed.delete(channel);
    this.#slots.delete(channel);
    if (node)
      await this.#connections
        .get(node)
        ?.sunsubscribe(channel)
        .catch(() => undefined);
  }

  /** Subscribes `channel` on the owner of its slot; on failure it stays unplaced for the next round. */
  async #place(channel: string): Promise<void> {
    const owner = this.#ownerOf(channel);
    if (!owner) return;
    const previous = this.#placed.get(channel);
    try {
      const connection = this.#connection(owner);
      await connection.ssubscribe(channel);
      if (this.#closed) return;
      // note: unsubscribed meanwhile: take back what was just subscribed.
      if (!this.#placed.has(channel)) {
        await connection.sunsubscribe(channel).catch(() => undefined);
        return;
      }
      this.#placed.set(channel, owner);
      if (previous && previous !== owner) {
        this.#connections
          .get(previous)
          ?.sunsubscribe(channel)
          .catch(() => undefined);
      }
    } catch (error) {
      this.#log.debug({ err: error, channel, owner }, 'ssubscribe failed; trying again at the next check');
      if (this.#placed.has(channel)) this.#placed.set(channel, undefined);
      // note: the slot map is being updated (a migration in progress): look again soon, not in a second.
      this.#cluster.refreshSlotsCache(() => this.#soon());
      if (previous) this.#events.lost(`could not subscribe ${channel} again`);
    }
  }

  #ownerOf(channel: string): string | undefined {
    return this.#cluster.slots[this.#slots.get(channel) ?? keySlot(channel)]?.[0];
  }

  #connection(node: string): Redis {
    let redis = this.#connections.get(node);
    if (redis) return redis;
    const at = node.lastIndexOf(':');
    redis = new Redis({
      host: node.slice(0, at),
      port: Number(node.slice(at + 1)),
      connectionName: `${this.#role}:ssub`,
      connectTimeout: this.#connectTimeoutMs,
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      // note: a lost connection is replaced, not reconnected: its node may not own those slots any more.
      retryStrategy: () => null,
      autoResubscribe: false,
    });
    const self = redis;
    redis.on('smessage', (channel: string, message: string) => {
      if (this.#placed.get(channel) === node) this.#events.message(channel, message);
    });
    redis.on('error', (error: Error) => this.#log.debug({ err: error, node }, 'sharded subscriber error'));
    // note: an unsolicited `sunsubscribe` push: a slot of this node moved away (ioredis says 'moved').
    redis.on('moved', () => this.#unplace(node, self, 'a slot moved to another node'));
    redis.on('end', () => this.#unplace(node, self, 'a subscriber connection closed'));
    this.#connections.set(node, redis);
    return redis;
  }

  /** Marks the channels of a node for re-subscription and checks at once. */
  #unplace(node: string, redis: Redis, reason: string): void {
    if (this.#closed) return;
    if (redis.status === 'end' && this.#connections.get(node) === redis) this.#connections.delete(node);
    let lost = false;
    for (const [channel, at] of this.#placed) {
      if (at !== node) continue;
      // note: after a push only the moved slot's channels are gone, but which ones is not said:
      // subscribing the others again on the same node is harmless (SSUBSCRIBE is idempotent).
      this.#placed.set(channel, undefined);
      lost = true;
    }
    if (!lost) return;
    this.#events.lost(reason);
    this.#cluster.refreshSlotsCache(() => void this.reconcile());
  }

  #retry: NodeJS.Timeout | undefined;

  /** One reconcile shortly (debounced), after a failed subscription. */
  #soon(): void {
    if (this.#retry || this.#closed) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      void this.reconcile();
    }, RETRY_SOON_MS);
    this.#retry.unref();
  }

  /** Subscribes every unplaced channel, and every channel whose slot has a new owner, on that owner. */
  reconcile(): Promise<void> {
    this.#reconciling ??= (async () => {
      try {
        if (this.#closed || this.#cluster.status !== 'ready') return;
        const moved: string[] = [];
        const pending: Promise<void>[] = [];
        for (const [channel, at] of this.#placed) {
          const owner = this.#ownerOf(channel);
          if (at && owner === at && this.#connections.get(at)?.status !== 'end') continue;
          if (at) moved.push(channel);
          pending.push(this.#place(channel));
        }
        // note: a slot that changed owner without a push (a failover): what went to the new owner meanwhile
        // was missed.
        if (moved.length > 0) this.#events.lost(`${moved.length} channel(s) moved to another node`);
        await Promise.all(pending);
      } finally {
        this.#reconciling = undefined;
      }
    })();
    return this.#reconciling;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#retry);
    for (const redis of this.#connections.values()) redis.disconnect();
    this.#connections.clear();
  }
}
