import { type HubConnection, HubConnectionBuilder, LogLevel } from '@microsoft/signalr';
import { afterEach, describe, expect, it } from 'vitest';
import type { HubDefinition } from '../../src/hub/hub.js';
import { HubServer } from '../../src/hub/hub-server.js';
import { ClientPool, record } from '../helpers/client.js';
import { silentLogger } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/reconnect-test';

/** A hub that says which server instance answered. */
const hubOf = (instance: string, disconnects: (Error | undefined)[] = []): HubDefinition => ({
  onDisconnected: (_ctx, error) => {
    disconnects.push(error);
  },
  methods: {
    Instance: (ctx) => ({ instance, connectionId: ctx.connectionId }),
    Broadcast: (ctx, text: string) => ctx.clients.all.send('news', instance, text),
  },
});

interface Events {
  reconnecting: (Error | undefined)[];
  reconnected: (string | undefined)[];
  closed: (Error | undefined)[];
}

function watch(connection: HubConnection): Events {
  const events: Events = { reconnecting: [], reconnected: [], closed: [] };
  connection.onreconnecting((error) => events.reconnecting.push(error));
  connection.onreconnected((id) => events.reconnected.push(id));
  connection.onclose((error) => events.closed.push(error));
  return events;
}

describe('automatic reconnect', () => {
  const clients = new ClientPool();
  const servers: HubServer[] = [];

  afterEach(async () => {
    await clients.stopAll();
    await Promise.allSettled(servers.splice(0).map((s) => s.close()));
  });

  async function startOn(port: number, hub: HubDefinition): Promise<{ server: HubServer; url: string }> {
    const server = new HubServer({ logger: silentLogger });
    server.mapHub(HUB, hub);
    servers.push(server);
    const address = await server.listen(port, '127.0.0.1');
    return { server, url: `http://127.0.0.1:${address.port}${HUB}` };
  }

  it('reconnects to a new server on the same port after a graceful restart', async () => {
    const disconnects: (Error | undefined)[] = [];
    const first = await startOn(0, hubOf('first', disconnects));
    const port = Number(new URL(first.url).port);
    const c = await clients.connect(first.url, { reconnectDelays: [0, 100, 200, 200] });
    const events = watch(c);
    const news = record(c, 'news');
    const before = await c.invoke<{ instance: string; connectionId: string }>('Instance');
    expect(before).toEqual({ instance: 'first', connectionId: c.connectionId });

    await first.server.close();
    await waitFor(() => events.reconnecting.length === 1);
    expect(events.reconnecting[0]?.message).toContain('The server is shutting down.');
    expect(c.state).toBe('Reconnecting');
    // note: the server ran onDisconnected for the connection it closed.
    await waitFor(() => disconnects.length === 1);

    await startOn(port, hubOf('second'));
    await waitFor(() => events.reconnected.length === 1, { message: 'onreconnected' });
    expect(c.state).toBe('Connected');
    expect(events.reconnected[0]).toBe(c.connectionId);
    expect(c.connectionId).not.toBe(before.connectionId);
    expect(await c.invoke('Instance')).toEqual({ instance: 'second', connectionId: c.connectionId });
    await c.invoke('Broadcast', 'back');
    await waitFor(() => news.length === 1);
    expect(news).toEqual([['second', 'back']]);
    expect(events.reconnecting).toHaveLength(1);
    expect(events.closed).toEqual([]);
  });

  it('reconnects a stateful-reconnect client in full after a restart', async () => {
    const first = await startOn(0, hubOf('first'));
    const port = Number(new URL(first.url).port);
    const c = await clients.connect(first.url, { reconnectDelays: [0, 100, 200], statefulReconnect: true });
    const events = watch(c);
    const firstId = c.connectionId;
    await first.server.close();
    await waitFor(() => events.reconnecting.length === 1);
    await startOn(port, hubOf('second'));
    await waitFor(() => events.reconnected.length === 1, { message: 'onreconnected' });
    expect(c.connectionId).not.toBe(firstId);
    expect(await c.invoke('Instance')).toEqual({ instance: 'second', connectionId: c.connectionId });
  });

  it('tells a client without automatic reconnect why it was closed', async () => {
    const { server, url } = await startOn(0, hubOf('only'));
    const c = await clients.connect(url);
    const events = watch(c);
    await server.close();
    await waitFor(() => events.closed.length === 1);
    expect(events.closed[0]?.message).toBe('Server returned an error on close: The server is shutting down.');
    expect(events.reconnecting).toEqual([]);
    expect(c.state).toBe('Disconnected');
  });

  it('gives up after the retry policy runs out when no server comes back', async () => {
    const { server, url } = await startOn(0, hubOf('only'));
    const attempts: number[] = [];
    const c = clients.add(
      new HubConnectionBuilder()
        .withUrl(url, { logger: LogLevel.None })
        .configureLogging(LogLevel.None)
        .withAutomaticReconnect({
          nextRetryDelayInMilliseconds: ({ previousRetryCount }) => {
            attempts.push(previousRetryCount);
            return previousRetryCount < 3 ? 20 : null;
          },
        })
        .build(),
    );
    await c.start();
    const events = watch(c);
    await server.close();
    await waitFor(() => events.closed.length === 1);
    expect(events.reconnecting).toHaveLength(1);
    expect(attempts).toEqual([0, 1, 2, 3]);
    expect(events.reconnected).toEqual([]);
    expect(c.state).toBe('Disconnected');
  });

  it('closes idempotently, ends every connection and stops listening', async () => {
    const { server, url } = await startOn(0, hubOf('only'));
    await clients.connect(url);
    const closing = server.close();
    const again = server.close();
    expect(again).toBe(closing);
    await closing;
    await expect(fetch(`${url}/negotiate?negotiateVersion=1`, { method: 'POST' })).rejects.toThrow();
    expect(server.connectionCount).toBe(0);
  });
});
