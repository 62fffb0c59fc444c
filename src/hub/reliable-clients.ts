import type {
  ReliableLane,
  ReliableMessage,
  ReliableMetrics,
  ReliableSendResult,
} from '../backplane/backplane.js';
import { validateUserId } from '../redis/keys.js';
import { RelayhubError } from '../errors.js';
import type { HubCounters } from '../metrics/hub-stats.js';

/** Sends on the reliable lane (`streams` backplane) to one user. */
export interface ReliableUserProxy {
  /**
   * Appends `target(...args)` to the user's inbox; the client receives it as an invocation whose last
   * argument is `{ messageId, offset }` and acknowledges it by returning from its handler.
   *
   * Delivery: **at least once**, in order per user, resumed from the last acknowledged offset wherever the
   * user connects, across instance pauses and crashes. Acks are per user: each instance holding the user
   * sends it to the user's connections there, and the first answer from any connection acknowledges it
   * (a connection that comes later starts after it). Resolves with the offset once Redis holds the message; rejects with
   * `ERR_BACKPLANE_UNAVAILABLE` when it does not (retry with a `key` via {@link ReliableClients.send}).
   * A handler error or a missing handler is a nack: redelivered with backoff, then dead-lettered.
   * Clients should drop duplicates by `messageId` (or by `offset`).
   */
  send(target: string, ...args: unknown[]): Promise<ReliableSendResult>;
}

export interface ReliableClients {
  /**
   * The user's proxy. Throws `ERR_INVALID_MESSAGE` at once when the id is not 1-256 characters without
   * braces or whitespace (the rule of every reliable sender: such an id could spell another user's keys).
   */
  user(userId: string): ReliableUserProxy;
  /** Like `user(id).send(...)`, with an idempotency `key`: a repeated key is dropped, not resent. */
  send(message: ReliableMessage): Promise<ReliableSendResult>;
  /** This instance's lane figures: lag, pending, delivered, acked, redeliveries, dead letters, gaps. */
  metrics(): Promise<ReliableMetrics>;
}

export function reliableClients(lane: () => ReliableLane | undefined, stats?: HubCounters): ReliableClients {
  const require = (): ReliableLane => {
    const current = lane();
    if (!current) {
      throw new RelayhubError('ERR_CONFIG', 'The reliable lane needs the streams backplane.', {
        remedy: 'Use new StreamsBackplane({ redisUrl }) (or --backplane streams), and send after listen().',
      });
    }
    if (stats) stats.sent.reliable++;
    return current;
  };
  return {
    user: (userId) => {
      // note: refused at once, before any send, with the rule every sender applies.
      validateUserId(userId);
      return { send: (target, ...args) => require().send({ userId, target, args }) };
    },
    send: (message) => require().send(message),
    metrics: () => (lane() ?? require()).metrics(),
  };
}
