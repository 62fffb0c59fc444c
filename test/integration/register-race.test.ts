/**
 * The start-up race of a connection: its socket drops right after the handshake request, while
 * `register()` still waits on Redis. The connection has ended and `userLeft` has run by the time the
 * subscriptions are in place; the instance must then not announce the user (no reliable-lane session, no
 * presence entry that its heartbeat would keep re-adding).
 */
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reliableKeys } from '../../src/redis/keys.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import type { Authenticate } from '../../src/hub/auth.js';
import { handshakeRequest, socketUrl } from '../helpers/raw-client.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const USERS = 200;

/** The user is whoever the `user` query parameter says (a test stand-in for a JWT). */
const byQuery: Authenticate = async (_req, url) => ({
  userId: url.searchParams.get('user') ?? 'x',
  claims: {},
});

/** Opens a socket as `user`, sends the handshake request and drops the socket at once. */
async function connectAndDrop(server: TestServer, user: string): Promise<void> {
  const ws = new WebSocket(`${socketUrl(server.url(DEMO_HUB_PATH))}?user=${user}`);
  ws.on('error', () => undefined);
  await new Promise((resolve) => ws.once('open', resolve));
  ws.send(handshakeRequest());
  ws.terminate();
}

/** Connects as `user` and completes the handshake (the socket stays open). */
async function connectAndStay(server: TestServer, user: string): Promise<WebSocket> {
  const ws = new WebSocket(`${socketUrl(server.url(DEMO_HUB_PATH))}?user=${user}`);
  await new Promise((resolve) => ws.once('open', resolve));
  const answered = new Promise((resolve) => ws.once('message', resolve));
  ws.send(handshakeRequest());
  await answered;
  return ws;
}

describe('a socket that drops right after its handshake', () => {
  const prefix = uniquePrefix('race');
  const keys = reliableKeys(prefix, DEMO_HUB_PATH);
  let server: TestServer;
  let redis: Redis;

  beforeAll(async () => {
    server = await startServer({
      authenticate: byQuery,
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
    });
    redis = new Redis(REDIS_URL);
  });

  afterAll(async () => {
    await server.close();
    redis.disconnect();
    await deletePrefix(REDIS_URL, prefix);
  });

  it('leaves no reliable-lane session or presence behind, for any of 200 users', async () => {
    const users = Array.from({ length: USERS }, (_, i) => `racer-${i}`);
    await Promise.all(users.map((user) => connectAndDrop(server, user)));
    await waitFor(() => server.server.connectionCount === 0, { timeoutMs: 10_000 });

    // note: a sentinel user connects after every racer: its subscriptions are answered after theirs (one
    // subscriber connection, in order) and its presence SADD goes out after any racer's would have, so
    // once its presence is visible every racer's registration has run to its end.
    const sentinel = await connectAndStay(server, 'sentinel');
    await waitFor(async () => (await redis.scard(keys.user('sentinel').presence)) === 1);

    const pipeline = redis.pipeline();
    for (const user of users) pipeline.scard(keys.user(user).presence);
    const counts = ((await pipeline.exec()) ?? []).map(([, count]) => Number(count));
    const phantoms = users.filter((_, i) => counts[i] !== 0);
    expect(phantoms).toEqual([]);
    sentinel.terminate();
  });
});
