import { type Logger, pino } from 'pino';
import { connectClient, openClient, quitClient, type RedisClient, targetOf } from '../../redis/connection.js';
import type {
  Backplane,
  BackplaneHealth,
  BackplaneSample,
  HubChannel,
  LocalHub,
  LocalUsers,
  ReliableLane,
} from '../backplane.js';
import { DEFAULT_CHANNEL_PREFIX, reliableKeys } from '../../redis/keys.js';
import { PubSubBackplane, type PubSubBackplaneOptions } from '../pubsub/pubsub-backplane.js';
import { StallProbe } from '../pubsub/stall-probe.js';
import { durabilityFor } from './reliable-producer.js';
import {
  DEFAULT_RELIABLE_OPTIONS,
  defaultWindow,
  validWindow,
  type DeadLetter,
  type ReliableOptions,
  StreamsLane,
} from './streams-lane.js';

export interface StreamsBackplaneOptions extends PubSubBackplaneOptions {
  /**
   * Set a stable id (e.g. the pod or host name) so that a restarted instance takes over its own delivery
   * stream and pending entries.
   * @default a random id
   */
  instanceId?: string;
  /** The reliable lane's options; see `DEFAULT_RELIABLE_OPTIONS` for every default. */
  reliable?: Partial<ReliableOptions>;
  /** Called with each message given up on after `reliable.maxAttempts` nacks or timeouts. */
  onDeadLetter?: (letter: DeadLetter) => void | Promise<void>;
}

/**
 * PUB/SUB for broadcasts (exactly as `PubSubBackplane`) plus the reliable lane for point-to-point
 * messages to users on Redis Streams: **at least once**, in order per user, acknowledged by the client
 * application, replayed from the last acknowledged offset wherever the user connects.
 */
export class StreamsBackplane implements Backplane {
  readonly kind = 'streams' as const;
  readonly #pubsub: PubSubBackplane;
  readonly #options: StreamsBackplaneOptions;
  readonly #reliable: ReliableOptions;
  readonly #log: Logger;
  readonly #lanes = new Set<StreamsLane>();
  readonly #connections: RedisClient[] = [];
  readonly #probes: StallProbe[] = [];
  #closing: Promise<void> | undefined;

  constructor(options: StreamsBackplaneOptions = {}) {
    this.#options = options;
    this.#pubsub = new PubSubBackplane(options);
    this.#reliable = {
      ...DEFAULT_RELIABLE_OPTIONS,
      ...options.reliable,
      window: validWindow(options.reliable?.window ?? defaultWindow()),
    };
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({
      backplane: 'streams',
      instance: this.#pubsub.instanceId,
    });
  }

  get instanceId(): string {
    return this.#pubsub.instanceId;
  }

  open(hub: string, local: LocalHub): Promise<HubChannel> {
    return this.#pubsub.open(hub, local);
  }

  async openReliable(hub: string, users: LocalUsers): Promise<ReliableLane> {
    const target = targetOf(this.#options);
    const timeout = this.#options.connectTimeoutMs ?? 5_000;
    // note: auto-pipelined: the sessions' reads and acks of one event-loop turn leave in one write.
    const redis = openClient(this.#options, `relayhub:${this.instanceId}:lane`, { autoPipelining: true });
    const blocking = openClient(this.#options, `relayhub:${this.instanceId}:lane-read`, { waits: true });
    this.#connections.push(redis, blocking);
    for (const connection of [redis, blocking]) {
      connection.on('error', (error: Error) => this.#log.debug({ err: error }, 'redis error'));
    }
    await Promise.all([connectClient(redis, target, timeout), connectClient(blocking, target, timeout)]);
    this.#probes.push(new StallProbe(redis, this.#options.healthProbeIntervalMs ?? 1_000));
    const lane = new StreamsLane({
      redis,
      blocking,
      durability: durabilityFor(target, this.#reliable),
      keys: reliableKeys(this.#options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX, hub),
      instanceId: this.instanceId,
      users,
      options: this.#reliable,
      log: this.#log.child({ hub }),
      ...(this.#options.onDeadLetter ? { onDeadLetter: this.#options.onDeadLetter } : {}),
    });
    await lane.start();
    this.#lanes.add(lane);
    return lane;
  }

  health(): BackplaneHealth {
    const health = this.#pubsub.health();
    const laneDown =
      this.#connections.some((c) => c.status !== 'ready') || this.#probes.some((p) => p.stalled);
    return laneDown && health.status === 'ready' ? { ...health, status: 'degraded' } : health;
  }

  sample(hubs: readonly string[]): Promise<BackplaneSample> {
    return this.#pubsub.sample(hubs);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const probe of this.#probes) probe.close();
      await Promise.allSettled([...this.#lanes].map((lane) => lane.close()));
      for (const connection of this.#connections) await quitClient(connection);
      await this.#pubsub.close();
    })();
    return this.#closing;
  }
}
