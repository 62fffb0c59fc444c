import { afterEach, describe, expect, it } from 'vitest';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool } from '../helpers/client.js';
import { negotiate, RawClient, upgradeStatus } from '../helpers/raw-ws.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/negotiate-test';

/** Remembers every connection id the server saw connect. */
function whoAmIHub(seen: string[]): HubDefinition {
  return {
    onConnected: (ctx) => {
      seen.push(ctx.connectionId);
    },
    methods: {
      WhoAmI: (ctx) => ctx.connectionId,
    },
  };
}

describe('negotiate', () => {
  const clients = new ClientPool();
  const raws: RawClient[] = [];
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.close();
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  it('answers v1 with a connection id, a different token and WebSockets only', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    const { status, headers, body } = await negotiate(server.url(HUB), '?negotiateVersion=1');
    expect(status).toBe(200);
    expect(headers.get('content-type')).toMatch(/application\/json/);
    expect(body.negotiateVersion).toBe(1);
    expect(typeof body.connectionId).toBe('string');
    expect(typeof body.connectionToken).toBe('string');
    expect(body.connectionId).not.toBe(body.connectionToken);
    // note: the client does not URL-encode the token, so it must be URL-safe.
    expect(body.connectionToken).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(body.availableTransports).toEqual([
      { transport: 'WebSockets', transferFormats: ['Text', 'Binary'] },
      { transport: 'ServerSentEvents', transferFormats: ['Text'] },
      { transport: 'LongPolling', transferFormats: ['Text', 'Binary'] },
    ]);
    expect(body).not.toHaveProperty('useStatefulReconnect');
    expect(body).not.toHaveProperty('error');

    const second = await negotiate(server.url(HUB), '?negotiateVersion=1');
    expect(second.body.connectionId).not.toBe(body.connectionId);
    expect(second.body.connectionToken).not.toBe(body.connectionToken);
  });

  it('offers stateful reconnect only when the client asks for it (query keys case-insensitive)', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    const asked = await negotiate(server.url(HUB), '?negotiateVersion=1&useStatefulReconnect=true');
    expect(asked.body.useStatefulReconnect).toBe(true);
    const askedOtherCase = await negotiate(server.url(HUB), '?NegotiateVersion=1&UseStatefulReconnect=true');
    expect(askedOtherCase.body.useStatefulReconnect).toBe(true);
    expect(askedOtherCase.body.connectionToken).toBeTypeOf('string');
    const notAsked = await negotiate(server.url(HUB), '?negotiateVersion=1&useStatefulReconnect=false');
    expect(notAsked.body).not.toHaveProperty('useStatefulReconnect');
  });

  it('does not offer stateful reconnect when the server disallows it', async () => {
    server = await startServer({ allowStatefulReconnects: false }, { [HUB]: whoAmIHub([]) });
    const asked = await negotiate(server.url(HUB), '?negotiateVersion=1&useStatefulReconnect=true');
    expect(asked.status).toBe(200);
    expect(asked.body).not.toHaveProperty('useStatefulReconnect');
  });

  it('falls back to v0 without negotiateVersion: no token, the socket binds with id=connectionId', async () => {
    const seen: string[] = [];
    server = await startServer({}, { [HUB]: whoAmIHub(seen) });
    const { status, body } = await negotiate(server.url(HUB), '');
    expect(status).toBe(200);
    expect(body.negotiateVersion).toBe(0);
    expect(body).not.toHaveProperty('connectionToken');
    expect(body.availableTransports).toEqual([
      expect.objectContaining({ transport: 'WebSockets' }),
      expect.objectContaining({ transport: 'ServerSentEvents' }),
      expect.objectContaining({ transport: 'LongPolling' }),
    ]);
    const connectionId = body.connectionId as string;

    const raw = await RawClient.open(`${server.url(HUB)}?id=${connectionId}`);
    raws.push(raw);
    expect(raw.handshake).toEqual({});
    raw.send({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
    const completion = await waitFor(() => raw.messages.find((m) => m.type === 3));
    expect(completion).toEqual({ type: 3, invocationId: '1', result: connectionId });
    expect(seen).toEqual([connectionId]);
  });

  it('refuses GET negotiate with 405', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    const result = await negotiate(server.url(HUB), '?negotiateVersion=1', { method: 'GET' });
    expect(result.status).toBe(405);
    expect(result.headers.get('allow')).toBe('POST');
  });

  it('answers 404 to a WebSocket with an unknown token', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    expect(await upgradeStatus(`${server.url(HUB)}?id=no-such-token`)).toBe(404);
  });

  it('answers 409 to a second WebSocket for a token already bound', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    const { body } = await negotiate(server.url(HUB), '?negotiateVersion=1');
    const url = `${server.url(HUB)}?id=${body.connectionToken as string}`;
    const first = await RawClient.open(url);
    raws.push(first);
    expect(await upgradeStatus(url)).toBe(409);
    // note: the first socket is unharmed by the refused second one.
    first.send({ type: 1, invocationId: '7', target: 'WhoAmI', arguments: [] });
    const completion = await waitFor(() => first.messages.find((m) => m.type === 3));
    expect(completion).toEqual({ type: 3, invocationId: '7', result: body.connectionId });
  });

  it('does not bind a socket with the public connection id instead of the v1 token', async () => {
    server = await startServer({}, { [HUB]: whoAmIHub([]) });
    const { body } = await negotiate(server.url(HUB), '?negotiateVersion=1');
    expect(await upgradeStatus(`${server.url(HUB)}?id=${body.connectionId as string}`)).toBe(404);
  });

  it('lets the official client skip negotiation', async () => {
    const seen: string[] = [];
    server = await startServer({}, { [HUB]: whoAmIHub(seen) });
    const connection = await clients.connect(server.url(HUB), { skipNegotiation: true });
    expect(connection.connectionId).toBeNull();
    const id = await connection.invoke<string>('WhoAmI');
    expect(typeof id).toBe('string');
    expect(seen).toEqual([id]);
  });

  it('gives the official client the connection id the server uses', async () => {
    const seen: string[] = [];
    server = await startServer({}, { [HUB]: whoAmIHub(seen) });
    const a = await clients.connect(server.url(HUB));
    const b = await clients.connect(server.url(HUB));
    expect(a.connectionId).toBeTypeOf('string');
    expect(await a.invoke('WhoAmI')).toBe(a.connectionId);
    expect(await b.invoke('WhoAmI')).toBe(b.connectionId);
    expect(a.connectionId).not.toBe(b.connectionId);
    expect(seen).toEqual([a.connectionId, b.connectionId]);
  });
});
