/**
 * Stateful reconnect over MessagePack (hub protocol version 2: Sequence and Ack messages as MessagePack
 * arrays): sockets dropped mid-stream lose nothing and duplicate nothing, in both directions.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool, record } from '../helpers/client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/stateful-packed';
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('stateful reconnect with MessagePack', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;
  let proxy: TcpProxy | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await proxy?.close();
    await server?.close();
  });

  it('survives dropped sockets: every message once and in order, binary intact, no reconnect events', async () => {
    const recorded: number[] = [];
    const hub: HubDefinition = {
      methods: {
        Record: (_ctx, n: number) => {
          recorded.push(n);
          return n;
        },
      },
    };
    server = await startServer({}, { [HUB]: hub });
    proxy = await TcpProxy.start(server.port);
    const c = await clients.connect(proxy.url(HUB), {
      statefulReconnect: true,
      reconnectDelays: [0, 100],
      protocol: 'messagepack',
    });
    expect(proxy.clientWebSocketTexts()[0]).toBe('{"protocol":"messagepack","version":2}\x1e');
    const reconnects: unknown[] = [];
    c.onreconnecting((e) => reconnects.push(e));
    c.onclose((e) => reconnects.push(e));
    const ticks = record(c, 'tick');
    const connectionId = c.connectionId as string;
    const toClient = server.server.hub(HUB).clients.client(connectionId);
    const acceptedBefore = proxy.accepted;
    const invoked: Promise<unknown>[] = [];
    const total = 300;
    for (let i = 0; i < total; i++) {
      if (i === 100 || i === 220) {
        proxy.dropAll();
        for (let k = 0; k < 5; k++) invoked.push(c.invoke('Record', invoked.length));
      }
      await toClient.send('tick', i, Buffer.from([i & 0xff, 7]));
      if (i % 20 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(invoked)).toEqual(range(10));
    await waitFor(() => ticks.length >= total, { message: 'every tick arrived' });
    expect(ticks.map(([i]) => i)).toEqual(range(total));
    expect(
      ticks.every(([i, bytes]) =>
        Buffer.from(bytes as Uint8Array).equals(Buffer.from([(i as number) & 0xff, 7])),
      ),
    ).toBe(true);
    expect(recorded).toEqual(range(10));
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
    expect(reconnects).toEqual([]);
    expect(c.connectionId).toBe(connectionId);
  });
});
