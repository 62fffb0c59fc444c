/**
 * Several Redis endpoints behind one backplane: one `PubSubBackplane` (or `StreamsBackplane`) per
 * endpoint, an {@link EndpointRouter} that picks the endpoints of each send, online/offline tracking per
 * endpoint, failover of what this instance listens on, and a negotiate that sends clients to an online
 * endpoint (redirecting them to another instance's public URL when this one cannot serve them).
 */
import { randomBytes } from 'node:crypto';
import { type Logger, pino } from 'pino';
import { RelayhubError } from '../../errors.js';
import { type EndpointConfig, validateEndpoints } from '../../redis/endpoints.js';
import type {
  Backplane,
  BackplaneHealth,
  BackplaneSample,
  HubChannel,
  LocalHub,
  LocalUsers,
  ReliableLane,
} from '../backplane.js';
import type { StreamsBackplaneOptions } from '../streams/streams-backplane.js';
import type { DedupWindowOptions } from './dedup-window.js';
import { type EndpointHealthReport, EndpointMonitor } from './endpoint-health.js';
import {
  DefaultEndpointRouter,
  type EndpointRouter,
  type EndpointView,
  type NegotiateRequest,
} from './endpoint-router.js';
import { DedupLocal, EndpointsChannel } from './endpoints-channel.js';
import { EndpointsLane } from './endpoints-lane.js';
import { EndpointSlot, type OpenedHub, type OpenedLane, type SlotContext } from './endpoint-slot.js';

export interface EndpointsBackplaneOptions extends Omit<StreamsBackplaneOptions, 'redis' | 'redisUrl'> {
  /**
   * The backplane on each endpoint: `pubsub` (at most once) or `streams` (plus the reliable lane).
   * @default 'pubsub'
   */
  kind?: 'pubsub' | 'streams';
  /** The endpoints: at least one, unique names, each with its Redis (one node or a Cluster) and type. */
  endpoints: readonly EndpointConfig[];
  /** @default new DefaultEndpointRouter() */
  router?: EndpointRouter;
  /**
   * This instance's public base URL. Negotiate redirects a client to the endpoint it chose when that
   * endpoint's `publicUrl` is set and differs from this one. Without it, an endpoint counts as this
   * instance's own when it is one of its primaries.
   * @default undefined
   */
  selfUrl?: string;
  /**
   * How often each endpoint's health is read. An endpoint whose connection closed is seen offline within
   * this time; one that stops answering within `2 × healthProbeIntervalMs` plus this time.
   * @default 250
   */
  endpointCheckIntervalMs?: number;
  /** The window of message ids that makes each connection receive a send once. */
  dedup?: DedupWindowOptions;
}

/** `health()` of the endpoints backplane: the totals, and a record per endpoint. */
export interface EndpointsHealth extends BackplaneHealth {
  endpoints: EndpointHealthReport[];
}

/** What negotiate does with a request; see {@link EndpointsBackplane.negotiate}. */
export type NegotiateDecision =
  { kind: 'serve' } | { kind: 'redirect'; baseUrl: string } | { kind: 'answered' } | { kind: 'unavailable' };

const DEFAULT_CHECK_INTERVAL_MS = 250;

function checkBaseUrl(value: string, what: string): string {
  if (!/^https?:\/\/[^\s/]+/.test(value)) {
    throw new RelayhubError('ERR_CONFIG', `${what} '${value}' is not an http(s) URL.`, {
      remedy: 'Give the public base URL of the instances, e.g. https://east.example.com.',
    });
  }
  return value.replace(/\/+$/, '');
}

