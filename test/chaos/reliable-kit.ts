/**
 * Shared pieces of the reliable-lane chaos tests (not a test file itself): a paced sender that retries
 * with the same idempotency key, official clients that record every reliable message into a
 * {@link MessageTracker}, a bounded wait for complete delivery and the common assertions, a TCP forwarder
 * that fails over to a live instance, a TCP proxy in front of Redis that can lose Redis' answers, cut and
 * hold connections, and the clean-up of a test's keys on the shared Redis (its unique prefix only).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { HttpTransportType, type HubConnection } from '@microsoft/signalr';
import type { ReliableSendResult } from '../../src/backplane/backplane.js';
import type { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { RelayhubError } from '../../src/errors.js';
import { buildClient, type ClientOptions, type ClientPool } from '../helpers/client.js';
import type { MessageTracker } from '../helpers/message-tracker.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

/** The client method the chaos tests send reliable messages to. */
export const TARGET = 'chaosNote';

export interface Note {
  user: string;
  seq: number;
}

interface Meta {
  messageId: string;
  offset: number;
}

/** Numbers from `from` to `to`, inclusive. */
export const range = (from: number, to: number): number[] =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** Registers the reliable handler (before start): records each copy, acknowledges it by returning true. */
export function trackReliable(
  connection: HubConnection,
  userId: string,
  tracker: MessageTracker,
  label?: string,
): void {
  connection.on(TARGET, (payload: unknown, meta: Meta) => {
    tracker.received(userId, {
      messageId: meta.messageId,
      offset: meta.offset,
      payload,
      ...(label ? { connection: label } : {}),
    });
    return true;
  });
}

/** Builds a client for `userId` that records into `tracker`, adds it to `pool`, and starts it. */
export async function connectTracked(
  pool: ClientPool,
  url: string,
  userId: string,
  tracker: MessageTracker,
  options: ClientOptions = {},
): Promise<HubConnection> {
  // note: WebSockets only. The chaos forwarders give no affinity once an instance is gone (each TCP
  // connection goes to the next live instance), and Server-Sent Events / long polling need it (README,
  // Deployment): a client falling back to them would send its acks by POST to instances that do not hold
  // its connection. A WebSocket lands whole on one instance, or fails and is retried.
  const connection = buildClient(url, {
    token: await signToken(userId),
    transport: HttpTransportType.WebSockets,
    ...options,
  });
  trackReliable(connection, userId, tracker);
  pool.add(connection);
  await connection.start();
  return connection;
}

/** The users' connections and how many times each went through `onreconnecting`. */
export interface ConnectedUsers {
  connections: HubConnection[];
  reconnects: Map<string, number>;
  /** Reconnects of every user together. */
  totalReconnects(): number;
}

/** Connects each user (the i-th through `urlOf(i)`) with {@link connectTracked} and counts its reconnects. */
export async function connectUsers(
  pool: ClientPool,
  users: readonly string[],
  urlOf: (index: number) => string,
  tracker: MessageTracker,
  options: ClientOptions = {},
): Promise<ConnectedUsers> {
  const reconnects = new Map<string, number>();
  const connections = await Promise.all(
    users.map(async (user, i) => {
      const connection = await connectTracked(pool, urlOf(i), user, tracker, options);
      connection.onreconnecting(() => reconnects.set(user, (reconnects.get(user) ?? 0) + 1));
      return connection;
    }),
  );
  const totalReconnects = () => [...reconnects.values()].reduce((a, b) => a + b, 0);
  return { connections, reconnects, totalReconnects };
}

export interface SendStats {
  sent: number;
  /** Attempts that failed with ERR_BACKPLANE_UNAVAILABLE and were retried with the same key. */
  retries: number;
  /** Retries Redis answered as duplicates: the first attempt had been applied, its answer lost. */
  duplicateAnswers: number;
}

export interface SendPlan {
  producer: Pick<ReliableProducer, 'send'>;
  tracker: MessageTracker;
  users: string[];
  perUser: number;
  /** The first message number of each user (for a plan that continues an earlier one). @default 1 */
  firstSeq?: number;
  /** Makes keys unique to the test run. */
  tag: string;
  /** Sends in flight at once (each user's sends stay sequential, so send order is offset order). */
  concurrency: number;
  /** Paces the sender to about this many sends per second, so that sending spans the fault. */
  ratePerSecond?: number;
  /** Called after each successful send with the number sent so far. */
  onProgress?: (sent: number) => void;
  /** How long one message may keep failing before the plan fails. @default 15_000 */
  retryForMs?: number;
}

