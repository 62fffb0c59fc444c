/**
 * Online/offline per endpoint: a timer reads each endpoint's backplane health every `intervalMs`
 * (connections up, and Redis answering the `StallProbe` PING in time). Each change is logged once, an
 * outage is counted, and the listener learns of it (the endpoints backplane then moves what it listens
 * on).
 */
import type { Logger } from 'pino';

/** One endpoint's record, as `health()` reports it. */
export interface EndpointHealthReport {
  name: string;
  /** The endpoint's type on this instance. */
  type: 'primary' | 'secondary';
  /** Where its Redis is (password redacted). */
  redis: string;
  online: boolean;
  /** This instance receives sends through it (its online primaries, else its online secondaries). */
  listening: boolean;
  /** Times it went offline since start. */
  outages: number;
  /** When it last went offline or came back (ms since the epoch; 0: never changed). */
  changedAt: number;
  /** Times its subscriptions were lost (what was published through it meanwhile may be missed). */
  possibleGaps: number;
  /** Sends through it that failed. */
  failedSends: number;
}

interface Watched {
  readonly name: string;
  /** Whether the endpoint is online now. */
  check(): boolean;
}

export class EndpointMonitor {
  readonly #watched: readonly Watched[];
  readonly #state = new Map<string, { online: boolean; outages: number; changedAt: number }>();
  readonly #log: Logger;
  readonly #onChange: () => void;
  #timer: NodeJS.Timeout | undefined;

  readonly #paused: () => boolean;

  /** `paused`: while true, checks are skipped (the backplane is opening connections it will watch). */
  constructor(watched: readonly Watched[], log: Logger, onChange: () => void, paused: () => boolean) {
    this.#watched = watched;
    this.#paused = paused;
    this.#log = log;
    this.#onChange = onChange;
    for (const w of watched) this.#state.set(w.name, { online: false, outages: 0, changedAt: 0 });
  }

  /** Takes the current state as the starting point (not logged), then checks every `intervalMs`. */
  start(intervalMs: number): void {
    for (const w of this.#watched) {
      const state = this.#state.get(w.name);
      if (state) state.online = w.check();
      if (state && !state.online) {
        state.outages++;
        this.#log.warn({ endpoint: w.name }, 'Redis endpoint offline at start');
      }
    }
    this.#timer = setInterval(() => this.check(), intervalMs);
    this.#timer.unref();
  }

  /** Checks every endpoint now; tells the listener when any changed. */
  check(): void {
    if (this.#paused()) return;
    let changed = false;
    for (const w of this.#watched) {
      const state = this.#state.get(w.name);
      const online = w.check();
      if (!state || state.online === online) continue;
      changed = true;
      state.online = online;
      state.changedAt = Date.now();
      if (online) {
        this.#log.warn({ endpoint: w.name, outages: state.outages }, 'Redis endpoint online again');
      } else {
        state.outages++;
        this.#log.warn({ endpoint: w.name, outages: state.outages }, 'Redis endpoint offline');
      }
    }
    if (changed) this.#onChange();
  }

  online(name: string): boolean {
    return this.#state.get(name)?.online ?? false;
  }

  record(name: string): { outages: number; changedAt: number } {
    const state = this.#state.get(name);
    return { outages: state?.outages ?? 0, changedAt: state?.changedAt ?? 0 };
  }

  /** Stops checking. Idempotent. */
  close(): void {
    clearInterval(this.#timer);
  }
}
