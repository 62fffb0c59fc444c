import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { type Logger, pino } from 'pino';
import { HubError, RelayhubError } from '../../errors.js';
import type {
  Audience,
  Backplane,
  BackplaneHealth,
  BackplaneSample,
  HubChannel,
  Interest,
  LocalHub,
} from '../backplane.js';
import { redactUrl } from '../../redact.js';
import { DEFAULT_CHANNEL_PREFIX, type HubChannels, hubChannels, validateChannelPrefix } from '../keys.js';
import { connectionNotFound } from '../memory/memory-backplane.js';
import { decode, encode, type Header } from './envelope.js';
import {
  connectRedis,
  DEFAULT_REDIS_URL,
  describe,
  openRedis,
  type RedisConnectionOptions,
} from './redis-connection.js';
import { StallProbe } from './stall-probe.js';

export interface PubSubBackplaneOptions extends RedisConnectionOptions {
  /**
   * Prefix of every channel: instances hear each other only when they share it.
   * @default 'relayhub'
   */
  channelPrefix?: string;
  /**
   * This instance's id, unique among the instances sharing the prefix.
   * @default a random id
   */
  instanceId?: string;
  /**
   * How long a group add/remove of a connection on another instance waits for that instance's ack.
   * @default 5_000
   */
  requestTimeoutMs?: number;
  /**
   * How often `health()` checks that Redis answers (a PING on each connection): a Redis that accepts
   * connections but answers nothing makes `health().status` (and `/healthz`) `degraded` once a PING has
   * waited this long.
   * @default 1_000
   */
  healthProbeIntervalMs?: number;
  /** @default a silent logger */
  logger?: Logger;
}

interface Pending {
  resolve(body: string): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
  /** The connection's channel: when nobody listens on it any more, its instance has gone away. */
  channel: string;
}

const LIVENESS_CHECK_MS = 1_000;
/** Channels per UNSUBSCRIBE command when many go at once (a connection that leaves many groups). */
const UNSUBSCRIBE_BATCH = 1_000;

/**
 * Redis PUB/SUB fan-out, like SignalR's Redis backplane: **at most once**. One connection publishes
 * (auto-pipelined, so that sends issued in one event-loop turn share a round trip), one subscribes. Each
 * instance subscribes to the channels of what it holds: its connections, its users, the groups it has
 * members of, `all`, and its own reply channel. While Redis is unreachable, sends fail at once with
 * `ERR_BACKPLANE_UNAVAILABLE`; a lost subscription is logged and counted in `health().possibleGaps`.
 */
export class PubSubBackplane implements Backplane {
  readonly kind = 'pubsub' as const;
  readonly instanceId: string;
  readonly #prefix: string;
  readonly #url: string;
  readonly #options: PubSubBackplaneOptions;
  readonly #log: Logger;
  readonly #pub: Redis;
  readonly #sub: Redis;
  /** Channel → the handler of messages arriving on it. */
  readonly #routes = new Map<string, (header: Header, body: string) => void>();
  readonly #channels = new Set<PubSubChannel>();
  readonly #probes: StallProbe[] = [];
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #wasReady = false;
  /** The subscriber is (or was last) ready: its next close loses the subscriptions, once per outage. */
  #subscribed = false;
  #possibleGaps = 0;
  #failedSends = 0;

  constructor(options: PubSubBackplaneOptions = {}) {
    this.#options = options;
    this.#prefix = validateChannelPrefix(options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX);
    this.#url = options.redisUrl ?? DEFAULT_REDIS_URL;
    this.instanceId = options.instanceId ?? randomBytes(6).toString('hex');
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({
      backplane: 'pubsub',
      instance: this.instanceId,
    });
    this.#pub = openRedis(options, `relayhub:${this.instanceId}:pub`, { autoPipelining: true });
    this.#sub = openRedis(options, `relayhub:${this.instanceId}:sub`, { queueWhileOffline: true });
    this.#sub.on('message', (channel: string, message: string) => this.#onMessage(channel, message));
    for (const redis of [this.#pub, this.#sub]) {
      redis.on('error', (error: Error) => this.#log.debug({ err: error }, 'redis error'));
    }
    this.#sub.on('ready', () => {
      if (this.#wasReady) this.#log.warn('subscriptions restored');
      this.#wasReady = true;
      this.#subscribed = true;
    });
    this.#sub.on('close', () => {
      // note: 'close' also fires on every failed reconnect attempt; only the first one loses anything.
      if (!this.#subscribed || this.#closing) return;
      this.#subscribed = false;
      this.#possibleGaps++;
      this.#log.warn('lost the Redis subscription: messages published until it is restored are missed');
    });
  }