/**
 * Sends `perUser` messages to each user, interleaved across users, each with a key, retrying a send that
 * fails with ERR_BACKPLANE_UNAVAILABLE with the same key. Records every message in the tracker before its
 * first attempt (a copy may be delivered before the send's answer arrives) and its offset after.
 */
export async function sendPlan(plan: SendPlan): Promise<SendStats> {
  const stats: SendStats = { sent: 0, retries: 0, duplicateAnswers: 0 };
  const started = Date.now();
  let slots = plan.concurrency;
  const waiting: (() => void)[] = [];
  const acquire = async (): Promise<void> => {
    if (slots > 0) {
      slots--;
      return;
    }
    await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else slots++;
  };
  let issued = 0;
  const pace = async (): Promise<void> => {
    if (!plan.ratePerSecond) return;
    const due = started + (issued++ * 1000) / plan.ratePerSecond;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };
  const sendOne = async (user: string, seq: number): Promise<void> => {
    const key = `${plan.tag}-${user}-${seq}`;
    const payload: Note = { user, seq };
    plan.tracker.sent(user, { messageId: key, payload });
    const giveUpAt = Date.now() + (plan.retryForMs ?? 15_000);
    let retried = false;
    for (;;) {
      let result: ReliableSendResult;
      try {
        result = await plan.producer.send({ userId: user, target: TARGET, args: [payload], key });
      } catch (error) {
        if (!(error instanceof RelayhubError && error.code === 'ERR_BACKPLANE_UNAVAILABLE')) throw error;
        if (Date.now() > giveUpAt) {
          throw new Error(`Sending ${key} kept failing for ${plan.retryForMs ?? 15_000} ms`, {
            cause: error,
          });
        }
        stats.retries++;
        retried = true;
        // note: a retry back-off, not a synchronization: Redis is away, try again shortly.
        await new Promise((resolve) => setTimeout(resolve, 25));
        continue;
      }
      if (result.messageId !== key) throw new Error(`Send of ${key} returned message id ${result.messageId}`);
      if (result.duplicate) {
        if (!retried) throw new Error(`The first send of ${key} was answered as a duplicate`);
        stats.duplicateAnswers++;
      }
      plan.tracker.sentAt(user, key, result.offset);
      stats.sent++;
      plan.onProgress?.(stats.sent);
      return;
    }
  };
  // note: one sequential loop per user; the semaphore interleaves them and bounds what is in flight.
  await Promise.all(
    plan.users.map(async (user) => {
      const first = plan.firstSeq ?? 1;
      for (let seq = first; seq < first + plan.perUser; seq++) {
        await acquire();
        try {
          await pace();
          await sendOne(user, seq);
        } finally {
          release();
        }
      }
    }),
  );
  return stats;
}

/** Waits (bounded) until every sent message reached its user; fails with the tracker's counts. */
export async function waitForDelivery(tracker: MessageTracker, timeoutMs: number): Promise<void> {
  try {
    await waitFor(() => tracker.allDelivered(), { timeoutMs, intervalMs: 50 });
  } catch {
    throw new Error(`Not every message was delivered within ${timeoutMs} ms:\n${tracker.summary()}`);
  }
}

/**
 * The assertions every chaos test makes, returned as a list of problems (empty when all hold): zero
 * missing, zero unexpected, first receptions in send order, the deduplicated sequence exactly the sent
 * one, and gapless offsets from `firstOffset`.
 */
