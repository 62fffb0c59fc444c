import { randomBytes } from 'node:crypto';
import { type Logger, pino } from 'pino';
import { HubError, RelayhubError } from '../../errors.js';
import { describeTarget, isClusterTarget, targetOf } from '../../redis/connection.js';
import {
  DEFAULT_CHANNEL_PREFIX,
  type HubChannels,
  hubChannels,
  validateChannelPrefix,
} from '../../redis/keys.js';
import { PubSubBus, type PubSubBusOptions } from '../../redis/pubsub.js';
import { keySlot } from '../../redis/slot.js';
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
import { connectionNotFound } from '../memory/memory-backplane.js';
import { decode, encode, type Header } from './envelope.js';
import { describe } from './redis-connection.js';

export interface PubSubBackplaneOptions extends PubSubBusOptions {
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
   * How many channels carry broadcasts to `all`. On a Cluster each is its own slot, so that the
   * broadcasts of many instances spread over the shards; one sender always uses the same one (order).
   * @default 16 on a Cluster, 1 on one node
   */
  broadcastPartitions?: number;
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
  /** Where Redis is, password redacted, for metrics. */
  readonly #endpoint: string;
  readonly #partitions: number;
  readonly #log: Logger;
  readonly #bus: PubSubBus;
  /** Channel → the handler of messages arriving on it. */
  readonly #routes = new Map<string, Route>();
  readonly #channels = new Set<PubSubChannel>();
  #closing: Promise<void> | undefined;
  #possibleGaps = 0;
  #failedSends = 0;

