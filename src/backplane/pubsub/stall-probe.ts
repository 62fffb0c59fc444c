import type { Cluster, Redis } from 'ioredis';

/**
 * Tells whether Redis still answers on a connection that is up: a connection can be `ready` while Redis
 * answers nothing (paused, swapping, a network black hole), which `status` alone never shows. It sends a
 * PING every `intervalMs`; the connection counts as stalled while a PING has waited longer than
 * `intervalMs`, or when the last one failed (a command timeout).
 */
export class StallProbe {
  readonly #redis: Redis | Cluster;
  readonly #intervalMs: number;
  readonly #timer: NodeJS.Timeout;
  /** When the PING in flight was sent; 0 when none is. */
  #sentAt = 0;
  #failed = false;

  constructor(redis: Redis | Cluster, intervalMs: number) {
    this.#redis = redis;
    this.#intervalMs = intervalMs;
    this.#timer = setInterval(() => this.#probe(), intervalMs);
    this.#timer.unref();
  }

  get stalled(): boolean {
    return this.#failed || (this.#sentAt !== 0 && Date.now() - this.#sentAt > this.#intervalMs);
  }

  #probe(): void {
    // note: one PING at a time; a disconnected connection is reported by its status, not by the probe.
    if (this.#sentAt !== 0 || this.#redis.status !== 'ready') return;
    this.#sentAt = Date.now();
    this.#redis.ping().then(
      () => {
        this.#failed = false;
        this.#sentAt = 0;
      },
      () => {
        this.#failed = true;
        this.#sentAt = 0;
      },
    );
  }

  /** Stops probing. Idempotent. */
  close(): void {
    clearInterval(this.#timer);
  }
}
