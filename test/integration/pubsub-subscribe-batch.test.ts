/**
 * The PUB/SUB bus joins the SUBSCRIBEs asked for in one event-loop turn into one command (a burst of
 * connections registering): every channel is subscribed and delivers, and a channel unsubscribed in the
 * same turn it was subscribed ends up not subscribed (Redis sees the two in the order they were asked).
 */
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PubSubBus } from '../../src/redis/pubsub.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait-for.js';

describe('PubSubBus: subscriptions of one turn', () => {
  let bus: PubSubBus | undefined;
  let probe: Redis | undefined;

  afterEach(async () => {
    await bus?.close();
    probe?.disconnect();
    bus = undefined;
    probe = undefined;
  });

  async function start(): Promise<{ bus: PubSubBus; got: Map<string, string[]>; probe: Redis }> {
    const got = new Map<string, string[]>();
    const b = new PubSubBus(
      { redisUrl: REDIS_URL },
      'test',
      {
        message: (channel, message) => got.set(channel, [...(got.get(channel) ?? []), message]),
        lost: () => undefined,
        restored: () => undefined,
      },
      pino({ level: 'silent' }),
    );
    await b.connect();
    bus = b;
    probe = new Redis(REDIS_URL);
    return { bus: b, got, probe };
  }

  const numsub = async (redis: Redis, channel: string): Promise<number> =>
    Number(((await redis.pubsub('NUMSUB', channel)) as [string, number])[1]);

  it('subscribes every channel asked for in one turn, and each one delivers', async () => {
    const { bus: b, got, probe: redis } = await start();
    const prefix = uniquePrefix('subbatch');
    const channels = Array.from({ length: 1_500 }, (_, i) => `${prefix}:${i}`);
    await Promise.all(channels.map((channel) => b.subscribe(channel)));
    for (const channel of [channels[0], channels[999], channels[1_000], channels[1_499]] as string[]) {
      expect(await numsub(redis, channel)).toBe(1);
    }
    await Promise.all(channels.map((channel) => redis.publish(channel, `to ${channel}`)));
    await waitFor(() => got.size === channels.length);
    for (const channel of channels) expect(got.get(channel)).toEqual([`to ${channel}`]);
  });

  it('leaves a channel unsubscribed when it is unsubscribed in the turn it was subscribed', async () => {
    const { bus: b, probe: redis } = await start();
    const prefix = uniquePrefix('subbatch');
    const kept = `${prefix}:kept`;
    const dropped = `${prefix}:dropped`;
    const subscribed = Promise.all([b.subscribe(kept), b.subscribe(dropped)]);
    const unsubscribed = b.unsubscribe([dropped]);
    await Promise.all([subscribed, unsubscribed]);
    expect(await numsub(redis, kept)).toBe(1);
    expect(await numsub(redis, dropped)).toBe(0);
  });
});
