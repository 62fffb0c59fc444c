/**
 * Reliable lane, what it does when it cannot deliver everything: an in-process hub on the streams
 * backplane (shared Redis, unique prefix).
 * - Retention: with `maxLength: 10`, a user offline while 30 messages are sent is told with `relayhubGap`
 *   (fromOffset 1, toOffset 20, firstAvailableOffset 21) before it gets exactly 21..30, in order; offline
 *   again after acknowledging 30, with 15 more sent, the gap starts after what it acknowledged (31..35)
 *   and it gets exactly 36..45.
 * - Nacks: a handler that throws gets the message again (with backoff) up to `maxAttempts`, then the
 *   message is dead-lettered (the onDeadLetter hook gets the reason, the dead-letter stream has the entry)
 *   and the next message is delivered; a client without a handler nacks too. The lane's metrics count the
 *   redeliveries and dead letters.
 *
 * Every wait is bounded; clients and servers are stopped in afterEach.
 */
import type { HubConnection } from '@microsoft/signalr';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReliableSendResult } from '../../src/backplane/backplane.js';
import { reliableKeys } from '../../src/redis/keys.js';
import type { DeadLetter } from '../../src/backplane/streams/streams-lane.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';
import { deletePrefix, range } from './reliable-kit.js';

const HUB = '/hubs/demo';

interface Meta {
  messageId: string;
  offset: number;
}

/** What one client saw, in arrival order: gaps and messages. */
type Event = { gap: Record<string, unknown> } | { seq: number; offset: number; messageId: string };

