import { describe, expect, it } from 'vitest';
import { RelayhubError } from '../../src/errors.js';
import {
  createOutbox,
  DEFAULT_OUTBOX_TTL_MS,
  enqueue,
  NOTIFY_THROTTLE_MS,
  OUTBOX_CHANNEL,
  type OutboxMessage,
  type PgQueryable,
} from '../../src/outbox/enqueue.js';
import { fnv1a, PARTITIONS, partitionOf } from '../../src/outbox/schema.js';

/** A `pg` client stand-in that records its queries and answers the INSERT with id 7. */
function fakeClient(): PgQueryable & { calls: { text: string; values?: unknown[] }[] } {
  const calls: { text: string; values?: unknown[] }[] = [];
  return {
    calls,
    query: async (text: string, values?: unknown[]) => {
      calls.push({ text, ...(values ? { values } : {}) });
      return { rows: text.includes('INSERT') ? [{ id: '7' }] : [], rowCount: 1 } as never;
    },
  };
}

async function rejection(message: unknown): Promise<RelayhubError> {
  const client = fakeClient();
  const error = await enqueue(client, message as OutboxMessage).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RelayhubError);
  // nothing reached the database: the caller's transaction is not touched by a message refused up front
  expect(client.calls).toEqual([]);
  return error as RelayhubError;
}

const valid: OutboxMessage = { userId: 'alice', target: 'orderStatus', args: [{ orderId: '1' }] };

describe('enqueue: validation (ERR_INVALID_MESSAGE before any query)', () => {
  it.each([
    ['empty', ''],
    ['with braces', 'a{b}'],
    ['with an opening brace', 'a{'],
    ['with a space', 'a b'],
    ['with a newline', 'a\nb'],
    ['with a tab', '\tb'],
    ['257 characters', 'u'.repeat(257)],
    ['a number', 42],
    ['missing', undefined],
    ['null', null],
  ])('refuses a userId %s', async (_name, userId) => {
    const error = await rejection({ ...valid, userId });
    expect(error.code).toBe('ERR_INVALID_MESSAGE');
    expect(error.message).toBe(
      'Outbox message has a userId that is not 1-256 characters without braces or whitespace.',
    );
  });

  it.each([
    ['empty', ''],
    ['a number', 1],
    ['missing', undefined],
  ])('refuses a target %s', async (_name, target) => {
    const error = await rejection({ ...valid, target });
    expect(error.code).toBe('ERR_INVALID_MESSAGE');
    expect(error.message).toBe('Outbox message has no target.');
  });

  it.each([
    ['an object', { a: 1 }],
    ['a string', '[1]'],
    ['null', null],
    ['missing', undefined],
  ])('refuses args that are %s', async (_name, args) => {
    const error = await rejection({ ...valid, args });
    expect(error.code).toBe('ERR_INVALID_MESSAGE');
    expect(error.message).toBe("Outbox message has 'args' that is not an array.");
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])('refuses ttlMs %s', async (ttlMs) => {
    const error = await rejection({ ...valid, ttlMs });
    expect(error.code).toBe('ERR_INVALID_MESSAGE');
    expect(error.message).toBe("Outbox message has a 'ttlMs' that is not a positive integer.");
  });

  it('accepts a 256-character user id with any non-space, non-brace characters', async () => {
    const client = fakeClient();
    await expect(enqueue(client, { ...valid, userId: 'ü:/#|'.padEnd(256, 'x') })).resolves.toEqual({
      id: '7',
    });
  });
});

