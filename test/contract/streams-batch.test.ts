/**
 * `ReliableProducer.sendMany` / `send` against the shared Redis (unique prefix), read back from the users'
 * inboxes:
 * - outcomes line up with the input; each user's messages get consecutive offsets in the order given,
 *   users interleaved; a repeated key (in the same batch or a later one) answers the first offset as a
 *   duplicate and adds nothing;
 * - a message that cannot be sent (arguments JSON cannot encode) fails, and so do its user's later
 *   messages of the batch, while its earlier ones and other users' messages are sent;
 * - concurrent `send` calls (batched together) keep each user's order.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReliableMessage } from '../../src/backplane/backplane.js';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { reliableKeys } from '../../src/redis/keys.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';

const HUB = '/hubs/demo';

describe('reliable producer: batches', () => {
  let producer: ReliableProducer | undefined;
  let redis: Redis | undefined;
  let prefix: string | undefined;

  afterEach(async () => {
    await producer?.close();
    redis?.disconnect();
    if (prefix) await deletePrefix(REDIS_URL, prefix).catch(() => undefined);
    producer = redis = prefix = undefined;
  });

  const setUp = () => {
    prefix = uniquePrefix('batch');
    producer = new ReliableProducer({ redisUrl: REDIS_URL, channelPrefix: prefix, hub: HUB });
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const keys = reliableKeys(prefix, HUB);
    /** The user's inbox as [offset, message id, args JSON]. */
    const inbox = async (user: string) =>
      (await redis!.xrange(keys.user(user).inbox, '-', '+')).map(([, fields]) => {
        const map = new Map<string, string>();
        for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i]!, fields[i + 1]!);
        return [Number(map.get('o')), map.get('m'), map.get('a')];
      });
    return { producer, inbox };
  };

  it('lines outcomes up with the input, keeps per-user order, drops repeated keys', async () => {
    const { producer, inbox } = setUp();
    const messages: ReliableMessage[] = [];
    for (let i = 0; i < 30; i++)
      messages.push({
        userId: `u${i % 3}`,
        target: 'note',
        args: [i],
        key: `k${i % 3}-${Math.floor(i / 3)}`,
      });
    messages.push({ userId: 'u1', target: 'note', args: ['again'], key: 'k1-0' });
    const outcomes = await producer.sendMany(messages);
    expect(outcomes).toHaveLength(31);
    for (let i = 0; i < 30; i++) {
      expect(outcomes[i]).toEqual({
        ok: true,
        result: {
          offset: Math.floor(i / 3) + 1,
          messageId: `k${i % 3}-${Math.floor(i / 3)}`,
          duplicate: false,
        },
      });
    }
    expect(outcomes[30]).toEqual({ ok: true, result: { offset: 1, messageId: 'k1-0', duplicate: true } });
    const later = await producer.sendMany([{ userId: 'u2', target: 'note', args: ['late'], key: 'k2-3' }]);
    expect(later[0]).toEqual({ ok: true, result: { offset: 4, messageId: 'k2-3', duplicate: true } });
    for (const u of [0, 1, 2]) {
      expect(await inbox(`u${u}`)).toEqual(
        Array.from({ length: 10 }, (_, n) => [n + 1, `k${u}-${n}`, JSON.stringify([n * 3 + u])]),
      );
    }
  });

  it("a message that cannot be sent fails with its user's later ones; the rest are sent", async () => {
    const { producer, inbox } = setUp();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const outcomes = await producer.sendMany([
      { userId: 'a', target: 'note', args: [1] },
      { userId: 'b', target: 'note', args: [1] },
      { userId: 'a', target: 'note', args: [cyclic] },
      { userId: 'b', target: 'note', args: [2] },
      { userId: 'a', target: 'note', args: [3] },
      { userId: 'bad user', target: 'note', args: [1] },
    ]);
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, false, true, false, false]);
    const failure = outcomes[2] as { ok: false; error: { code: string } };
    expect(failure.error.code).toBe('ERR_INVALID_MESSAGE');
    expect(outcomes[4]).toEqual(outcomes[2]);
    expect((outcomes[5] as { ok: false; error: { code: string } }).error.code).toBe('ERR_INVALID_MESSAGE');
    expect((await inbox('a')).map(([o, , a]) => [o, a])).toEqual([[1, '[1]']]);
    expect((await inbox('b')).map(([o, , a]) => [o, a])).toEqual([
      [1, '[1]'],
      [2, '[2]'],
    ]);
  });

  it('concurrent sends are batched and keep each user its order', async () => {
    const { producer, inbox } = setUp();
    const results = await Promise.all(
      Array.from({ length: 600 }, (_, i) =>
        producer.send({ userId: `c${i % 2}`, target: 'note', args: [i] }),
      ),
    );
    results.forEach((r, i) => expect(r.offset).toBe(Math.floor(i / 2) + 1));
    for (const u of [0, 1]) {
      expect((await inbox(`c${u}`)).map(([, , a]) => a)).toEqual(
        Array.from({ length: 300 }, (_, n) => JSON.stringify([n * 2 + u])),
      );
    }
  });
});
