/**
 * Wake-ups that carry their messages: a user whose session is caught up gets each next message from the
 * wake-up itself, without the lane reading the inbox, and still in order and exactly once. Observed with
 * MONITOR on the shared Redis, filtered by this test's unique prefix: the inbox reads are the XRANGEs with a
 * COUNT (the first read of a drain, and the read-ahead); the ack's XRANGE of one entry is not one.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { reliableKeys } from '../../src/redis/keys.js';
import { buildClient } from '../helpers/client.js';
import { inProcessHubs } from '../helpers/in-process-hubs.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/demo';

describe('reliable lane: wake-ups that carry their messages', () => {
  const hubs = inProcessHubs();
  let monitor: Redis | undefined;

  afterEach(async () => {
    monitor?.disconnect();
    await hubs.close();
  });

  it('delivers each next message of a caught-up user without reading the inbox, in order, once', async () => {
    const prefix = uniquePrefix('carried');
    const server = await hubs.start(
      new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      prefix,
    );
    const hub = server.server.hub(HUB);
    const inbox = reliableKeys(prefix, HUB).user('cara').inbox;
    const reads: string[] = [];
    monitor = await new Redis(REDIS_URL, { lazyConnect: true }).monitor();
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args[0]?.toLowerCase() === 'xrange' && args[1] === inbox && args.includes('COUNT')) {
        reads.push(args.join(' '));
      }
    });

    const seen: number[] = [];
    const connection = buildClient(server.url(), { token: await signToken('cara') });
    connection.on('note', (n: number) => {
      seen.push(n);
      return true;
    });
    hubs.clients.add(connection);
    await connection.start();
    const acked = async () =>
      Number((await hubs.inspect().get(reliableKeys(prefix, HUB).user('cara').acked))?.split(' ')[0] ?? 0);

    // the first message starts the session: it reads the inbox from the acked offset
    await hub.reliable.user('cara').send('note', 1);
    await waitFor(async () => (await acked()) === 1, { timeoutMs: 5_000, message: 'ack of 1' });
    await waitFor(() => reads.length >= 1, { timeoutMs: 2_000, message: 'the first read seen by MONITOR' });
    const readsAfterFirst = reads.length;

    // then one message at a time, and three in one send call: each from its wake-up
    for (let n = 2; n <= 6; n++) {
      await hub.reliable.user('cara').send('note', n);
      await waitFor(async () => (await acked()) === n, { timeoutMs: 5_000, message: `ack of ${n}` });
    }
    // note: sends of one event-loop turn form one batch: one send script, one wake-up carrying all three
    await Promise.all([7, 8, 9].map((n) => hub.reliable.user('cara').send('note', n)));
    await waitFor(async () => (await acked()) === 9, { timeoutMs: 5_000, message: 'ack of 9' });

    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(reads.slice(readsAfterFirst), 'inbox reads after the session was caught up').toEqual([]);
  });
});
