import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  type Durability,
  durabilityFor,
  type LaneScripts,
  laneScripts,
} from '../backplane/streams/reliable-producer.js';
import { describe } from '../backplane/pubsub/redis-connection.js';
import {
  connectClient,
  describeTarget,
  openClient,
  quitClient,
  type RedisClient,
  type RedisTarget,
} from '../redis/connection.js';
import type { ReliableKeys } from '../redis/keys.js';

/** The name of the one endpoint of a worker given a single Redis (`redis` / `redisUrl`). */
export const DEFAULT_ENDPOINT_NAME = 'default';

/** The first wait before a failed endpoint is tried again (doubling up to {@link MAX_RETRY_MS}). */
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 2_000;

/** What reading an endpoint's epoch of one hub found. */
export interface EpochRead {
  epoch: string;
  /** The epoch this worker knew before; undefined the first time. */
  previous: string | undefined;
  /** The key was missing (a new Redis, or one that lost its data) and this worker set it. */
  created: boolean;
}

/**
 * One Redis endpoint as the outbox worker relays to it: its connection and lane scripts, the epoch of each
 * hub's lane there (a random value the worker sets once; when it is gone, that Redis lost its data), and
 * whether it answers. When it fails, the users whose rows failed are held back (their rows wait in
 * Postgres, in order) until a retry, backing off from 100 ms to 2 s; the other endpoints keep flowing.
 */
export class RelayEndpoint {
  readonly redis: RedisClient;
  readonly scripts: LaneScripts & RedisClient;
  readonly durability: Durability;
  /** Users whose rows wait until this endpoint is tried again. */
  readonly held = new Set<string>();
  /** Epoch per hub lane, by the lane's epoch key. */
  readonly #epochs = new Map<string, string>();
  readonly #log: Logger;
  #failing = false;
  #reachable = false;
  #probing = false;
  #retryAt = 0;
  #backoff = FIRST_RETRY_MS;

  constructor(
    readonly name: string,
    readonly target: RedisTarget,
    options: { workerId: string; replicas?: number; replicaTimeoutMs?: number; log: Logger },
  ) {
    this.durability = durabilityFor(target, {
      ...(options.replicas !== undefined ? { replicas: options.replicas } : {}),
      ...(options.replicaTimeoutMs !== undefined ? { replicaTimeoutMs: options.replicaTimeoutMs } : {}),
    });
    this.#log = options.log;
    this.redis = openClient({ redis: target }, `relayhub:${options.workerId}:${name}`, {
      autoPipelining: true,
    });
    this.redis.on('error', (error: Error) => this.#log.debug({ err: error, endpoint: name }, 'redis error'));
    this.scripts = laneScripts(this.redis);
  }

  /** `at <where>` (one Redis) or `'<name>' at <where>`, for log lines. */
  get where(): string {
    const at = `at ${describeTarget(this.target)}`;
    return this.name === DEFAULT_ENDPOINT_NAME ? at : `'${this.name}' ${at}`;
  }

  connect(timeoutMs: number): Promise<void> {
    return connectClient(this.redis, this.target, timeoutMs);
  }

  /** It failed and has not answered since: its users' rows are held back. */
  get failing(): boolean {
    return this.#failing;
  }

  /**
   * Whether the relay loop should talk to it now: it is not failing, or a probe found it answering again.
   * While it is failing, this starts a probe (a PING, in the background, once the backoff has passed), so
   * that an endpoint that hangs does not hold up the loop and the other endpoints' users.
   */
  get ready(): boolean {
    if (!this.#failing) return true;
    if (this.#reachable) return true;
    if (!this.#probing && Date.now() >= this.#retryAt) {
      this.#probing = true;
      this.redis
        .ping()
        .then(
          () => (this.#reachable = true),
          (error: unknown) => this.failed(error, []),
        )
        .finally(() => (this.#probing = false));
    }
    return false;
  }

  /** Reads `hub`'s epoch, setting a new one when the key is missing. Throws when Redis does not answer. */
  async readEpoch(keys: ReliableKeys): Promise<EpochRead> {
    let epoch = await this.redis.get(keys.epoch);
    let created = false;
    if (!epoch) {
      created = (await this.redis.set(keys.epoch, randomBytes(8).toString('hex'), 'NX')) === 'OK';
      epoch = (await this.redis.get(keys.epoch)) as string;
    }
    const previous = this.#epochs.get(keys.epoch);
    this.#epochs.set(keys.epoch, epoch);
    return { epoch, previous, created };
  }

  /** The epoch of a hub's lane (by its keys) as last read here; undefined before the first read. */
  epochOf(keys: ReliableKeys): string | undefined {
    return this.#epochs.get(keys.epoch);
  }

  /** A send or read failed: hold `users` back and retry later (logged once per outage). */
  failed(error: unknown, users: Iterable<string>): void {
    for (const user of users) this.held.add(user);
    if (!this.#failing) {
      this.#log.warn(
        { endpoint: this.name, err: error },
        `Redis ${this.where} did not take outbox messages (${describe(error)}): its users' rows wait in Postgres, in order, and are sent when it answers again; other endpoints are not affected`,
      );
    }
    this.#failing = true;
    this.#reachable = false;
    this.#retryAt = Date.now() + this.#backoff;
    this.#backoff = Math.min(MAX_RETRY_MS, this.#backoff * 2);
  }

  /** It answered again: the held users' rows go at the next pass. */
  answered(): void {
    if (this.#failing) {
      this.#log.info(
        { endpoint: this.name, users: this.held.size },
        `Redis ${this.where} answers again: sending the rows that waited for it (${this.held.size} users)`,
      );
    }
    this.#failing = false;
    this.#reachable = false;
    this.#backoff = FIRST_RETRY_MS;
    this.held.clear();
  }

  close(): Promise<void> {
    return quitClient(this.redis);
  }
}
