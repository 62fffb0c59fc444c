/**
 * The reliable lane's per-user window and what it leaves in Redis: an in-process hub on the streams
 * backplane (shared Redis, unique prefix) and the official client.
 * - Window: 300 messages queued for one user whose handler holds its answers: the client gets more than one
 *   at a time but never more than `window`, every message in offset order; answers given newest first
 *   advance the acked offset only over a contiguous run (never past an unanswered message). With
 *   `window: 1` there is never more than one in flight.
 * - Redis memory: once everything is acknowledged, the user's inbox holds no entry, the instance's
 *   delivery stream holds no wake-up, and the idempotency keys of keyed sends are one key per user (a
 *   repeated key is still dropped).
 * - `RELIABLE_WINDOW` / `reliable.window`: the default, the environment variable, and bad values.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { DEFAULT_WINDOW, defaultWindow } from '../../src/backplane/streams/streams-lane.js';
import { reliableKeys } from '../../src/redis/keys.js';
import { buildClient } from '../helpers/client.js';
import { inProcessHubs } from '../helpers/in-process-hubs.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/demo';

interface Meta {
  messageId: string;
  offset: number;
}

describe('reliable lane: the per-user window', () => {
  const hubs = inProcessHubs();
  const clients = hubs.clients;
  let prefix: string | undefined;

  afterEach(() => hubs.close());

  const start = (window: number): Promise<TestServer> => {
    prefix = uniquePrefix('window');
    return hubs.start(
      new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix, reliable: { window } }),
      prefix,
    );
  };

  /**
   * A client of `user` whose handler records each message and answers only when `release` is called
   * (answers are given in the order `release` picks).
   */
  const heldClient = async (server: TestServer, user: string) => {
    const seen: number[] = [];
    const held = new Map<number, () => void>();
    let maxHeld = 0;
    const connection = buildClient(server.url(), { token: await signToken(user) });
    connection.on('note', (_seq: number, meta: Meta) => {
      seen.push(meta.offset);
      return new Promise<boolean>((resolve) => {
        held.set(meta.offset, () => resolve(true));
        maxHeld = Math.max(maxHeld, held.size);
      });
    });
    clients.add(connection);
    await connection.start();
    const release = (offsets: number[]) => {
      for (const offset of offsets) {
        held.get(offset)?.();
        held.delete(offset);
      }
    };
    return { seen, held, release, maxHeld: () => maxHeld };
  };

  const ackedOffset = async (user: string) =>
    Number((await hubs.inspect().get(reliableKeys(prefix!, HUB).user(user).acked))?.split(' ')[0] ?? 0);

  it('keeps up to `window` in flight, in offset order; acks advance over contiguous runs only', async () => {
    const window = 8;
    const server = await start(window);
    const hub = server.server.hub(HUB);
    const total = 300;
    for (let i = 1; i <= total; i++) await hub.reliable.user('ann').send('note', i);
    const ann = await heldClient(server, 'ann');

    // answers newest first: the oldest held message stays unanswered, so the acked offset must not pass it
    let answered = 0;
    while (answered < total) {
      await waitFor(() => ann.held.size > 0, { timeoutMs: 5_000, message: `more of ann's messages` });
      const offsets = [...ann.held.keys()].sort((a, b) => b - a);
      const oldest = offsets.at(-1)!;
      ann.release(offsets.slice(0, -1));
      const acked = await ackedOffset('ann');
      expect(acked, 'acked offset while the oldest held message is unanswered').toBeLessThan(oldest);
      ann.release([oldest]);
      answered += offsets.length;
    }
    await waitFor(async () => (await ackedOffset('ann')) === total, {
      timeoutMs: 5_000,
      message: 'ack of all',
    });

    expect(ann.seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(ann.maxHeld()).toBeGreaterThan(1);
    expect(ann.maxHeld()).toBeLessThanOrEqual(window);
  });

  it('with window 1, one message at a time', async () => {
    const server = await start(1);
    const hub = server.server.hub(HUB);
    for (let i = 1; i <= 40; i++) await hub.reliable.user('bob').send('note', i);
    const bob = await heldClient(server, 'bob');
    for (let answered = 0; answered < 40; answered++) {
      await waitFor(() => bob.held.size > 0, { timeoutMs: 5_000, message: `bob's message ${answered + 1}` });
      bob.release([...bob.held.keys()]);
    }
    await waitFor(async () => (await ackedOffset('bob')) === 40, { timeoutMs: 5_000, message: 'ack of 40' });
    expect(bob.seen).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(bob.maxHeld()).toBe(1);
  });

  it('leaves no acked entry, no consumed wake-up and one idempotency key per user in Redis', async () => {
    const server = await start(DEFAULT_WINDOW);
    const hub = server.server.hub(HUB);
    const keys = reliableKeys(prefix!, HUB);
    const connection = buildClient(server.url(), { token: await signToken('cid') });
    const seen: number[] = [];
    connection.on('note', (seq: number) => {
      seen.push(seq);
      return true;
    });
    clients.add(connection);
    await connection.start();
    for (let i = 1; i <= 50; i++)
      await hub.reliable.send({ userId: 'cid', target: 'note', args: [i], key: `k${i}` });
    await waitFor(async () => (await ackedOffset('cid')) === 50, { timeoutMs: 5_000, message: 'ack of 50' });

    const user = keys.user('cid');
    await waitFor(async () => (await hubs.inspect().xlen(user.inbox)) === 0, {
      timeoutMs: 5_000,
      message: 'acked inbox entries removed',
    });
    const streams = (await hubs.inspect().keys(`${prefix}:${HUB}:rl:{i:*}:deliveries`)) as string[];
    expect(streams).toHaveLength(1);
    await waitFor(async () => (await hubs.inspect().xlen(streams[0]!)) === 0, {
      timeoutMs: 5_000,
      message: 'consumed wake-ups deleted',
    });
    // idempotency: one sorted set for the user, no key per message; a repeated key is still dropped
    expect(await hubs.inspect().keys(`${prefix}:${HUB}:rl:{u:cid}:dedup:*`)).toEqual([]);
    expect(await hubs.inspect().zcard(user.sent)).toBe(50);
    const again = await hub.reliable.send({ userId: 'cid', target: 'note', args: [7], key: 'k7' });
    expect(again).toMatchObject({ duplicate: true, offset: 7, messageId: 'k7' });
    expect(await hubs.inspect().get(user.seq)).toBe('50');
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });

  it('takes the window from reliable.window, else RELIABLE_WINDOW, else 32; refuses bad values', () => {
    expect(DEFAULT_WINDOW).toBe(32);
    expect(defaultWindow({})).toBe(32);
    expect(defaultWindow({ RELIABLE_WINDOW: '1' })).toBe(1);
    expect(() => defaultWindow({ RELIABLE_WINDOW: 'many' })).toThrow(/reliable.window/);
    expect(() => new StreamsBackplane({ redisUrl: REDIS_URL, reliable: { window: 0 } })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }),
    );
  });
});