/**
 * The backplane over several Redis endpoints (`createBackplane(kind, { endpoints })` builds one).
 *
 * - **Listening**: this instance receives sends to its connections, users and groups through its online
 *   primaries, and through its online secondaries while no primary is online (the broadcast channel and
 *   its reply channel are subscribed on every endpoint). When that set changes, it subscribes on the new
 *   endpoints before leaving the old ones; what was published to it in between over an endpoint that
 *   went down is missed and counted (`possibleGaps`).
 * - **Sending**: each send goes to the endpoints the router picks (default: every online endpoint; only
 *   the owning endpoint for a connection of this instance). Delivery is **at most once**, as on one Redis,
 *   and each connection receives a send **once** however many endpoints carried it (a message id,
 *   remembered in a bounded window). A send fails (`ERR_BACKPLANE_UNAVAILABLE`) only when no endpoint
 *   took it; local connections have it anyway.
 * - **Reliable lane** (`kind: 'streams'`): each user's inbox on the router's `inboxEndpoint`; while that
 *   endpoint is offline, sends to the user reject with `ERR_BACKPLANE_UNAVAILABLE` and nothing is lost.
 * - **Online**: an endpoint is online while its connections are up and Redis answers its PING in time,
 *   checked every `endpointCheckIntervalMs`; each change is logged once and counted (`health()`).
 * - **Start**: an endpoint unreachable when a hub opens is left out and tried again in the background
 *   (backing off up to 5 s); it joins (and counts as online) once its Redis answers. At least one
 *   endpoint must be reachable.
 */
export class EndpointsBackplane implements Backplane {
  readonly kind: 'pubsub' | 'streams';
  readonly instanceId: string;
  readonly router: EndpointRouter;
  readonly openReliable?: (hub: string, users: LocalUsers) => Promise<ReliableLane>;
  readonly #slots: readonly EndpointSlot[];
  /** The hubs and reliable lanes opened so far (an endpoint attached late opens them too). */
  readonly #opened: { hubs: OpenedHub[]; lanes: OpenedLane[] } = { hubs: [], lanes: [] };
  readonly #selfUrl: string | undefined;
  readonly #monitor: EndpointMonitor;
  readonly #checkIntervalMs: number;
  readonly #dedup: DedupWindowOptions;
  readonly #log: Logger;
  #listening = new Set<string>();
  #relistening: Promise<void> = Promise.resolve();
  #monitoring = false;
  /** Opens (of hubs, of lanes) under way: their connections are not up yet, so checks wait. */
  #opening = 0;
  #closing: Promise<void> | undefined;

