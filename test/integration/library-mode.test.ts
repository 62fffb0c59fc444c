import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBackplane } from '../../src/backplane/memory/memory-backplane.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { HubServer } from '../../src/hub/hub-server.js';
import { ClientPool, record } from '../helpers/client.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('library mode: a backplane by name', () => {
  const clients = new ClientPool();
  const servers: TestServer[] = [];
  const prefixes: string[] = [];
  afterEach(async () => {
    await clients.stopAll();
    await Promise.all(servers.splice(0).map((s) => s.close()));
    for (const prefix of prefixes.splice(0)) await deletePrefix(REDIS_URL, prefix);
  });

  it("'streams' with a Redis URL: broadcasts and reliable sends cross instances; close() closes it", async () => {
    const channelPrefix = uniquePrefix('named');
    prefixes.push(channelPrefix);
    const authenticate = jwtAuthenticator({ secret: TEST_JWT_SECRET });
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer({ backplane: 'streams', redis: REDIS_URL, channelPrefix, authenticate }),
      );
    }
    const [a, b] = servers as [TestServer, TestServer];
    const alice = await clients.connect(b.url(), { token: await signToken('alice') });
    const messages = record(alice, 'message');
    const notes: unknown[] = [];
    alice.on('note', (n: unknown) => {
      notes.push(n);
      return true;
    });
    await a.server.hub(DEMO_HUB_PATH).clients.all.send('message', 'server', 'hi');
    await a.server.hub(DEMO_HUB_PATH).reliable.user('alice').send('note', 1);
    await waitFor(() => messages.length === 1 && notes.length === 1);
    expect(a.server.backplaneHealth().status).toBe('ready');
    await a.close();
    expect(a.server.backplaneHealth().status).toBe('down');
  });

  it("'pubsub' with a { url } target, and 'memory'", async () => {
    const channelPrefix = uniquePrefix('named');
    prefixes.push(channelPrefix);
    const one = await startServer({ backplane: 'pubsub', redis: { url: REDIS_URL }, channelPrefix });
    const two = await startServer({ backplane: 'pubsub', redis: REDIS_URL, channelPrefix });
    servers.push(one, two);
    const client = await clients.connect(two.url());
    const messages = record(client, 'message');
    await one.server.hub(DEMO_HUB_PATH).clients.all.send('message', 'server', 'across');
    await waitFor(() => messages.length === 1);
    const memory = await startServer({ backplane: 'memory' });
    servers.push(memory);
    expect(memory.server.backplaneHealth().status).toBe('ready');
    const health = (await (await fetch(`${memory.baseUrl}/healthz`)).json()) as {
      backplane: { kind: string };
    };
    expect(health.backplane.kind).toBe('memory');
  });

  it('refuses an unknown name, Redis for memory, and redis next to a backplane instance', () => {
    // @ts-expect-error: not a backplane name
    expect(() => new HubServer({ backplane: 'kafka' })).toThrow(/Unknown backplane 'kafka'/);
    expect(() => new HubServer({ backplane: 'memory', redis: REDIS_URL })).toThrow(/does not use Redis/);
    expect(() => new HubServer({ backplane: new MemoryBackplane(), channelPrefix: 'x' })).toThrow(
      /apply to a backplane given by name/,
    );
  });
});