describe('enqueue: with a pg client', () => {
  it('inserts the row with its partition, JSON args, key and expiry, then notifies the worker', async () => {
    // note: past any earlier test's notification, so that this one is not throttled.
    await new Promise((resolve) => setTimeout(resolve, NOTIFY_THROTTLE_MS + 1));
    const client = fakeClient();
    const before = Date.now();
    const result = await enqueue(client, { ...valid, key: 'order-1-shipped', ttlMs: 60_000 });
    expect(result).toEqual({ id: '7' });
    expect(client.calls).toHaveLength(2);
    const [insert, notify] = client.calls;
    expect(insert?.text).toMatch(
      /^INSERT INTO relayhub_outbox \(channel_prefix, hub, user_id, partition, target, args, message_key/,
    );
    const values = insert?.values ?? [];
    expect(values.slice(0, 7)).toEqual([
      'relayhub',
      '/hubs/demo',
      'alice',
      partitionOf('alice'),
      'orderStatus',
      '[{"orderId":"1"}]',
      'order-1-shipped',
    ]);
    const expiresAt = (values[7] as Date).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 60_000);
    expect(notify?.text).toBe(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
  });

  it('notifies at most once per NOTIFY_THROTTLE_MS in a process, and again after it', async () => {
    await new Promise((resolve) => setTimeout(resolve, NOTIFY_THROTTLE_MS + 1));
    const first = fakeClient();
    const second = fakeClient();
    await enqueue(first, valid);
    await enqueue(second, valid);
    expect(first.calls.map((c) => c.text)).toContain(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
    expect(second.calls).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, NOTIFY_THROTTLE_MS + 1));
    const third = fakeClient();
    await enqueue(third, valid);
    expect(third.calls[1]?.text).toBe(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
  });

  it('defaults to no key (the worker then uses outbox:<id>) and a 24 h TTL', async () => {
    const client = fakeClient();
    const before = Date.now();
    await enqueue(client, valid);
    const values = client.calls[0]?.values ?? [];
    expect(values[6]).toBeNull();
    expect((values[7] as Date).getTime()).toBeGreaterThanOrEqual(before + DEFAULT_OUTBOX_TTL_MS);
    expect(DEFAULT_OUTBOX_TTL_MS).toBe(24 * 60 * 60 * 1000);
  });

  it('lets a database error through (it aborts the caller’s transaction)', async () => {
    const failing: PgQueryable = {
      query: async () => {
        throw new Error('current transaction is aborted');
      },
    };
    await expect(enqueue(failing, valid)).rejects.toThrow('current transaction is aborted');
  });
});

describe('partitionOf / fnv1a', () => {
  it('is 32-bit FNV-1a', () => {
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
    expect(fnv1a('foobar')).toBe(0xbf9cf968);
  });

  it('maps every user to one of 64 partitions, stably, and spreads users across them', () => {
    expect(PARTITIONS).toBe(64);
    const counts = new Array<number>(PARTITIONS).fill(0);
    for (let i = 0; i < 6_400; i++) {
      const p = partitionOf(`user-${i}`);
      expect(p).toBe(partitionOf(`user-${i}`));
      expect(Number.isInteger(p) && p >= 0 && p < PARTITIONS).toBe(true);
      counts[p] = (counts[p] ?? 0) + 1;
    }
    // every partition gets some users, none gets more than three times its fair share
    expect(Math.min(...counts)).toBeGreaterThan(0);
    expect(Math.max(...counts)).toBeLessThan(300);
  });
});

describe('enqueue: the deployment a row belongs to', () => {
  it("records the deployment's prefix and hub, and a message's own hub over the default", async () => {
    const client = fakeClient();
    await enqueue(client, valid, { channelPrefix: 'shop', hub: '/hubs/orders' });
    await enqueue(client, { ...valid, hub: '/hubs/chat' }, { channelPrefix: 'shop', hub: '/hubs/orders' });
    const inserts = client.calls.filter((c) => c.text.startsWith('INSERT'));
    expect(inserts.map((c) => c.values?.slice(0, 3))).toEqual([
      ['shop', '/hubs/orders', 'alice'],
      ['shop', '/hubs/chat', 'alice'],
    ]);
  });

  it('createOutbox checks the deployment once and fills it in', async () => {
    expect(createOutbox()).toMatchObject({ channelPrefix: 'relayhub', hub: '/hubs/demo' });
    const outbox = createOutbox({ channelPrefix: 'shop' });
    const client = fakeClient();
    await outbox.enqueue(client, valid);
    expect(client.calls[0]?.values?.slice(0, 2)).toEqual(['shop', '/hubs/demo']);
    expect(() => createOutbox({ channelPrefix: 'a b' })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }) as Error,
    );
    expect(() => createOutbox({ hub: 'hubs/no-slash' })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }) as Error,
    );
  });

  it.each([['no-slash'], ['/a b'], ['/a{b}'], [42]])('refuses a message hub %s', async (hub) => {
    const error = await rejection({ ...valid, hub });
    expect(error.code).toBe('ERR_INVALID_MESSAGE');
    expect(error.message).toBe("Outbox message has a 'hub' that is not a path such as '/hubs/orders'.");
  });
});
