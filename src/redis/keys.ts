import { RelayhubError } from '../errors.js';

/**
 * Every Redis key and channel name relayhub uses is built here, from `channelPrefix`, so that two apps or
 * two environments sharing one Redis never hear each other. Names carry a `{hashtag}` so that what belongs
 * to one group, user, connection or instance lands in one Redis Cluster slot (sharded PUB/SUB, slot-local Lua scripts).
 */
export const DEFAULT_CHANNEL_PREFIX = 'relayhub';

/**
 * User ids become key parts inside a `{hashtag}`: a brace would end the hashtag early (another slot) and
 * lets one id spell another user's keys (the id `a}:acked` makes `{u:a}:acked…`, in user `a`'s slot), and
 * whitespace has no place in a key. The one rule for every sender: hub.reliable, ReliableProducer,
 * the outbox worker and enqueue.
 */
export const USER_ID = /^[^{}\s]{1,256}$/;

/** A channel prefix: no braces (hashtags) or whitespace, 1-128 characters. */
const CHANNEL_PREFIX = /^[^{}\s]{1,128}$/;

/** Throws `ERR_INVALID_MESSAGE` unless `userId` follows {@link USER_ID}. */
export function validateUserId(userId: unknown): string {
  if (typeof userId === 'string' && USER_ID.test(userId)) return userId;
  throw new RelayhubError(
    'ERR_INVALID_MESSAGE',
    `User id ${describeValue(userId)} is not 1-256 characters without braces or whitespace.`,
    { remedy: 'Send to the id your authenticator gives the user (the JWT sub), without { } or spaces.' },
  );
}

/** Throws `ERR_CONFIG` unless `prefix` is 1-128 characters without braces or whitespace. */
export function validateChannelPrefix(prefix: unknown): string {
  if (typeof prefix === 'string' && CHANNEL_PREFIX.test(prefix)) return prefix;
  throw new RelayhubError(
    'ERR_CONFIG',
    `Option 'channelPrefix' must be 1-128 characters without braces or whitespace, got ${describeValue(prefix)}.`,
    { remedy: "Use a name such as 'myapp' or 'myapp:prod'." },
  );
}

/**
 * Group names become part of a `{hashtag}` too: a brace would split a group's channel from its slot
 * (Redis Cluster). Returns the reason a name is refused, or undefined.
 */
export function groupNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'Group names must be non-empty strings.';
  if (/[{}]/.test(name)) return "Group names may not contain '{' or '}'.";
  return undefined;
}

const describeValue = (value: unknown): string =>
  typeof value === 'string' ? `'${value.length > 64 ? `${value.slice(0, 64)}…` : value}'` : String(value);

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
  validateChannelPrefix(prefix);
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
  /** Sorted set of the idempotency keys sent to the user (member: the key, score: its offset). */
  readonly sent: string;
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
  validateChannelPrefix(prefix);
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
        sent: `${u}:sent`,
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
