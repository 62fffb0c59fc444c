import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from './process-metrics.js';
import type { Backplane, BackplaneSample, ReliableMetrics } from '../backplane/backplane.js';
import type { HubCounters, SendRoute } from './hub-stats.js';

/** One hub as the collector sees it. */
export interface MeteredHub {
  readonly name: string;
  readonly connectionCount: number;
  readonly stats: HubCounters;
  /** The reliable lane's figures; undefined without a lane. */
  reliableMetrics(): Promise<ReliableMetrics> | undefined;
}

/** What one scrape reads: everything sampled once, then handed to every metric. */
export interface HubSnapshot {
  hubs: { hub: MeteredHub; reliable: ReliableMetrics | undefined }[];
  health: ReturnType<Backplane['health']>;
  sample: BackplaneSample;
}

/** This instance's figures as plain JSON (what the dashboard feed serves). Counters are cumulative. */
export interface HubServerStats {
  /** ms since the epoch, when sampled. */
  time: number;
  hubs: {
    hub: string;
    connections: number;
    received: number;
    sent: Record<SendRoute, number>;
    invocations: { ok: number; error: number };
    reliable?: {
      pending: number;
      lagSeconds: number;
      redeliveries: number;
      deadLetters: number;
      acked: number;
    };
  }[];
  backplane: {
    kind: Backplane['kind'];
    status: ReturnType<Backplane['health']>['status'];
    endpoints: BackplaneSample['endpoints'];
    possibleGaps: number;
    failedSends: number;
    subscriptions: number;
    /** Per hub: instances subscribed to its broadcast channel. */
    instances: Record<string, number>;
  };
}

/** Turns a snapshot into {@link HubServerStats}. */
export function toStats(snapshot: HubSnapshot, kind: Backplane['kind']): HubServerStats {
  return {
    time: Date.now(),
    hubs: snapshot.hubs.map(({ hub, reliable }) => {
      const invocations = { ok: 0, error: 0 };
      for (const counts of hub.stats.invocations.values()) {
        invocations.ok += counts.ok;
        invocations.error += counts.error;
      }
      return {
        hub: hub.name,
        connections: hub.connectionCount,
        received: hub.stats.received,
        sent: { ...hub.stats.sent },
        invocations,
        ...(reliable
          ? {
              reliable: {
                pending: reliable.pending,
                lagSeconds: reliable.oldestUnackedAgeMs / 1000,
                redeliveries: reliable.redeliveries,
                deadLetters: reliable.deadLetters,
                acked: reliable.acked,
              },
            }
          : {}),
      };
    }),
    backplane: {
      kind,
      status: snapshot.health.status,
      endpoints: snapshot.sample.endpoints,
      possibleGaps: snapshot.health.possibleGaps,
      failedSends: snapshot.health.failedSends,
      subscriptions: snapshot.sample.subscriptions,
      instances: snapshot.sample.channelSubscribers,
    },
  };
}

/** A Prometheus registry and the scrape that fills it. */
export interface MetricsCollector {
  readonly registry: Registry;
  /** Samples once (one round trip per Redis figure) and renders the Prometheus text format. */
  metrics(): Promise<string>;
  /** The last sample, refreshed. */
  snapshot(): Promise<HubSnapshot>;
}

const ROUTES: readonly SendRoute[] = ['all', 'groups', 'users', 'connections', 'reliable'];

/**
 * The hub server's metrics. Counters are the plain numbers of {@link HubCounters}, copied into prom-client
 * series at scrape time.
 */
