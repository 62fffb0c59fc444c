import { type HubStats, newHubStats } from '../hub/client-errors.js';
import type { HubDefinition, HubMethod } from '../hub/hub.js';

/** How a send was addressed: the audience kinds, and the reliable lane. */
export type SendRoute = 'all' | 'groups' | 'users' | 'connections' | 'reliable';

export interface InvocationCounts {
  ok: number;
  error: number;
}

/**
 * One hub's event counters on this instance: plain numbers incremented where the events happen and read
 * by the metrics collector at scrape time.
 */
// note: no prom-client call and no allocation on the hot path; a scrape turns these into series.
export class HubCounters implements HubStats {
  /** Hub protocol messages received from clients (pings excepted). */
  received = 0;
  readonly sent: Record<SendRoute, number> = { all: 0, groups: 0, users: 0, connections: 0, reliable: 0 };
  /** Per registered hub method: the label set stays bounded whatever clients send. */
  readonly invocations = new Map<string, InvocationCounts>();
  /** Client-caused errors since the hub started, by kind (counted by the connections). */
  readonly clientErrors: HubStats['clientErrors'] = newHubStats().clientErrors;
}

/**
 * Returns `definition` with every method counted in `stats.invocations` (`ok` when it returned or its
 * promise resolved, `error` when it threw or rejected). Unregistered targets are never counted.
 */
export function countInvocations(definition: HubDefinition, stats: HubCounters): HubDefinition {
  const methods: Record<string, HubMethod> = {};
  for (const [name, method] of Object.entries(definition.methods)) {
    const counts: InvocationCounts = { ok: 0, error: 0 };
    stats.invocations.set(name, counts);
    const ok = (value: unknown) => {
      counts.ok++;
      return value;
    };
    const failed = (error: unknown) => {
      counts.error++;
      throw error;
    };
    if (isAsyncGeneratorFunction(method)) {
      // note: stays an async generator function, which is how the hub tells a streaming method.
      methods[name] = async function* (ctx, ...args) {
        try {
          yield* method(ctx, ...args) as AsyncGenerator<unknown>;
        } catch (error) {
          return failed(error);
        }
        counts.ok++;
      };
      continue;
    }
    methods[name] = (ctx, ...args) => {
      let result: unknown;
      try {
        result = method(ctx, ...args);
      } catch (error) {
        return failed(error);
      }
      return isPromiseLike(result) ? result.then(ok, failed) : ok(result);
    };
  }
  return { ...definition, methods };
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor as typeof Function;

function isAsyncGeneratorFunction(method: HubMethod): boolean {
  return method instanceof AsyncGeneratorFunction;
}
