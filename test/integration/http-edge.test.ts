/**
 * The HTTP edge against malformed requests, in a real `relayhub serve` process (so that a crash shows as an
 * exit): request targets that do not parse (`//[`, `http://[`, `//a:b`, `*`), percent-encoding errors, odd
 * `Host` headers and absolute-form targets, on plain requests, negotiate and WebSocket upgrades, are each
 * answered 400 (or routed by their path alone) and the process keeps serving the official client.
 *
 * Needs `npm run build`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool } from '../helpers/client.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { rawRequest, upgradeRequest } from '../helpers/raw-http.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';

const get = (target: string, headers = 'Host: 127.0.0.1\r\n') =>
  `GET ${target} HTTP/1.1\r\n${headers}Connection: close\r\n\r\n`;
const post = (target: string) =>
  `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;

/**
 * Targets Node's parser lets through that are no origin-form path and no http(s) absolute URL, or whose
 * escapes are broken: 400. (`http://[` and `//%` crashed the process.)
 */
const UNPARSEABLE = [
  'http://[',
  '//%',
  'http://a%zz/',
  'http://a:99999/',
  'ftp://x/',
  '*',
  'foo',
  'a:b',
  '/hubs\\demo',
];
/**
 * Origin-form targets that `new URL(target, base)` took for an authority and refused (each crashed the
 * process): they are paths, routed as such (404 here).
 */
const AUTHORITY_LIKE = ['//[', '//a:b', '//:99999', '//a@b:c', '//[::1'];
/** Paths whose percent-encoding does not decode (each a 400, never a 503 or a crash). */
const BAD_ESCAPES = ['/hubs/demo%E0%A4%A', '/%', '/api/orders/%E0%A4%A/status', '/hubs/%C3/negotiate'];

describe('malformed HTTP requests', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  let hub: InstanceProcess;

  beforeAll(async () => {
    hub = await instances.start({
      redisUrl: REDIS_URL,
      channelPrefix: uniquePrefix('edge'),
      backplane: 'memory',
    });
  });
  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
  });

  async function expectServing(): Promise<void> {
    expect(hub.hasExited, hub.output()).toBe(false);
    const client = await clients.connect(hub.url(), { token: await signToken('alice') });
    expect(await client.invoke('Echo', 'still here')).toBe('still here');
    await client.stop();
  }

  /** A GET, a negotiate POST and a WebSocket upgrade at each target all answer `status`. */
  async function expectEveryPath(targets: string[], status: number): Promise<void> {
    for (const target of targets) {
      for (const request of [get(target), post(`${target}/negotiate`), upgradeRequest(target)]) {
        const response = await rawRequest(hub.port, request);
        expect(response.status, JSON.stringify(request)).toBe(status);
      }
    }
  }

  it('answers 400 to request targets that do not parse, on every path, and stays up', async () => {
    await expectEveryPath(UNPARSEABLE, 400);
    await expectServing();
  });

  it('routes origin-form targets that look like an authority as paths (404), and stays up', async () => {
    await expectEveryPath(AUTHORITY_LIKE, 404);
    await expectServing();
  });

  it('answers 400 (not 503) to malformed percent-encodings, plain and upgrade', async () => {
    for (const target of BAD_ESCAPES) {
      expect((await rawRequest(hub.port, get(target))).status, target).toBe(400);
      expect((await rawRequest(hub.port, post(target))).status, target).toBe(400);
      expect((await rawRequest(hub.port, upgradeRequest(target))).status, target).toBe(400);
    }
    await expectServing();
  });

  it('routes by path alone: absolute-form targets and odd Host headers do not matter', async () => {
    expect((await rawRequest(hub.port, get('http://evil.example/healthz'))).status).toBe(200);
    expect((await rawRequest(hub.port, get('https://x/healthz?a=%zz'))).status).toBe(200);
    expect((await rawRequest(hub.port, get('//evil.example/healthz'))).status).toBe(404);
    for (const host of ['Host: [\r\n', 'Host: a:b:c\r\n', 'Host: %zz\r\n', 'Host: \r\n']) {
      expect((await rawRequest(hub.port, get('/healthz', host))).status, host).toBe(200);
    }
    // note: Node's own parser refuses these before any handler runs.
    for (const request of [
      'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n', // HTTP/1.1 without Host
      'GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n',
      'GET /he\x01lthz HTTP/1.1\r\nHost: a\r\n\r\n',
      'NOPE\r\n\r\n',
      'GET / HTTP/9.9\r\nHost: a\r\n\r\n',
    ]) {
      expect((await rawRequest(hub.port, request)).status, JSON.stringify(request)).toBe(400);
    }
    await expectServing();
  });
});