  constructor(options: EndpointsBackplaneOptions) {
    const {
      kind = 'pubsub',
      endpoints,
      router,
      selfUrl,
      endpointCheckIntervalMs,
      dedup,
      ...shared
    } = options;
    if (kind !== 'pubsub' && kind !== 'streams') {
      throw new RelayhubError(
        'ERR_CONFIG',
        `Endpoints need the 'pubsub' or 'streams' backplane, not '${String(kind)}'.`,
        { remedy: "Use kind: 'pubsub' or 'streams'." },
      );
    }
    const checked = validateEndpoints(endpoints ?? []);
    this.kind = kind;
    this.instanceId = shared.instanceId ?? randomBytes(6).toString('hex');
    this.router = router ?? new DefaultEndpointRouter();
    this.#selfUrl = selfUrl === undefined ? undefined : checkBaseUrl(selfUrl, 'selfUrl');
    this.#checkIntervalMs = endpointCheckIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    this.#dedup = dedup ?? {};
    const logger = shared.logger ?? pino({ level: 'silent' });
    this.#log = logger.child({ backplane: 'endpoints', instance: this.instanceId });
    const context: SlotContext = {
      kind,
      options: { ...shared, instanceId: this.instanceId },
      log: this.#log,
      opened: () => this.#opened,
      attached: () => this.#monitor.check(),
    };
    this.#slots = checked.map((endpoint) => {
      const publicUrl =
        endpoint.publicUrl === undefined
          ? undefined
          : checkBaseUrl(endpoint.publicUrl, `The publicUrl of endpoint '${endpoint.name}'`);
      return new EndpointSlot(endpoint, publicUrl, {
        ...context,
        options: { ...context.options, logger: logger.child({ endpoint: endpoint.name }) },
      });
    });
    this.#monitor = new EndpointMonitor(
      this.#slots.map((slot) => ({ name: slot.name, check: () => slot.ready() })),
      this.#log,
      () => this.#relisten(),
      () => this.#opening > 0,
    );
    if (kind === 'streams') this.openReliable = (hub, users) => this.#openReliable(hub, users);
  }

  /** Every endpoint as this instance sees it now. */
  views(): EndpointView[] {
    return this.#slots.map((slot) => ({
      name: slot.name,
      type: slot.type,
      online: this.#monitor.online(slot.name),
      listening: this.#listening.has(slot.name),
      ...(slot.publicUrl !== undefined ? { publicUrl: slot.publicUrl } : {}),
    }));
  }

  /**
   * Opens the hub on every endpoint that can be reached; one that cannot is left out (logged) and tried
   * again in the background, and joins when its Redis answers. Rejects with `ERR_BACKPLANE_UNAVAILABLE`
   * only when no endpoint can be reached.
   */
  async open(hub: string, local: LocalHub): Promise<HubChannel> {
    if (this.#closing) throw new RelayhubError('ERR_CLOSED', 'The backplane is closed.');
    const dedup = new DedupLocal(local, this.#dedup);
    const inner = await this.#openOnEvery((slot) => slot.open(hub, dedup));
    if (inner.size === 0) {
      throw new RelayhubError(
        'ERR_BACKPLANE_UNAVAILABLE',
        `No Redis endpoint is reachable (${this.#slots.map((s) => `'${s.name}' at ${s.redis}`).join(', ')}).`,
        { remedy: 'Check the endpoints’ URLs and that their Redis servers run; at least one must answer.' },
      );
    }
    const channel = new EndpointsChannel(
      { router: this.router, views: () => this.views() },
      local,
      dedup,
      inner,
    );
    this.#opened.hubs.push({ hub, dedup, channel });
    await this.#openLate(
      inner,
      (slot) => slot.open(hub, dedup),
      (name, late) => channel.attach(name, late),
    );
    if (!this.#monitoring) {
      this.#monitoring = true;
      this.#monitor.start(this.#checkIntervalMs);
      this.#listening = this.#wanted();
    }
    await channel.listenOn(this.#listening);
    return channel;
  }

  async #openReliable(hub: string, users: LocalUsers): Promise<ReliableLane> {
    const lanes = await this.#openOnEvery((slot) => slot.openReliable(hub, users));
    const lane = new EndpointsLane(lanes, this.router, () => this.views());
    this.#opened.lanes.push({ hub, users, lane });
    await this.#openLate(
      lanes,
      (slot) => slot.openReliable(hub, users),
      (name, late) => lane.attach(name, late),
    );
    return lane;
  }

  /** Opens something on every endpoint at once: endpoint name → what opened (the unreachable left out). */
  async #openOnEvery<T>(open: (slot: EndpointSlot) => Promise<T | undefined>): Promise<Map<string, T>> {
    this.#opening++;
    try {
      const opened = await Promise.all(this.#slots.map(open));
      const byName = new Map<string, T>();
      opened.forEach((item, i) => {
        if (item !== undefined) byName.set((this.#slots[i] as EndpointSlot).name, item);
      });
      return byName;
    } finally {
      this.#opening--;
    }
  }

  /** An endpoint attached while an open was under way did not see it: opens it there now. */
  async #openLate<T>(
    have: ReadonlyMap<string, T>,
    open: (slot: EndpointSlot) => Promise<T | undefined>,
    attach: (name: string, item: T) => void,
  ): Promise<void> {
    for (const slot of this.#slots) {
      if (have.has(slot.name) || !slot.attached) continue;
      const late = await open(slot);
      if (late !== undefined) attach(slot.name, late);
    }
  }

  /** Online primaries; else online secondaries; else none. */
  #wanted(): Set<string> {
    const online = this.#slots.filter((slot) => this.#monitor.online(slot.name));
    const primaries = online.filter((slot) => slot.type === 'primary');
    return new Set((primaries.length > 0 ? primaries : online).map((slot) => slot.name));
  }

  /** Moves every hub's listening to the endpoints wanted now, one move at a time. */
  #relisten(): void {
    this.#relistening = this.#relistening.then(async () => {
      if (this.#closing) return;
      const next = this.#wanted();
      const same = next.size === this.#listening.size && [...next].every((n) => this.#listening.has(n));
      if (same) return;
      this.#log.warn({ from: [...this.#listening], to: [...next] }, 'listening on other Redis endpoints');
      this.#listening = next;
      await Promise.allSettled(this.#opened.hubs.map(({ channel }) => channel.listenOn(next)));
    });
  }

  /**
   * What negotiate does: asks the router for an endpoint; `serve` it here, `redirect` the client to the
   * endpoint's public URL (set and not this instance's own), `unavailable` (503) when the router found
   * none, `answered` when the router answered the request itself.
   */
  async negotiate(request: NegotiateRequest): Promise<NegotiateDecision> {
    const chosen = await this.router.negotiateEndpoint(request, this.views());
    if (request.res.headersSent || request.res.writableEnded) return { kind: 'answered' };
    if (!chosen) return { kind: 'unavailable' };
    const own = this.#selfUrl !== undefined ? chosen.publicUrl === this.#selfUrl : chosen.type === 'primary';
    if (chosen.publicUrl !== undefined && !own) return { kind: 'redirect', baseUrl: chosen.publicUrl };
    return { kind: 'serve' };
  }

  health(): EndpointsHealth {
    const reports = this.#slots.map((slot): EndpointHealthReport => {
      const inner = slot.health();
      return {
        name: slot.name,
        type: slot.type,
        redis: slot.redis,
        online: this.#monitor.online(slot.name),
        listening: this.#listening.has(slot.name),
        ...this.#monitor.record(slot.name),
        possibleGaps: inner.possibleGaps,
        failedSends: inner.failedSends,
      };
    });
    const listening = reports.filter((r) => r.listening && r.online);
    const hasPrimary = this.#slots.some((slot) => slot.type === 'primary');
    const serving = listening.some((r) => r.type === 'primary' || !hasPrimary);
    return {
      status: this.#closing ? 'down' : serving ? 'ready' : 'degraded',
      possibleGaps: reports.reduce((total, r) => total + r.possibleGaps, 0),
      failedSends: reports.reduce((total, r) => total + r.failedSends, 0),
      endpoints: reports,
    };
  }

  async sample(hubs: readonly string[]): Promise<BackplaneSample> {
    const samples = await Promise.all(
      this.#slots.map((slot) =>
        this.#monitor.online(slot.name) ? slot.inner.sample(hubs).catch(() => undefined) : undefined,
      ),
    );
    const channelSubscribers: Record<string, number> = {};
    let subscriptions = 0;
    for (const sample of samples) {
      if (!sample) continue;
      subscriptions += sample.subscriptions;
      // note: every instance subscribes to the broadcast channel on every endpoint: the largest count
      // is the number of instances.
      for (const [hub, count] of Object.entries(sample.channelSubscribers)) {
        channelSubscribers[hub] = Math.max(channelSubscribers[hub] ?? 0, count);
      }
    }
    return {
      endpoints: this.#slots.map((slot, i) => ({
        endpoint: `${slot.name}=${slot.redis}`,
        up: samples[i] !== undefined && this.#monitor.online(slot.name),
      })),
      subscriptions,
      channelSubscribers,
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#monitor.close();
      await this.#relistening.catch(() => undefined);
      await Promise.allSettled(this.#opened.hubs.map(({ channel }) => channel.close()));
      await Promise.allSettled(this.#opened.lanes.map(({ lane }) => lane.close()));
      await Promise.allSettled(this.#slots.map((slot) => slot.close()));
    })();
    return this.#closing;
  }
}