describe('reliable lane: retention gaps, nacks and dead letters', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  let redis: Redis | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
    redis?.disconnect();
    if (prefix) await deletePrefix(REDIS_URL, prefix).catch(() => undefined);
    redis = prefix = undefined;
  });

  const start = async (backplane: StreamsBackplane): Promise<TestServer> => {
    const server = await startServer({
      backplane,
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    });
    servers.push(server);
    return server;
  };

  /** A client of `user` that records gaps and `note(seq)` messages; `handler` may throw (a nack). */
  const connect = async (
    server: TestServer,
    user: string,
    events: Event[],
    handler: (seq: number, meta: Meta) => unknown = () => true,
  ): Promise<HubConnection> => {
    const connection = buildClient(server.url(), { token: await signToken(user) });
    connection.on('relayhubGap', (gap: Record<string, unknown>) => {
      events.push({ gap });
    });
    connection.on('note', (seq: number, meta: Meta) => {
      events.push({ seq, offset: meta.offset, messageId: meta.messageId });
      return handler(seq, meta);
    });
    clients.add(connection);
    await connection.start();
    return connection;
  };
  const seqs = (events: Event[]) => events.flatMap((e) => ('seq' in e ? [e.seq] : []));

  it('tells a user whose unacked messages were trimmed, then delivers what is left in order', async () => {
    prefix = uniquePrefix('chaos-retention');
    const server = await start(
      new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix, reliable: { maxLength: 10 } }),
    );
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const inspect = redis;
    const keys = reliableKeys(prefix, HUB).user('carol');
    const ackedOffset = async () => Number((await inspect.get(keys.acked))?.split(' ')[0] ?? 0);
    const hub = server.server.hub(HUB);
    const carol = hub.reliable.user('carol');

    // never connected: 30 messages, of which the inbox keeps the last 10
    const sent: ReliableSendResult[] = [];
    for (const seq of range(1, 30)) sent.push(await carol.send('note', seq));
    expect(sent.map((r) => r.offset)).toEqual(range(1, 30));
    expect(await inspect.xlen(keys.inbox)).toBe(10);

    const events: Event[] = [];
    const first = await connect(server, 'carol', events);
    await waitFor(() => seqs(events).length >= 10, {
      timeoutMs: 5_000,
      message: () => `carol to get 10 messages: ${JSON.stringify(events)}`,
    });
    await waitFor(async () => (await ackedOffset()) === 30, { timeoutMs: 5_000, message: 'ack of 30' });
    console.info(`[reliable-retention] first connect: ${JSON.stringify(events.slice(0, 2))} …`);
    // told first, never silently skipped; then exactly 21..30
    expect(events[0]).toEqual({
      gap: { recovered: false, fromOffset: 1, toOffset: 20, firstAvailableOffset: 21 },
    });
    expect(events.slice(1)).toEqual(
      range(21, 30).map((seq) => ({ seq, offset: seq, messageId: sent[seq - 1]!.messageId })),
    );
    expect((await hub.reliable.metrics()).gaps).toBe(1);

    // offline again with 30 acknowledged: 15 more, of which 10 are kept; the gap starts after the ack
    await first.stop();
    await waitFor(async () => (await inspect.scard(keys.presence)) === 0, {
      timeoutMs: 5_000,
      message: 'carol to be offline',
    });
    for (const seq of range(31, 45)) await carol.send('note', seq);
    const later: Event[] = [];
    await connect(server, 'carol', later);
    await waitFor(() => seqs(later).length >= 10, {
      timeoutMs: 5_000,
      message: () => `carol to get 10 more: ${JSON.stringify(later)}`,
    });
    await waitFor(async () => (await ackedOffset()) === 45, { timeoutMs: 5_000, message: 'ack of 45' });
    expect(later[0]).toEqual({
      gap: { recovered: false, fromOffset: 31, toOffset: 35, firstAvailableOffset: 36 },
    });
    expect(seqs(later)).toEqual(range(36, 45));
    expect(later).toHaveLength(11);
    expect((await hub.reliable.metrics()).gaps).toBe(2);
  });

  it('redelivers a nacked message, dead-letters it after maxAttempts, then delivers the next', async () => {
    prefix = uniquePrefix('chaos-nack');
    const letters: DeadLetter[] = [];
    const maxAttempts = 3;
    const server = await start(
      new StreamsBackplane({
        redisUrl: REDIS_URL,
        channelPrefix: prefix,
        reliable: { maxAttempts, retryDelayMs: 20, maxRetryDelayMs: 100 },
        onDeadLetter: (letter) => {
          letters.push(letter);
        },
      }),
    );
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const inspect = redis;
    const keys = reliableKeys(prefix, HUB);
    const hub = server.server.hub(HUB);

    // dave's handler throws for message 2; erin's client has no handler at all
    const dave: Event[] = [];
    const attempts = new Map<number, number>();
    await connect(server, 'dave', dave, (seq) => {
      attempts.set(seq, (attempts.get(seq) ?? 0) + 1);
      if (seq === 2) throw new Error(`poison ${seq}`);
      return true;
    });
    const erinClient = buildClient(server.url(), { token: await signToken('erin') });
    clients.add(erinClient);
    await erinClient.start();

    const sentDave: ReliableSendResult[] = [];
    for (const seq of [1, 2, 3]) sentDave.push(await hub.reliable.user('dave').send('note', seq));
    const sentErin = await hub.reliable.user('erin').send('note', 1);
    await waitFor(() => seqs(dave).includes(3) && letters.length === 2, {
      timeoutMs: 10_000,
      message: () => `dave to get 3 and two dead letters: ${JSON.stringify(dave)} ${JSON.stringify(letters)}`,
    });
    await waitFor(async () => (await inspect.get(keys.user('dave').acked))?.startsWith('3 '), {
      timeoutMs: 5_000,
      message: "dave's ack of 3",
    });
    const metrics = await hub.reliable.metrics();
    const deadStream = (await inspect.xrange(keys.deadLetters, '-', '+')).map(([, fields]) => {
      const map = new Map<string, string>();
      for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i]!, fields[i + 1]!);
      return Object.fromEntries(map);
    });
    console.info(
      `[reliable-retention: nacks] dave got ${JSON.stringify(seqs(dave))}; attempts ${JSON.stringify([
        ...attempts,
      ])}; metrics ${JSON.stringify(metrics)}; dead letters ${JSON.stringify(letters.map((l) => l.reason))}`,
    );

    // message 2: delivered maxAttempts times, in order, nothing after it before it was given up on
    expect(seqs(dave)).toEqual([1, ...Array<number>(maxAttempts).fill(2), 3]);
    expect(attempts.get(2)).toBe(maxAttempts);
    const daveLetter = letters.find((l) => l.userId === 'dave');
    expect(daveLetter).toMatchObject({
      userId: 'dave',
      offset: 2,
      messageId: sentDave[1]!.messageId,
      target: 'note',
      args: [2],
    });
    expect(daveLetter?.reason).toMatch(/poison 2/);
    const erinLetter = letters.find((l) => l.userId === 'erin');
    expect(erinLetter).toMatchObject({ offset: 1, messageId: sentErin.messageId, args: [1] });
    expect(erinLetter?.reason).toMatch(/didn't provide a result/);
    expect(deadStream).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ u: 'dave', o: '2', m: sentDave[1]!.messageId, t: 'note', a: '[2]' }),
        expect.objectContaining({ u: 'erin', o: '1', m: sentErin.messageId, t: 'note', a: '[1]' }),
      ]),
    );
    expect(deadStream).toHaveLength(2);
    expect(deadStream.find((e) => e.u === 'dave')?.r).toMatch(/poison 2/);
    // 2 × (maxAttempts - 1) redeliveries; delivered counts every attempt (dave 1+3+1, erin 3); acked
    // counts each message whose position was recorded once (dave 1, 2 dead, 3; erin 1 dead)
    expect(metrics).toMatchObject({
      redeliveries: 2 * (maxAttempts - 1),
      deadLetters: 2,
      delivered: 5 + maxAttempts,
      acked: 4,
    });
    expect(await inspect.get(keys.user('erin').acked)).toMatch(/^1 /);
  });
});
