/**
 * Every Redis key and channel name relayhub uses is built here, from `channelPrefix`, so that two apps or
 * two environments sharing one Redis never hear each other. Names carry a `{hashtag}` so that what belongs
 * to one group, user, connection or instance lands in one Redis Cluster slot (for sharded PUB/SUB later).
 */
export const DEFAULT_CHANNEL_PREFIX = 'relayhub';

export interface HubChannels {
  /** Broadcasts to every connection of the hub (`all`, `allExcept`). */
  readonly all: string;
  group(name: string): string;
  user(userId: string): string;
  /** Sends to one connection, and requests (group add/remove, client results) to its owner. */
  connection(connectionId: string): string;
  /** Replies to the requests one instance made. */
  instance(instanceId: string): string;
}

/** The PUB/SUB channels of one hub. Hub names are paths such as `/hubs/demo`. */
export function hubChannels(prefix: string, hub: string): HubChannels {
  const base = `${prefix}:${hub}`;
  return {
    all: `${base}:all`,
    group: (name) => `${base}:{g:${name}}`,
    user: (userId) => `${base}:{u:${userId}}`,
    connection: (connectionId) => `${base}:{c:${connectionId}}`,
    instance: (instanceId) => `${base}:{i:${instanceId}}`,
  };
}
