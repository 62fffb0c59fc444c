/**
 * The reliable lane over several endpoints: each user's inbox lives on one endpoint (the router's
 * `inboxEndpoint`, by default a rendezvous hash over every endpoint's name, the same on every instance
 * and outbox worker), and that endpoint's lane carries the user's sends, presence and replay.
 */
import { RelayhubError } from '../../errors.js';
import type { ReliableLane, ReliableMessage, ReliableMetrics, ReliableSendResult } from '../backplane.js';
import type { EndpointRouter, EndpointView } from './endpoint-router.js';

export class EndpointsLane implements ReliableLane {
  readonly #lanes: Map<string, ReliableLane>;
  /** The users this instance holds, to announce on an endpoint's lane that is attached late. */
  readonly #arrived = new Set<string>();
  readonly #router: EndpointRouter;
  readonly #views: () => EndpointView[];
  #closing: Promise<void> | undefined;

  constructor(lanes: ReadonlyMap<string, ReliableLane>, router: EndpointRouter, views: () => EndpointView[]) {
    this.#lanes = new Map(lanes);
    this.#router = router;
    this.#views = views;
  }

  /**
   * The lane of endpoint `name`, opened late (its Redis was unreachable when the hub started): it
   * replaces any earlier one, and this instance's users whose inbox is there are announced on it.
   */
  attach(name: string, lane: ReliableLane): void {
    if (this.#closing) {
      void lane.close();
      return;
    }
    this.#lanes.set(name, lane);
    for (const userId of this.#arrived) {
      if (this.#inboxOf(userId).name === name) void lane.userArrived(userId).catch(() => undefined);
    }
  }

  #inboxOf(userId: string): EndpointView {
    const views = this.#views();
    const endpoint = this.#router.inboxEndpoint(userId, views);
    if (!views.some((e) => e.name === endpoint.name)) {
      throw new RelayhubError(
        'ERR_CONFIG',
        `The router chose endpoint '${endpoint.name}', which is unknown.`,
        {
          remedy: 'Return one of the endpoints given to inboxEndpoint.',
        },
      );
    }
    return endpoint;
  }

  /** The user's inbox endpoint and its lane (none while that endpoint has not been reachable yet). */
  #laneOf(userId: string): { endpoint: EndpointView; lane: ReliableLane | undefined } {
    const endpoint = this.#inboxOf(userId);
    return { endpoint, lane: this.#lanes.get(endpoint.name) };
  }

  /**
   * Appends to the inbox on the user's inbox endpoint. Rejects with `ERR_BACKPLANE_UNAVAILABLE` while
   * that endpoint is offline (nothing is stored: retry with the same `key`; the user's other messages wait
   * in the inbox and are delivered when it is back).
   */
  async send(message: ReliableMessage): Promise<ReliableSendResult> {
    const { endpoint, lane } = this.#laneOf(message.userId);
    if (!endpoint.online || !lane) {
      throw new RelayhubError(
        'ERR_BACKPLANE_UNAVAILABLE',
        `The reliable inbox of user '${message.userId}' is on Redis endpoint '${endpoint.name}', which is offline.`,
        { remedy: 'Nothing was stored: retry with the same key once the endpoint is back (health()).' },
      );
    }
    return lane.send(message);
  }

  async userArrived(userId: string): Promise<void> {
    this.#arrived.add(userId);
    // note: while the endpoint is offline the lane registers presence at its next heartbeat; before its
    // lane exists, attach() announces the user.
    await this.#laneOf(userId).lane?.userArrived(userId);
  }

  userLeft(userId: string): void {
    this.#arrived.delete(userId);
    this.#laneOf(userId).lane?.userLeft(userId);
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
