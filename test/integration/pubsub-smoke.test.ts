import { afterEach, describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { ClientPool, record } from '../helpers/client.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('pubsub smoke', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  afterEach(async () => {
    await clients.stopAll();
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  it('broadcasts and joins groups across two instances', async () => {
    const channelPrefix = uniquePrefix('smoke');
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({ backplane: new PubSubBackplane({ redisUrl: REDIS_URL, channelPrefix }) }),
      );
    }
    const a = await clients.connect(servers[0]!.url());
    const b = await clients.connect(servers[1]!.url());
    const gotB = record(b, 'message');
    await a.invoke('SendToAll', 'hi');
    await waitFor(() => gotB.length === 1);
    await b.invoke('JoinGroup', 'g');
    await a.invoke('SendToGroup', 'g', 'to-g');
    await waitFor(() => gotB.length === 2);
    expect(gotB[1]).toEqual([a.connectionId, 'to-g']);
    const answer = await servers[0]!.server
      .hub('/hubs/demo')
      .groups.add('nobody', 'g')
      .catch((e) => e);
    expect(answer.code).toBe('ERR_CONNECTION_NOT_FOUND');
  });
});
