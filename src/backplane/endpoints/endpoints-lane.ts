/**
 * The reliable lane over several endpoints: each user's inbox lives on one endpoint (the router's
 * `inboxEndpoint`, by default a rendezvous hash over every endpoint's name, the same on every instance
 * and outbox worker), and that endpoint's lane carries the user's sends, presence and replay.
 */
import { RelayhubError } from '../../errors.js';
import type { ReliableLane, ReliableMessage, ReliableMetrics, ReliableSendResult } from '../backplane.js';
import type { EndpointRouter, EndpointView } from './endpoint-router.js';

export class EndpointsLane implements ReliableLane {
  readonly #lanes: ReadonlyMap<string, ReliableLane>;
  readonly #router: EndpointRouter;
  readonly #views: () => EndpointView[];
  #closing: Promise<void> | undefined;

  constructor(lanes: ReadonlyMap<string, ReliableLane>, router: EndpointRouter, views: () => EndpointView[]) {
    this.#lanes = lanes;
    this.#router = router;
    this.#views = views;
  }

  /** The user's inbox endpoint and its lane. */
  #laneOf(userId: string): { endpoint: EndpointView; lane: ReliableLane } {
    const endpoint = this.#router.inboxEndpoint(userId, this.#views());
    const lane = this.#lanes.get(endpoint.name);
    if (!lane) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `The router chose endpoint '${endpoint.name}', which is unknown.`,
        {
          remedy: 'Return one of the endpoints given to inboxEndpoint.',
        },
      );
    }
    return { endpoint, lane };
  }

  /**
   * Appends to the inbox on the user's inbox endpoint. Rejects with `ERR_BACKPLANE_UNAVAILABLE` while
   * that endpoint is offline (nothing is stored: retry with the same `key`; the user's other messages wait
   * in the inbox and are delivered when it is back).
   */
  async send(message: ReliableMessage): Promise<ReliableSendResult> {
    const { endpoint, lane } = this.#laneOf(message.userId);
    if (!endpoint.online) {
      throw new RelayhubError(
        'ERR_BACKPLANE_UNAVAILABLE',
        `The reliable inbox of user '${message.userId}' is on Redis endpoint '${endpoint.name}', which is offline.`,
        { remedy: 'Nothing was stored: retry with the same key once the endpoint is back (health()).' },
      );
    }
    return lane.send(message);
  }

  async userArrived(userId: string): Promise<void> {
    // note: while the endpoint is offline the lane registers presence at its next heartbeat.
    await this.#laneOf(userId).lane.userArrived(userId);
  }

  userLeft(userId: string): void {
    this.#laneOf(userId).lane.userLeft(userId);
  }

  /** The sum over the endpoints' lanes that answer (lag and pending of an offline one are unknown). */
  async metrics(): Promise<ReliableMetrics> {
    const outcomes = await Promise.allSettled([...this.#lanes.values()].map((lane) => lane.metrics()));
    const figures = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const first = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (figures.length === 0 && first) throw first.reason;
    const sum = (pick: (m: ReliableMetrics) => number) => figures.reduce((total, m) => total + pick(m), 0);
    return {
      lag: sum((m) => m.lag),
      pending: sum((m) => m.pending),
      delivered: sum((m) => m.delivered),
      acked: sum((m) => m.acked),
      redeliveries: sum((m) => m.redeliveries),
      deadLetters: sum((m) => m.deadLetters),
      gaps: sum((m) => m.gaps),
      oldestUnackedAgeMs: Math.max(0, ...figures.map((m) => m.oldestUnackedAgeMs)),
    };
  }

  close(): Promise<void> {
    this.#closing ??= Promise.allSettled([...this.#lanes.values()].map((lane) => lane.close())).then(
      () => undefined,
    );
    return this.#closing;
  }
}
