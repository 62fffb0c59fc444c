/**
 * An endpoint that is down when the hub starts: the hub starts on the others (one hub, in this process,
 * on an `EndpointsBackplane` of kind `streams` over two private redis-servers), reports the missing one
 * offline, and attaches it once its Redis answers: broadcasts are then published there too, and the
 * reliable lane of a user whose inbox lives there (refused meanwhile) delivers.
 *
 * Never touches the shared Redis.
 */
import type { HubConnection } from '@microsoft/signalr';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  EndpointsBackplane,
  type EndpointsHealth,
} from '../../src/backplane/endpoints/endpoints-backplane.js';
import { isRelayhubError } from '../../src/errors.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { inboxEndpointOf } from '../../src/redis/endpoints.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { uniquePrefix } from '../helpers/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('endpoints: one endpoint down at start', () => {
  const clients = new ClientPool();
  let a: RedisServer | undefined;
  let b: RedisServer | undefined;
  let hub: TestServer | undefined;
  let watcher: Redis | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await hub?.close();
    watcher?.disconnect();
    await Promise.all([a?.dispose(), b?.dispose()]);
    a = b = hub = watcher = undefined;
  });

  it('starts without it, reports it offline, and attaches it (pubsub and reliable lane) once it answers', async () => {
    [a, b] = await Promise.all([startRedisServer(), startRedisServer()]);
    await b.stop();
    const endpoints = [
      { name: 'a', redis: { url: a.url } },
      { name: 'b', redis: { url: b.url }, type: 'secondary' as const },
    ];
    const channelPrefix = uniquePrefix('endpoints-late');
    hub = await startServer({
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
      backplane: new EndpointsBackplane({
        kind: 'streams',
        endpoints,
        channelPrefix,
        connectTimeoutMs: 1_000,
      }),
    });
    const server = hub.server;
    const health = () => server.backplaneHealth() as EndpointsHealth;
    const b0 = health().endpoints.find((e) => e.name === 'b');
    expect(b0).toMatchObject({ online: false, listening: false, outages: 1 });
    expect(health().status).toBe('ready');

    const user = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8'].find(
      (u) => inboxEndpointOf(u, endpoints).name === 'b',
    ) as string;
    const connection: HubConnection = clients.add(buildClient(hub.url(), { token: await signToken(user) }));
    const got: unknown[] = [];
    connection.on('note', (text: unknown) => {
      got.push(text);
      return true;
    });
    await connection.start();
    const demo = server.hub('/hubs/demo');
    const refused = await demo.reliable.send({ userId: user, target: 'note', args: ['early'] }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(isRelayhubError(refused) && refused.code).toBe('ERR_BACKPLANE_UNAVAILABLE');
    expect(String((refused as Error).message)).toContain("on Redis endpoint 'b', which is offline");

    await b.start();
    await waitFor(() => health().endpoints.find((e) => e.name === 'b')?.online, {
      timeoutMs: 10_000,
      message: 'endpoint b to be attached and online',
    });
    // the lane on b announced the user that was already connected: a reliable send now reaches it
    const sent = await demo.reliable.send({ userId: user, target: 'note', args: ['late'] });
    expect(sent.offset).toBe(1);
    await waitFor(() => got.includes('late'), { message: 'the reliable message on b to arrive' });
    expect(got).toEqual(['late']);

    // broadcasts are published on b too now
    watcher = new Redis(b.url);
    const heard: string[] = [];
    watcher.on('pmessage', (_pattern: string, channel: string) => heard.push(channel));
    await watcher.psubscribe(`${channelPrefix}*`);
    await demo.clients.all.send('message', 'server', 'hello');
    await waitFor(() => heard.length > 0, { message: 'a broadcast to be published on b' });
    expect(health().endpoints.map((e) => [e.name, e.online, e.listening])).toEqual([
      ['a', true, true],
      ['b', true, false],
    ]);
  }, 30_000);
});
