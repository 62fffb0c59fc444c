/**
 * Every Redis key and channel name relayhub uses is built here, from `channelPrefix`, so that two apps or
 * two environments sharing one Redis never hear each other. Names carry a `{hashtag}` so that what belongs
 * to one group, user, connection or instance lands in one Redis Cluster slot (sharded PUB/SUB, slot-local Lua scripts).
 */
export const DEFAULT_CHANNEL_PREFIX = 'relayhub';

export interface HubChannels {
  /**
   * Broadcasts to every connection of the hub (`all`, `allExcept`): every instance subscribes to all of
   * them; a sender always publishes on the same one (so its broadcasts keep their order). One channel
   * (`<prefix>:<hub>:all`) unless the hub was given several partitions (on a Cluster: one per slot
   * hashtag `{a:<n>}`, spread over the shards).
   */
  readonly all: readonly string[];
  group(name: string): string;
  user(userId: string): string;
  /** Sends to one connection, and requests (group add/remove, client results) to its owner. */
  connection(connectionId: string): string;
  /** Replies to the requests one instance made. */
  instance(instanceId: string): string;
}

/**
 * The PUB/SUB channels of one hub. Hub names are paths such as `/hubs/demo`. `broadcastPartitions` is how
 * many channels carry broadcasts (see {@link HubChannels.all}).
 */
export function hubChannels(prefix: string, hub: string, broadcastPartitions = 1): HubChannels {
  const base = `${prefix}:${hub}`;
  return {
    all:
      broadcastPartitions <= 1
        ? [`${base}:all`]
        : Array.from({ length: broadcastPartitions }, (_, p) => `${base}:{a:${p}}`),
    group: (name) => `${base}:{g:${name}}`,
    user: (userId) => `${base}:{u:${userId}}`,
    connection: (connectionId) => `${base}:{c:${connectionId}}`,
    instance: (instanceId) => `${base}:{i:${instanceId}}`,
  };
}

/** The reliable lane's keys of one user: all in the user's slot. */
export interface UserKeys {
  /** INCR counter: the user's last assigned offset (gapless, from 1). */
  readonly seq: string;
  /** Stream of the user's messages (fields o, m, t, a). */
  readonly inbox: string;
  /** `"<offset> <stream id>"` of the last message the user's client acknowledged. */
  readonly acked: string;
  /** Set of the instance ids holding a connection of the user. */
  readonly presence: string;
  /** `SET NX` marker of an idempotency key (an outbox id), holding `"<offset> <message id>"`. */
  dedup(key: string): string;
}

export interface ReliableKeys {
  user(userId: string): UserKeys;
  /** Stream of delivery wake-ups for one instance, read with XREADGROUP in group {@link CONSUMER_GROUP}. */
  deliveries(instanceId: string): string;
  /** Exists while the instance is alive (refreshed by its heartbeat, with a TTL). */
  alive(instanceId: string): string;
  /** What `deliveries()` and `alive()` start with, for the Lua script that routes to instances. */
  readonly instancePrefix: string;
  /** Set of every instance id that has used the lane (swept when their `alive` key is gone). */
  readonly instances: string;
  /** Stream of messages given up on (field r: the reason). */
  readonly deadLetters: string;
  /**
   * A random value the outbox worker sets once; when it is gone, Redis lost its memory and every relayed
   * but unacked outbox row must be relayed again.
   */
  readonly epoch: string;
}

/** The consumer group every instance reads its own delivery stream with. */
export const CONSUMER_GROUP = 'relayhub';

/** The reliable lane's keys of one hub. */
export function reliableKeys(prefix: string, hub: string): ReliableKeys {
  const base = `${prefix}:${hub}:rl`;
  const instancePrefix = `${base}:{i:`;
  return {
    user: (userId) => {
      const u = `${base}:{u:${userId}}`;
      return {
        seq: `${u}:seq`,
        inbox: `${u}:inbox`,
        acked: `${u}:acked`,
        presence: `${u}:presence`,
        dedup: (key) => `${u}:dedup:${key}`,
      };
    },
    deliveries: (instanceId) => `${instancePrefix}${instanceId}}:deliveries`,
    alive: (instanceId) => `${instancePrefix}${instanceId}}:alive`,
    instancePrefix,
    instances: `${base}:instances`,
    deadLetters: `${base}:dead`,
    epoch: `${base}:epoch`,
  };
}