export function deliveryProblems(tracker: MessageTracker, firstOffset = 1): string[] {
  const problems: string[] = [];
  const counts = tracker.counts();
  if (counts.missing !== 0) problems.push(`missing=${counts.missing}`);
  if (counts.outOfOrder !== 0) problems.push(`outOfOrder=${counts.outOfOrder}`);
  if (counts.unexpected !== 0) problems.push(`unexpected=${counts.unexpected}`);
  for (const user of tracker.userIds) {
    const sent = tracker.sentIds(user);
    const got = tracker.deduplicated(user);
    if (JSON.stringify(got) !== JSON.stringify(sent)) {
      problems.push(`${user}: deduplicated sequence differs from the sent one`);
    }
    const offsets = tracker.sentOffsets(user);
    const expected = range(firstOffset, firstOffset + sent.length - 1);
    if (JSON.stringify(offsets) !== JSON.stringify(expected)) {
      problems.push(`${user}: offsets ${JSON.stringify(offsets.slice(0, 10))}… are not gapless`);
    }
  }
  return problems;
}

/**
 * A TCP forwarder in front of several hub instances: each new connection goes to the preferred instance
 * while it is alive, else to the live ones in turn. Connections to an instance that goes away are cut (the
 * instance's side closes them), so the client's reconnect lands on a live instance through the same URL.
 */
export class FailoverProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #turn = 0;
  port = 0;
  /** Connections forwarded, per target port. */
  readonly routed = new Map<number, number>();

  private constructor(
    private readonly preferred: number,
    private readonly live: () => number[],
  ) {
    this.#server = createServer((socket) => this.#onConnection(socket));
  }

  /** `live()` returns the ports of the instances alive now. */
  static async start(preferred: number, live: () => number[]): Promise<FailoverProxy> {
    const proxy = new FailoverProxy(preferred, live);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    const address = proxy.#server.address();
    proxy.port = typeof address === 'object' && address ? address.port : 0;
    return proxy;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  #onConnection(client: Socket): void {
    const live = this.live();
    const target = live.includes(this.preferred) ? this.preferred : live[this.#turn++ % live.length];
    if (target === undefined) {
      client.destroy();
      return;
    }
    this.routed.set(target, (this.routed.get(target) ?? 0) + 1);
    const upstream = createConnection({ port: target, host: '127.0.0.1' });
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * A TCP proxy in front of Redis for the failures a network makes: {@link dropReplies} keeps forwarding
 * what clients send but drops what Redis answers (commands run, their answers never arrive), {@link cut}
 * destroys every connection, {@link hold} accepts new connections without forwarding them until
 * {@link release}.
 */
export class LossyProxy {
  readonly #server: Server;
  readonly #pairs = new Set<{ client: Socket; upstream: Socket }>();
  #held: Socket[] | undefined;
  #dropping = false;
  port = 0;
  /** Bytes of answers dropped. */
  droppedBytes = 0;

  private constructor(private readonly targetPort: number) {
    this.#server = createServer((socket) => this.#onConnection(socket));
  }

  static async start(targetPort: number): Promise<LossyProxy> {
    const proxy = new LossyProxy(targetPort);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    const address = proxy.#server.address();
    proxy.port = typeof address === 'object' && address ? address.port : 0;
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  #onConnection(client: Socket): void {
    client.on('error', () => client.destroy());
    if (this.#held) {
      client.pause();
      this.#held.push(client);
      return;
    }
    this.#forward(client);
  }

  #forward(client: Socket): void {
    const upstream = createConnection({ port: this.targetPort, host: '127.0.0.1' });
    const pair = { client, upstream };
    this.#pairs.add(pair);
    upstream.on('error', () => upstream.destroy());
    const forget = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', forget);
    upstream.on('close', forget);
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (this.#dropping) this.droppedBytes += chunk.length;
      else client.write(chunk);
    });
    client.resume();
  }

  /** From now on, Redis' answers on the current connections are dropped (until {@link cut}). */
  dropReplies(): void {
    this.#dropping = true;
  }

  /** Destroys every proxied connection (both sides) and stops dropping answers. */
  cut(): void {
    for (const pair of [...this.#pairs]) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.#dropping = false;
  }

  hold(): void {
    this.#held ??= [];
  }

  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const socket of held) if (!socket.destroyed) this.#forward(socket);
  }

  get heldCount(): number {
    return this.#held?.filter((s) => !s.destroyed).length ?? 0;
  }

  async close(): Promise<void> {
    for (const socket of this.#held ?? []) socket.destroy();
    this.#held = undefined;
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

export { deletePrefix } from '../helpers/redis.js';

export { onOneRedisAndCluster, type RedisMedium } from '../helpers/redis-cluster.js';
