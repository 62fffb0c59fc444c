import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { HubServerOptions } from '../../src/hub/hub-server.js';
import { startServer, type TestServer } from '../helpers/server.js';

const ALLOWED = 'https://app.example.com';
const OTHER = 'https://evil.example.net';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
}

function send(url: string, method: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Opens a WebSocket (skipNegotiation style) with this Origin; resolves with the upgrade's status. */
function upgrade(url: string, origin: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace('http', 'ws'), origin ? { origin } : {});
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', (error) => reject(error));
  });
}

describe('CORS and WebSocket origins', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });
  const start = async (options: HubServerOptions = {}) => {
    server = await startServer(options);
    return server;
  };

  it('answers the preflight and adds the headers to negotiate for an allowed origin', async () => {
    const s = await start({ cors: { origins: [ALLOWED] } });
    const preflight = await send(`${s.url()}/negotiate?negotiateVersion=1`, 'OPTIONS', {
      Origin: ALLOWED,
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization, x-requested-with, x-signalr-user-agent',
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe(ALLOWED);
    expect(preflight.headers['access-control-allow-credentials']).toBe('true');
    expect(preflight.headers['access-control-allow-methods']).toContain('POST');
    expect(preflight.headers['access-control-allow-headers']).toBe(
      'authorization, x-requested-with, x-signalr-user-agent',
    );
    const negotiate = await send(`${s.url()}/negotiate?negotiateVersion=1`, 'POST', { Origin: ALLOWED });
    expect(negotiate.status).toBe(200);
    expect(negotiate.headers['access-control-allow-origin']).toBe(ALLOWED);
    expect(negotiate.headers.vary).toBe('Origin');
  });

  it('refuses other origins with 403, on negotiate, the preflight and the WebSocket upgrade', async () => {
    const s = await start({ cors: { origins: [ALLOWED] } });
    const preflight = await send(`${s.url()}/negotiate`, 'OPTIONS', {
      Origin: OTHER,
      'Access-Control-Request-Method': 'POST',
    });
    expect(preflight.status).toBe(403);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    expect((await send(`${s.url()}/negotiate`, 'POST', { Origin: OTHER })).status).toBe(403);
    expect(await upgrade(s.url(), OTHER)).toBe(403);
    expect(await upgrade(s.url(), ALLOWED)).toBe(101);
  });

  it('without cors allows same-origin and Origin-less requests only (no cross-site WebSocket hijacking)', async () => {
    const s = await start();
    expect(await upgrade(s.url(), undefined)).toBe(101);
    expect(await upgrade(s.url(), s.baseUrl)).toBe(101);
    expect(await upgrade(s.url(), OTHER)).toBe(403);
    const same = await send(`${s.url()}/negotiate?negotiateVersion=1`, 'POST', { Origin: s.baseUrl });
    expect(same.status).toBe(200);
    expect((await send(`${s.url()}/negotiate`, 'POST', { Origin: OTHER })).status).toBe(403);
  });

  it('takes a predicate, and credentials can be turned off', async () => {
    const s = await start({
      cors: { origins: (origin) => origin.endsWith('.example.com'), credentials: false },
    });
    const ok = await send(`${s.url()}/negotiate?negotiateVersion=1`, 'POST', { Origin: ALLOWED });
    expect(ok.status).toBe(200);
    expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
    expect(await upgrade(s.url(), OTHER)).toBe(403);
  });

  it('refuses an origin list entry that is not an origin', async () => {
    await expect(start({ cors: { origins: ['https://app.example.com/path'] } })).rejects.toThrow(
      /is not an origin/,
    );
  });
});