  constructor(options: PubSubBackplaneOptions = {}) {
    this.#prefix = validateChannelPrefix(options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX);
    this.#endpoint = redactUrl(describeTarget(targetOf(options)));
    this.instanceId = options.instanceId ?? randomBytes(6).toString('hex');
    this.#partitions = options.broadcastPartitions ?? (isClusterTarget(targetOf(options)) ? 16 : 1);
    if (!Number.isInteger(this.#partitions) || this.#partitions < 1 || this.#partitions > 1_024) {
      throw new RelayhubError('ERR_CONFIG', `broadcastPartitions must be an integer from 1 to 1024.`, {
        remedy: 'Leave it unset (16 on a Cluster, 1 on one node) or pass a small integer.',
      });
    }
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({
      backplane: 'pubsub',
      instance: this.instanceId,
    });
    this.#bus = new PubSubBus(
      options,
      `relayhub:${this.instanceId}`,
      {
        message: (channel, message) => this.#onMessage(channel, message),
        lost: (reason) => {
          this.#possibleGaps++;
          this.#log.warn(
            { reason },
            'lost Redis subscriptions: messages published until they are back are missed',
          );
        },
        restored: () => this.#log.warn('subscriptions restored'),
      },
      this.#log,
    );
  }

  /** `sharded` (SPUBLISH/SSUBSCRIBE, on a Cluster) or `classic`. */
  get mode(): PubSubBus['mode'] {
    return this.#bus.mode;
  }

  async open(hub: string, local: LocalHub): Promise<HubChannel> {
    await this.#bus.connect();
    const names = hubChannels(this.#prefix, hub, this.#partitions);
    const channel = new PubSubChannel(this, names, local, this.#log.child({ hub }));
    await channel.start();
    this.#channels.add(channel);
    return channel;
  }

  // ---- mechanics shared by the hub channels: one thin function per Redis command ----

  /** Publishes; resolves with the receivers (-1 when the medium cannot tell). */
  async publish(channel: string, message: string): Promise<number> {
    try {
      return await this.#bus.publish(channel, message);
    } catch (error) {
      this.#failedSends++;
      throw error;
    }
  }

  /** Subscribers of a channel (0: nobody holds what it addresses; -1: unknown). */
  subscribers(channel: string): Promise<number> {
    return this.#bus.receivers(channel);
  }

  async subscribe(channel: string, route: Route): Promise<void> {
    this.#routes.set(channel, route);
    await this.#bus.subscribe(channel);
  }

  /** Unsubscribes from one or many channels (batched by the bus). */
  async unsubscribe(channels: string | readonly string[]): Promise<void> {
    const all = typeof channels === 'string' ? [channels] : channels;
    for (const channel of all) this.#routes.delete(channel);
    await this.#bus.unsubscribe(all);
  }

  /** The broadcast channel this instance publishes on: always the same one, so its broadcasts stay in order. */
  broadcastChannel(names: HubChannels): string {
    return names.all[keySlot(this.instanceId) % names.all.length] as string;
  }

  #onMessage(channel: string, message: string): void {
    const route = this.#routes.get(channel);
    const decoded = decode(message);
    if (!route || !decoded) return;
    try {
      route(decoded.header, decoded.body, channel);
    } catch (error) {
      this.#log.error({ err: error, channel }, 'failed to handle a backplane message');
    }
  }

  forget(channel: PubSubChannel): void {
    this.#channels.delete(channel);
  }

  health(): BackplaneHealth {
    const status = this.#closing ? 'down' : this.#bus.ready && !this.#bus.stalled ? 'ready' : 'degraded';
    return { status, possibleGaps: this.#possibleGaps, failedSends: this.#failedSends };
  }

  async sample(hubs: readonly string[]): Promise<BackplaneSample> {
    const up = this.health().status === 'ready';
    const channelSubscribers: Record<string, number> = {};
    if (up) {
      // note: one NUMSUB per hub, sent together (auto-pipelining)
      const counts = await Promise.all(
        // note: every instance subscribes to every broadcast partition: the first one counts them
        hubs.map((hub) => this.subscribers(hubChannels(this.#prefix, hub).all[0] as string)),
      );
      hubs.forEach((hub, i) => {
        channelSubscribers[hub] = counts[i] ?? 0;
      });
    }
    return {
      endpoints: [{ endpoint: this.#endpoint, up }],
      subscriptions: this.#routes.size,
      channelSubscribers,
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#channels].map((c) => c.close()));
      await this.#bus.close();
    })();
    return this.#closing;
  }
}

/** One hub on the PUB/SUB backplane: routing policy (which channel, who delivers) over the mechanics above. */
class PubSubChannel implements HubChannel {
  readonly #nextId = { value: 0 };
  readonly #pending = new Map<number, Pending>();
  readonly #self: string;
  /** Where the connection id starts in a connection's channel (`<base>:{c:<id>}`). */
  readonly #connectionIdAt: number;
  #liveness: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly backplane: PubSubBackplane,
    private readonly names: HubChannels,
    private readonly local: LocalHub,
    private readonly log: Logger,
  ) {
    this.#self = backplane.instanceId;
    this.#connectionIdAt = names.connection('').length - 1;
  }

  /** One route for every connection's channel (not a closure per connection): the id is in the channel. */
  readonly #connectionRoute: Route = (h, body, channel) =>
    this.#onConnectionMessage(channel.slice(this.#connectionIdAt, -1), h, body);

  async start(): Promise<void> {
    await Promise.all([
      ...this.names.all.map((all) =>
        this.backplane.subscribe(all, (h, body) => this.#onSend(h, body, { kind: 'all' })),
      ),
      this.backplane.subscribe(this.names.instance(this.#self), (h, body) => this.#onReply(h, body)),
    ]);
  }

  // ---- following what this instance holds ----

  follow(kind: Interest, name: string): Promise<void> {
    if (this.#closed) return Promise.resolve();
    switch (kind) {
      case 'connection':
        return this.backplane.subscribe(this.names.connection(name), this.#connectionRoute);
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
    // note: the PUBLISH is issued first, the local recipients served right after, without a round trip.
    // Both are written out in the check phase of this turn (ioredis' auto-pipelining and the connections'
    // flush both use setImmediate), in the order they were issued: so the other instances start their
    // fan-out while this one writes to its own sockets, instead of after it. Other instances skip what
    // they published.
    const sent = this.#publishRemote(audience, frame);
    try {
      this.local.deliver(audience, frame);
    } catch (error) {
      sent.catch(() => undefined);
      throw error;
    }
    await sent;
  }

  #publishRemote(audience: Audience, frame: string): Promise<unknown> {
    const header = (extra: Partial<Extract<Header, { k: 's' }>> = {}): Header => ({
      k: 's',
      o: this.#self,
      ...extra,
    });
    switch (audience.kind) {
      case 'all':
        return this.backplane.publish(
          this.backplane.broadcastChannel(this.names),
          encode(header(except(audience.except)), frame),
        );
      case 'connections':
        return Promise.all(
          unique(audience.ids).map((id) =>
            this.backplane.publish(this.names.connection(id), encode(header(), frame)),
          ),
        );
      case 'users':
        return Promise.all(
          unique(audience.ids).map((id) =>
            this.backplane.publish(this.names.user(id), encode(header(), frame)),
          ),
        );
      case 'groups': {
        const names = unique(audience.names);
        const message = encode(
          header({ ...except(audience.except), ...(names.length > 1 ? { gs: names } : {}) }),
          frame,
        );
        return Promise.all(names.map((name) => this.backplane.publish(this.names.group(name), message)));
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
    // note: PUBLISH (and SPUBLISH, within the channel's shard) counts the subscribers that got it; none
    // means no instance holds the connection, so the caller learns it now instead of after a timeout.
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
            if (count !== 0) return; // note: -1 is "cannot tell": keep waiting for the timeout
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
      ...this.names.all.map((all) => this.backplane.unsubscribe(all)),
      this.backplane.unsubscribe(this.names.instance(this.#self)),
    ]);
  }
}

/** Handles a message arriving on a channel. */
type Route = (header: Header, body: string, channel: string) => void;

const closedError = () => new RelayhubError('ERR_CLOSED', 'The backplane is closed.');

const except = (ids: readonly string[] | undefined) => (ids && ids.length > 0 ? { x: ids } : {});

const unique = (items: readonly string[]): string[] => [...new Set(items)];

function errorFields(error: unknown): { code: string; m: string } {
  if (error instanceof RelayhubError) return { code: error.code, m: error.message };
  return { code: 'ERR_CLIENT_RESULT', m: describe(error) };
}
