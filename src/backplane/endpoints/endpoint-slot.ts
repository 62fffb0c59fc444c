/**
 * One endpoint of the endpoints backplane: its inner backplane (PUB/SUB or Streams on that endpoint's
 * Redis) and what happens when that Redis cannot be reached when a hub opens: the endpoint is left out,
 * and a fresh inner backplane is tried in the background (backing off up to 5 s) until every hub and
 * reliable lane opened so far is open on it; then it is attached to them and counts as online again.
 */
import type { Logger } from 'pino';
import { redactUrl } from '../../redact.js';
import { describeTarget } from '../../redis/connection.js';
import type { EndpointConfig, EndpointType } from '../../redis/endpoints.js';
import type { BackplaneHealth, HubChannel, LocalUsers, ReliableLane } from '../backplane.js';
import { PubSubBackplane } from '../pubsub/pubsub-backplane.js';
import { StreamsBackplane, type StreamsBackplaneOptions } from '../streams/streams-backplane.js';
import type { DedupLocal, EndpointsChannel } from './endpoints-channel.js';
import type { EndpointsLane } from './endpoints-lane.js';

/** A hub opened on the endpoints backplane, for opening it on an endpoint that comes late. */
export interface OpenedHub {
  readonly hub: string;
  readonly dedup: DedupLocal;
  readonly channel: EndpointsChannel;
}

/** A reliable lane opened on the endpoints backplane. */
export interface OpenedLane {
  readonly hub: string;
  readonly users: LocalUsers;
  readonly lane: EndpointsLane;
}

export interface SlotContext {
  kind: 'pubsub' | 'streams';
  /** The inner backplanes' options (this endpoint's `redis` is set by the slot). */
  options: StreamsBackplaneOptions;
  log: Logger;
  /** What is open now, hubs and lanes. */
  opened(): { hubs: readonly OpenedHub[]; lanes: readonly OpenedLane[] };
  /** The endpoint was attached again (check it now). */
  attached(): void;
}

const MAX_RETRY_DELAY_MS = 5_000;

export class EndpointSlot {
  readonly name: string;
  readonly type: EndpointType;
  readonly publicUrl: string | undefined;
  /** Where its Redis is, password redacted. */
  readonly redis: string;
  readonly #endpoint: EndpointConfig;
  readonly #context: SlotContext;
  #inner: PubSubBackplane | StreamsBackplane;
  /** False while its Redis could not be reached for an open: it is being tried again. */
  #attached = true;
  #attempts = 0;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  /** The counters of the inner backplanes replaced so far. */
  readonly #carried = { possibleGaps: 0, failedSends: 0 };

  constructor(
    endpoint: EndpointConfig & { type: EndpointType },
    publicUrl: string | undefined,
    context: SlotContext,
  ) {
    this.name = endpoint.name;
    this.type = endpoint.type;
    this.publicUrl = publicUrl;
    this.redis = redactUrl(describeTarget(endpoint.redis));
    this.#endpoint = endpoint;
    this.#context = context;
    this.#inner = this.#newInner();
  }

  get attached(): boolean {
    return this.#attached;
  }

  /** Attached, connected, and Redis answering in time. */
  ready(): boolean {
    return this.#attached && this.#inner.health().status === 'ready';
  }

  /** The inner backplane's health, its counters carried over from the inner backplanes it replaced. */
  health(): BackplaneHealth {
    const health = this.#inner.health();
    return {
      ...health,
      possibleGaps: this.#carried.possibleGaps + health.possibleGaps,
      failedSends: this.#carried.failedSends + health.failedSends,
    };
  }

  get inner(): PubSubBackplane | StreamsBackplane {
    return this.#inner;
  }

  /** Opens a hub here; `undefined` when this endpoint is unreachable (it is then attached later). */
  async open(hub: string, dedup: DedupLocal): Promise<HubChannel | undefined> {
    if (!this.#attached) return undefined;
    try {
      return await this.#inner.open(hub, dedup);
    } catch (error) {
      this.#detach(error);
      return undefined;
    }
  }

  /** Opens a reliable lane here; `undefined` when this endpoint is unreachable. */
  async openReliable(hub: string, users: LocalUsers): Promise<ReliableLane | undefined> {
    if (!this.#attached) return undefined;
    try {
      return await (this.#inner as StreamsBackplane).openReliable(hub, users);
    } catch (error) {
      this.#detach(error);
      return undefined;
    }
  }

  #newInner(): PubSubBackplane | StreamsBackplane {
    const options: StreamsBackplaneOptions = { ...this.#context.options, redis: this.#endpoint.redis };
    return this.#context.kind === 'streams' ? new StreamsBackplane(options) : new PubSubBackplane(options);
  }

  #detach(error: unknown): void {
    if (!this.#attached || this.#closed) return;
    this.#attached = false;
    this.#context.log.warn(
      { endpoint: this.name, err: error },
      'Redis endpoint unreachable while opening; going on without it and retrying in the background',
    );
    // note: the hubs opened on it before keep their (closed) inner channels until it is attached again.
    void this.#inner.close();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    const delay = Math.min(MAX_RETRY_DELAY_MS, 250 * 2 ** this.#attempts++);
    this.#retry = setTimeout(() => void this.#reattach(), delay);
    this.#retry.unref();
  }

  /** Opens every hub and lane on a fresh inner backplane, then hands them over; else tries again later. */
  async #reattach(): Promise<void> {
    const inner = this.#newInner();
    const channels = new Map<OpenedHub, HubChannel>();
    const lanes = new Map<OpenedLane, ReliableLane>();
    try {
      // note: until nothing opened meanwhile is missing: the hand-over below runs in the same turn as the
      // last check, so an open() that comes later finds the endpoint attached.
      for (;;) {
        const { hubs, lanes: opened } = this.#context.opened();
        const hub = hubs.find((h) => !channels.has(h));
        const lane = opened.find((l) => !lanes.has(l));
        if (hub) channels.set(hub, await inner.open(hub.hub, hub.dedup));
        else if (lane) lanes.set(lane, await (inner as StreamsBackplane).openReliable(lane.hub, lane.users));
        else break;
        if (this.#closed) throw new Error('closed');
      }
    } catch {
      await inner.close().catch(() => undefined);
      this.#schedule();
      return;
    }
    const replaced = this.#inner.health();
    this.#carried.possibleGaps += replaced.possibleGaps;
    this.#carried.failedSends += replaced.failedSends;
    this.#inner = inner;
    this.#attached = true;
    this.#attempts = 0;
    for (const [hub, channel] of channels) hub.channel.attach(this.name, channel);
    for (const [lane, opened] of lanes) lane.lane.attach(this.name, opened);
    this.#context.log.warn({ endpoint: this.name }, 'Redis endpoint reachable again: attached');
    this.#context.attached();
  }

  /** Stops retrying and closes the inner backplane. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    return this.#inner.close();
  }
}