  async open(hub: string, local: LocalHub): Promise<HubChannel> {
    await this.#connect();
    const channel = new PubSubChannel(this, hubChannels(this.#prefix, hub), local, this.#log.child({ hub }));
    await channel.start();
    this.#channels.add(channel);
    return channel;
  }

  #connect(): Promise<void> {
    this.#connecting ??= (async () => {
      const timeout = this.#options.connectTimeoutMs ?? 5_000;
      try {
        await Promise.all([
          connectRedis(this.#pub, this.#url, timeout),
          connectRedis(this.#sub, this.#url, timeout),
        ]);
      } catch (error) {
        this.#pub.disconnect();
        this.#sub.disconnect();
        throw error;
      }
      const interval = this.#options.healthProbeIntervalMs ?? 1_000;
      this.#probes.push(new StallProbe(this.#pub, interval), new StallProbe(this.#sub, interval));
    })();
    return this.#connecting;
  }

  // ---- mechanics shared by the hub channels: one thin function per Redis command ----

  async publish(channel: string, message: string): Promise<number> {
    try {
      return await this.#pub.publish(channel, message);
    } catch (error) {
      this.#failedSends++;
      throw new RelayhubError(
        'ERR_BACKPLANE_UNAVAILABLE',
        `Redis at ${redactUrl(this.#url)} is unreachable (${describe(error)}).`,
        {
          remedy: 'The send was not delivered to other instances; retry once health().status is ready.',
          cause: error,
        },
      );
    }
  }

  /** Subscribers of a channel (0: nobody holds what it addresses). */
  async subscribers(channel: string): Promise<number> {
    const reply = (await this.#pub.pubsub('NUMSUB', channel)) as [string, number];
    return Number(reply[1]);
  }

  async subscribe(channel: string, route: (header: Header, body: string) => void): Promise<void> {
    this.#routes.set(channel, route);
    // note: while Redis is away, the subscription is queued and sent on reconnect instead of holding
    // up the connection that asked for it.
    const pending = this.#sub.subscribe(channel);
    if (this.#sub.status === 'ready') await pending;
    else pending.catch((error: unknown) => this.#log.warn({ err: error, channel }, 'subscribe failed'));
  }

  /** Unsubscribes from one or many channels, in commands of up to {@link UNSUBSCRIBE_BATCH} channels. */
  async unsubscribe(channels: string | readonly string[]): Promise<void> {
    const all = typeof channels === 'string' ? [channels] : channels;
    for (const channel of all) this.#routes.delete(channel);
    const pending: Promise<unknown>[] = [];
    for (let at = 0; at < all.length; at += UNSUBSCRIBE_BATCH) {
      pending.push(this.#sub.unsubscribe(...all.slice(at, at + UNSUBSCRIBE_BATCH)));
    }
    const done = Promise.all(pending);
    if (this.#sub.status === 'ready') await done;
    else done.catch((error: unknown) => this.#log.debug({ err: error }, 'unsubscribe failed'));
  }

  #onMessage(channel: string, message: string): void {
    const route = this.#routes.get(channel);
    const decoded = decode(message);
    if (!route || !decoded) return;
    try {
      route(decoded.header, decoded.body);
    } catch (error) {
      this.#log.error({ err: error, channel }, 'failed to handle a backplane message');
    }
  }

  forget(channel: PubSubChannel): void {
    this.#channels.delete(channel);
  }

  health(): BackplaneHealth {
    const status = this.#closing
      ? 'down'
      : this.#pub.status === 'ready' && this.#sub.status === 'ready' && !this.#probes.some((p) => p.stalled)
        ? 'ready'
        : 'degraded';
    return { status, possibleGaps: this.#possibleGaps, failedSends: this.#failedSends };
  }

  async sample(hubs: readonly string[]): Promise<BackplaneSample> {
    const up = this.health().status === 'ready';
    const channelSubscribers: Record<string, number> = {};
    if (up) {
      // note: one NUMSUB per hub, sent together (auto-pipelining)
      const counts = await Promise.all(
        hubs.map((hub) => this.subscribers(hubChannels(this.#prefix, hub).all)),
      );
      hubs.forEach((hub, i) => {
        channelSubscribers[hub] = counts[i] ?? 0;
      });
    }
    return {
      endpoints: [{ endpoint: redactUrl(this.#url), up }],
      subscriptions: this.#routes.size,
      channelSubscribers,
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const probe of this.#probes) probe.close();
      await Promise.allSettled([...this.#channels].map((c) => c.close()));
      await Promise.allSettled([quit(this.#pub), quit(this.#sub)]);
    })();
    return this.#closing;
  }
}

async function quit(redis: Redis): Promise<void> {
  if (redis.status === 'ready') {
    try {
      await redis.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  redis.disconnect();
}

/** One hub on the PUB/SUB backplane: routing policy (which channel, who delivers) over the mechanics above. */
class PubSubChannel implements HubChannel {
  readonly #nextId = { value: 0 };
  readonly #pending = new Map<number, Pending>();
  readonly #self: string;
  #liveness: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly backplane: PubSubBackplane,
    private readonly names: HubChannels,
    private readonly local: LocalHub,
    private readonly log: Logger,
  ) {
    this.#self = backplane.instanceId;
  }

  async start(): Promise<void> {
    await Promise.all([
      this.backplane.subscribe(this.names.all, (h, body) => this.#onSend(h, body, { kind: 'all' })),
      this.backplane.subscribe(this.names.instance(this.#self), (h, body) => this.#onReply(h, body)),
    ]);
  }

  // ---- following what this instance holds ----

  follow(kind: Interest, name: string): Promise<void> {
    if (this.#closed) return Promise.resolve();
    switch (kind) {
      case 'connection':
        return this.backplane.subscribe(this.names.connection(name), (h, body) =>
          this.#onConnectionMessage(name, h, body),
        );
      case 'user':
        return this.backplane.subscribe(this.names.user(name), (h, body) =>
          this.#onSend(h, body, { kind: 'users', ids: [name] }),
        );
      case 'group':
        return this.backplane.subscribe(this.names.group(name), (h, body) =>
          this.#onGroupSend(name, h, body),
        );
    }
  }

  unfollow(kind: Interest, name: string): Promise<void> {
    return this.unfollowMany([[kind, name]]);
  }

  unfollowMany(interests: readonly (readonly [Interest, string])[]): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.backplane.unsubscribe(interests.map(([kind, name]) => this.#channelOf(kind, name)));
  }

  #channelOf(kind: Interest, name: string): string {
    return kind === 'connection'
      ? this.names.connection(name)
      : kind === 'user'
        ? this.names.user(name)
        : this.names.group(name);
  }

  // ---- sends ----

  async publish(audience: Audience, frame: string): Promise<void> {
    if (this.#closed) throw closedError();
    // note: local recipients first and without a round trip; other instances skip what they published.
    this.local.deliver(audience, frame);
    const header = (extra: Partial<Extract<Header, { k: 's' }>> = {}): Header => ({
      k: 's',
      o: this.#self,
      ...extra,
    });
    switch (audience.kind) {
      case 'all':
        await this.backplane.publish(this.names.all, encode(header(except(audience.except)), frame));
        return;
      case 'connections':
        await Promise.all(
          unique(audience.ids).map((id) =>
            this.backplane.publish(this.names.connection(id), encode(header(), frame)),
          ),
        );
        return;
      case 'users':
        await Promise.all(
          unique(audience.ids).map((id) =>
            this.backplane.publish(this.names.user(id), encode(header(), frame)),
          ),
        );
        return;
      case 'groups': {
        const names = unique(audience.names);
        const message = encode(
          header({ ...except(audience.except), ...(names.length > 1 ? { gs: names } : {}) }),
          frame,
        );
        await Promise.all(names.map((name) => this.backplane.publish(this.names.group(name), message)));
        return;
      }
    }
  }

  #onSend(header: Header, frame: string, audience: Audience): void {
    if (header.k !== 's' || header.o === this.#self) return;
    const withExcept: Audience =
      audience.kind === 'all' && header.x ? { kind: 'all', except: header.x } : audience;
    this.local.deliver(withExcept, frame);
  }

  #onGroupSend(group: string, header: Header, frame: string): void {
    if (header.k !== 's' || header.o === this.#self) return;
    // note: a multi-group send arrives once per group; a connection in several of them takes it only from
    // the first group it is in (in the send's order), so it receives it once.
    const earlier = header.gs ? header.gs.slice(0, header.gs.indexOf(group)) : [];
    this.local.deliver({ kind: 'groups', names: [group], except: header.x ?? [], notIn: earlier }, frame);
  }

  // ---- requests to the instance holding a connection ----

  async addToGroup(connectionId: string, group: string): Promise<void> {
    if (await this.local.addToGroup(connectionId, group)) return;
    await this.#request(connectionId, { k: 'ga', c: connectionId, g: group }, '');
  }

  async removeFromGroup(connectionId: string, group: string): Promise<void> {
    if (await this.local.removeFromGroup(connectionId, group)) return;
    await this.#request(connectionId, { k: 'gr', c: connectionId, g: group }, '');
  }

  async invokeClient(
    connectionId: string,
    target: string,
    args: unknown[],
    timeoutMs: number,
  ): Promise<unknown> {
    const local = this.local.invokeLocal(connectionId, target, args, timeoutMs);
    if (local) return local;
    const body = await this.#request(
      connectionId,
      { k: 'inv', c: connectionId, t: target, ms: timeoutMs },
      JSON.stringify(args),
      timeoutMs + 1_000,
    );
    return body === '' ? undefined : JSON.parse(body);
  }

  async #request(
    connectionId: string,
    request: { k: 'ga' | 'gr'; c: string; g: string } | { k: 'inv'; c: string; t: string; ms: number },
    body: string,
    timeoutMs = 5_000,
  ): Promise<string> {
    if (this.#closed) throw closedError();
    const id = ++this.#nextId.value;
    const channel = this.names.connection(connectionId);
    const answered = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new RelayhubError(
            'ERR_INVOCATION_TIMEOUT',
            `The instance holding connection '${connectionId}' did not answer within ${timeoutMs} ms.`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer, channel });
    });
    let receivers: number;
    try {
      receivers = await this.backplane.publish(
        channel,
        encode({ ...request, o: this.#self, id } as Header, body),
      );
    } catch (error) {
      this.#settle(id, undefined, error as Error);
      return answered;
    }
    // note: PUBLISH counts the subscribers that got it; none means no instance holds the connection, so
    // the caller learns it now instead of after a timeout.
    if (receivers === 0) this.#settle(id, undefined, connectionNotFound(connectionId));
    else this.#watchLiveness();
    return answered;
  }

  #onConnectionMessage(connectionId: string, header: Header, body: string): void {
    if (header.o === this.#self) return;
    switch (header.k) {
      case 's':
        return this.local.deliver({ kind: 'connections', ids: [connectionId] }, body);
      case 'ga':
      case 'gr': {
        const act =
          header.k === 'ga'
            ? this.local.addToGroup(header.c, header.g)
            : this.local.removeFromGroup(header.c, header.g);
        act.then(
          (done) =>
            this.#reply(
              header,
              done ? {} : { code: 'ERR_CONNECTION_NOT_FOUND', m: connectionNotFound(header.c).message },
            ),
          (error: unknown) => this.#reply(header, errorFields(error)),
        );
        return;
      }
      case 'inv': {
        const pending = this.local.invokeLocal(header.c, header.t, JSON.parse(body) as unknown[], header.ms);
        if (!pending)
          return this.#reply(header, {
            code: 'ERR_CONNECTION_NOT_FOUND',
            m: connectionNotFound(header.c).message,
          });
        pending.then(
          (result) => this.#reply(header, {}, result === undefined ? '' : JSON.stringify(result)),
          (error: unknown) => this.#reply(header, errorFields(error)),
        );
        return;
      }
      default:
        return;
    }
  }

  #reply(request: Header & { id: number }, outcome: { code?: string; m?: string }, body = ''): void {
    const message = encode({ k: 'r', o: this.#self, id: request.id, ...outcome }, body);
    this.backplane
      .publish(this.names.instance(request.o), message)
      .catch((error: unknown) => this.log.warn({ err: error }, 'could not answer a backplane request'));
  }

  #onReply(header: Header, body: string): void {
    if (header.k !== 'r') return;
    // note: a HubError stays one, so that its text reaches the client as it would from the owner itself.
    const error = header.code
      ? header.code === 'ERR_HUB_METHOD'
        ? new HubError(header.m ?? 'The request failed.')
        : new RelayhubError(header.code as RelayhubError['code'], header.m ?? 'The request failed.')
      : undefined;
    this.#settle(header.id, body, error);
  }

  #settle(id: number, body: string | undefined, error: Error | undefined): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(body ?? '');
    if (this.#pending.size === 0) {
      clearInterval(this.#liveness);
      this.#liveness = undefined;
    }
  }

  /** While requests wait, checks that someone still holds their connections (an instance may have died). */
  #watchLiveness(): void {
    if (this.#liveness) return;
    this.#liveness = setInterval(() => {
      for (const [id, pending] of this.#pending) {
        this.backplane.subscribers(pending.channel).then(
          (count) => {
            if (count > 0) return;
            this.#settle(
              id,
              undefined,
              new RelayhubError(
                'ERR_CONNECTION_CLOSED',
                'The connection (or the instance holding it) went away before answering.',
              ),
            );
          },
          () => undefined,
        );
      }
    }, LIVENESS_CHECK_MS);
    this.#liveness.unref();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#liveness);
    for (const id of [...this.#pending.keys()]) this.#settle(id, undefined, closedError());
    this.backplane.forget(this);
    await Promise.allSettled([
      this.backplane.unsubscribe(this.names.all),
      this.backplane.unsubscribe(this.names.instance(this.#self)),
    ]);
  }
}

const closedError = () => new RelayhubError('ERR_CLOSED', 'The backplane is closed.');

const except = (ids: readonly string[] | undefined) => (ids && ids.length > 0 ? { x: ids } : {});

const unique = (items: readonly string[]): string[] => [...new Set(items)];

function errorFields(error: unknown): { code: string; m: string } {
  if (error instanceof RelayhubError) return { code: error.code, m: error.message };
  return { code: 'ERR_CLIENT_RESULT', m: describe(error) };
}
