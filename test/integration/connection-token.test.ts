/**
 * Signed connection tokens on one instance: what a socket or an HTTP transport request gets for a token
 * that is forged, of another user, spent, or issued by another instance with the same secret.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import { ConnectionTokens } from '../../src/hub/connection-token.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { runCli } from '../helpers/cli.js';
import { negotiate, RawClient, upgradeStatus } from '../helpers/raw-ws.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/token-test';
const SECRET = 'connection-token-secret-shared-by-the-instances';

const hub: HubDefinition = { methods: { WhoAmI: (ctx) => ({ id: ctx.connectionId, user: ctx.userId }) } };
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

describe('connection tokens on one instance', () => {
  const raws: RawClient[] = [];
  let server: TestServer | undefined;

  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.close();
    await server?.close();
    server = undefined;
  });

  const start = () =>
    startServer(
      { authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }), connectionTokenSecret: SECRET },
      { [HUB]: hub },
    );

  const negotiateAs = async (s: TestServer, jwt: string) => {
    const { body } = await negotiate(s.url(HUB), '?negotiateVersion=1', { headers: bearer(jwt) });
    return { connectionId: body.connectionId as string, token: body.connectionToken as string };
  };

  it("refuses another user's token with 403 and a tampered one with 404; the right user connects", async () => {
    server = await start();
    const alice = await signToken('alice');
    const { connectionId, token } = await negotiateAs(server, alice);
    const url = `${server.url(HUB)}?id=${token}`;
    expect(await upgradeStatus(url, bearer(await signToken('mallory')))).toBe(403);
    const tampered = `${token.slice(0, 5)}${token[5] === 'A' ? 'B' : 'A'}${token.slice(6)}`;
    expect(await upgradeStatus(`${server.url(HUB)}?id=${tampered}`, bearer(alice))).toBe(404);
    const raw = await RawClient.open(url, { headers: bearer(alice) });
    raws.push(raw);
    raw.send({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
    expect(await waitFor(() => raw.messages.find((m) => m.type === 3))).toMatchObject({
      result: { id: connectionId, user: 'alice' },
    });
    expect(await upgradeStatus(url, bearer(alice))).toBe(409);
  });

  it('refuses a token whose connection ended here (404) while it is still valid', async () => {
    server = await start();
    const alice = await signToken('alice');
    const { token } = await negotiateAs(server, alice);
    const url = `${server.url(HUB)}?id=${token}`;
    const raw = await RawClient.open(url, { headers: bearer(alice) });
    raw.close();
    await waitFor(() => server?.server.connectionCount === 0);
    expect(await upgradeStatus(url, bearer(alice))).toBe(404);
  });

  it("opens a WebSocket from another instance's token (same secret); SSE and long polling refuse it (404)", async () => {
    server = await start();
    const alice = await signToken('alice');
    // note: the tokens of another process with the same secret (another issuer).
    const elsewhere = new ConnectionTokens({ secret: SECRET, lifetimeMs: 15_000 });
    const forSse = elsewhere.issue('alice', false).token;
    const sse = await fetch(`${server.url(HUB)}?id=${forSse}`, {
      headers: { ...bearer(alice), Accept: 'text/event-stream' },
    });
    expect(sse.status).toBe(404);
    const poll = await fetch(`${server.url(HUB)}?id=${elsewhere.issue('alice', false).token}`, {
      headers: bearer(alice),
    });
    expect(poll.status).toBe(404);
    const { connectionId, token } = elsewhere.issue('alice', false);
    const raw = await RawClient.open(`${server.url(HUB)}?id=${token}`, { headers: bearer(alice) });
    raws.push(raw);
    raw.send({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
    expect(await waitFor(() => raw.messages.find((m) => m.type === 3))).toMatchObject({
      result: { id: connectionId },
    });
  });

  it('serves long polling through negotiate on the instance that issued the token', async () => {
    server = await start();
    const alice = await signToken('alice');
    const { token } = await negotiateAs(server, alice);
    const first = await fetch(`${server.url(HUB)}?id=${token}`, { headers: bearer(alice) });
    expect(first.status).toBe(200);
    await first.text();
    expect(server.server.connectionCount).toBe(0);
    const handshake = await fetch(`${server.url(HUB)}?id=${token}`, {
      method: 'POST',
      headers: bearer(alice),
      body: '{"protocol":"json","version":1}\x1e',
    });
    expect(handshake.status).toBe(200);
    await waitFor(() => server?.server.connectionCount === 1);
    const end = await fetch(`${server.url(HUB)}?id=${token}`, { method: 'DELETE', headers: bearer(alice) });
    expect(end.status).toBe(202);
    await waitFor(() => server?.server.connectionCount === 0);
  });

  it('relayhub serve refuses a CONNECTION_TOKEN_SECRET shorter than 32 bytes in one line (exit 2)', async () => {
    const { code, output } = await runCli(['serve', '--port', '0'], { CONNECTION_TOKEN_SECRET: 'too-short' });
    expect(code).toBe(2);
    expect(output.trim()).toBe(
      'relayhub: The connection token secret is 9 bytes; it needs at least 32. Set CONNECTION_TOKEN_SECRET to a random string, e.g. `openssl rand -hex 32`.',
    );
  });
});