export function hubMetrics(source: { hubs(): Iterable<MeteredHub>; backplane: Backplane }): MetricsCollector {
  const registry = new Registry();
  // note: the process metrics start observing (event loop delay, GC) on the first scrape, so that a
  // server nobody scrapes (tests, embedded use) pays nothing.
  let defaults = false;
  let last: HubSnapshot | undefined;
  const snapshot = async (): Promise<HubSnapshot> => {
    const hubs = await Promise.all(
      [...source.hubs()].map(async (hub) => ({
        hub,
        // note: a lane whose Redis is away reports nothing rather than failing the whole scrape.
        reliable: await Promise.resolve(hub.reliableMetrics()).catch(() => undefined),
      })),
    );
    const health = source.backplane.health();
    const sample = (await source.backplane.sample?.(hubs.map((h) => h.hub.name)).catch(() => undefined)) ?? {
      endpoints: [{ endpoint: source.backplane.kind, up: health.status === 'ready' }],
      subscriptions: 0,
      channelSubscribers: {},
    };
    last = { hubs, health, sample };
    return last;
  };
  // note: every series is rebuilt from the last snapshot when the registry collects it
  const collect = <M extends Counter | Gauge>(visit: (metric: M, s: HubSnapshot) => void) =>
    function (this: M) {
      this.reset();
      if (last) visit(this, last);
    };
  const counter = (
    name: string,
    help: string,
    labelNames: string[],
    visit: (c: Counter, s: HubSnapshot) => void,
  ) => new Counter({ name, help, labelNames, registers: [registry], collect: collect(visit) });
  const gauge = (
    name: string,
    help: string,
    labelNames: string[],
    visit: (g: Gauge, s: HubSnapshot) => void,
  ) => new Gauge({ name, help, labelNames, registers: [registry], collect: collect(visit) });

  gauge('relayhub_connections', 'Open connections on this instance.', ['hub'], (g, s) => {
    for (const { hub } of s.hubs) g.set({ hub: hub.name }, hub.connectionCount);
  });
  counter('relayhub_messages_sent_total', 'Sends by how they were addressed.', ['hub', 'route'], (c, s) => {
    for (const { hub } of s.hubs) {
      for (const route of ROUTES) c.inc({ hub: hub.name, route }, hub.stats.sent[route]);
    }
  });
  counter(
    'relayhub_messages_received_total',
    'Hub protocol messages received from clients.',
    ['hub'],
    (c, s) => {
      for (const { hub } of s.hubs) c.inc({ hub: hub.name }, hub.stats.received);
    },
  );
  counter(
    'relayhub_invocations_total',
    'Invocations of registered hub methods by outcome (ok, error).',
    ['hub', 'method', 'outcome'],
    (c, s) => {
      for (const { hub } of s.hubs) {
        for (const [method, counts] of hub.stats.invocations) {
          c.inc({ hub: hub.name, method, outcome: 'ok' }, counts.ok);
          c.inc({ hub: hub.name, method, outcome: 'error' }, counts.error);
        }
      }
    },
  );
  counter(
    'relayhub_client_errors_total',
    'Errors clients caused: unknownMethod, invalidArguments, protocol, limit.',
    ['hub', 'kind'],
    (c, s) => {
      for (const { hub } of s.hubs) {
        for (const [kind, count] of Object.entries(hub.stats.clientErrors))
          c.inc({ hub: hub.name, kind }, count);
      }
    },
  );
  gauge('relayhub_backplane_up', '1 when the backplane endpoint is connected.', ['endpoint'], (g, s) => {
    for (const { endpoint, up } of s.sample.endpoints) g.set({ endpoint }, up ? 1 : 0);
  });
  counter(
    'relayhub_backplane_possible_gaps_total',
    'Times the backplane lost its subscriptions (sends meanwhile may have been missed).',
    [],
    (c, s) => c.inc(s.health.possibleGaps),
  );
  counter(
    'relayhub_backplane_failed_sends_total',
    'Sends that could not be handed to the backplane.',
    [],
    (c, s) => c.inc(s.health.failedSends),
  );
  gauge('relayhub_backplane_subscriptions', "This instance's backplane channels.", [], (g, s) =>
    g.set(s.sample.subscriptions),
  );
  gauge(
    'relayhub_backplane_channel_subscribers',
    "Subscribers of the hub's broadcast channel (PUBSUB NUMSUB, sampled at scrape time): the instances.",
    ['hub'],
    (g, s) => {
      for (const [hub, count] of Object.entries(s.sample.channelSubscribers)) g.set({ hub }, count);
    },
  );
  // note: the reliable lane's figures, per hub that has a lane (streams)
  const lane = (
    kind: 'gauge' | 'counter',
    name: string,
    help: string,
    read: (r: ReliableMetrics) => number,
  ) => {
    const visit = (m: Gauge | Counter, s: HubSnapshot) => {
      for (const { hub, reliable } of s.hubs) {
        if (!reliable) continue;
        if (m instanceof Gauge) m.set({ hub: hub.name }, read(reliable));
        else m.inc({ hub: hub.name }, read(reliable));
      }
    };
    return kind === 'gauge' ? gauge(name, help, ['hub'], visit) : counter(name, help, ['hub'], visit);
  };
  lane(
    'gauge',
    'relayhub_reliable_pending',
    'Reliable-lane wake-ups read and not acknowledged yet.',
    (r) => r.pending,
  );
  lane(
    'gauge',
    'relayhub_reliable_lag_seconds',
    'Age of the oldest unacknowledged reliable message held for local users.',
    (r) => r.oldestUnackedAgeMs / 1000,
  );
  lane(
    'counter',
    'relayhub_reliable_redeliveries_total',
    'Reliable messages delivered again.',
    (r) => r.redeliveries,
  );
  lane(
    'counter',
    'relayhub_reliable_dead_letters_total',
    'Reliable messages given up on.',
    (r) => r.deadLetters,
  );
  lane(
    'counter',
    'relayhub_reliable_acked_total',
    'Reliable inbox positions acknowledged (by a client, or past a dead letter).',
    (r) => r.acked,
  );
  return {
    registry,
    snapshot,
    async metrics() {
      if (!defaults) {
        defaults = true;
        collectProcessMetrics(registry);
      }
      await snapshot();
      return registry.metrics();
    },
  };
}
