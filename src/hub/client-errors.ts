/**
 * Errors a client causes (an unknown method, bad arguments, a protocol violation, a limit hit) are the
 * client's problem, not the server's: they are counted, and logged at debug, truncated and rate-limited
 * per connection, so that a client cannot turn its input into several times as many log bytes.
 */
export type ClientErrorKind = 'unknownMethod' | 'invalidArguments' | 'protocol' | 'limit';

/** Plain counters of one hub, for a metrics collector to read. */
export interface HubStats {
  /** Client-caused errors since the hub started, by kind. */
  readonly clientErrors: Record<ClientErrorKind, number>;
}

export const newHubStats = (): HubStats => ({
  clientErrors: { unknownMethod: 0, invalidArguments: 0, protocol: 0, limit: 0 },
});

/** The longest client-supplied text (a method name, an error message) that goes into a log line. */
export const LOGGED_TEXT_LIMIT = 200;

export const truncateForLog = (text: string, limit = LOGGED_TEXT_LIMIT): string =>
  text.length <= limit ? text : `${text.slice(0, limit)}… (${text.length} chars)`;

const WINDOW_MS = 10_000;
const LOGS_PER_WINDOW = 5;

/** At most {@link LOGS_PER_WINDOW} log lines per {@link WINDOW_MS} for one connection. */
export class LogBudget {
  #windowStart = 0;
  #used = 0;
  /** Lines refused since the last one allowed, reported with the next one. */
  #suppressed = 0;

  /** Returns the number of lines suppressed before this one when it may be logged, else `undefined`. */
  take(now = Date.now()): number | undefined {
    if (now - this.#windowStart >= WINDOW_MS) {
      this.#windowStart = now;
      this.#used = 0;
    }
    if (this.#used >= LOGS_PER_WINDOW) {
      this.#suppressed++;
      return undefined;
    }
    this.#used++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return suppressed;
  }
}
