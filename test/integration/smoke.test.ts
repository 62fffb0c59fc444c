import { afterEach, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('smoke', () => {
  const clients = new ClientPool();
  let server: TestServer;
  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
  });

  it('echoes and broadcasts with the official client', async () => {
    server = await startServer();
    const a = await clients.connect(server.url());
    const b = await clients.connect(server.url(), { skipNegotiation: true });
    expect(await a.invoke('Echo', { x: 1 })).toEqual({ x: 1 });
    const got = record(b, 'message');
    await a.invoke('SendToAll', 'hello');
    await waitFor(() => got.length === 1);
    expect(got[0]).toEqual([a.connectionId, 'hello']);
  });
});
