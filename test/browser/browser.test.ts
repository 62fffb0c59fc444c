import { createServer, type Server } from 'node:http';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, launchBrowser } from '../helpers/browser.js';
import { ClientPool } from '../helpers/client.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import {
  InstancePool,
  type InstanceProcess,
  startWorkerProcess,
  type WorkerProcess,
} from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { freePort } from '../helpers/redis-server.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const DASHBOARD_TOKEN = 'browser-test-dashboard-token';

/** A page on another origin that loads the official bundle from the hub and connects both ways. */
function crossOriginPage(hub: string, token: string): string {
  return `<!doctype html><html><body><pre id="result">pending</pre>
<script src="${hub}/demo/signalr.min.js"></script>
<script>
  const attempt = async (options) => {
    const c = new signalR.HubConnectionBuilder()
      .withUrl('${hub}/hubs/demo', { accessTokenFactory: () => '${token}', ...options })
      .configureLogging(signalR.LogLevel.None)
      .build();
    try { await c.start(); const echo = await c.invoke('Echo', 'hi'); await c.stop(); return 'ok:' + echo; }
    catch (e) { return 'refused'; }
  };
  (async () => {
    const negotiated = await attempt({});
    const websocket = await attempt({ skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
    document.getElementById('result').textContent = negotiated + ' ' + websocket;
  })();
</script></body></html>`;
}

async function listenStatic(port: number, html: () => string): Promise<Server> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end(html());
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

describe('in a real browser (Debian chromium)', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  const channelPrefix = uniquePrefix('browser');
  let browser: Browser;
  let schema: TestSchema;
  let worker: WorkerProcess;
  let hubs: InstanceProcess[] = [];
  const statics: Server[] = [];
  let origins: string[];
  let allowedPort: number;
  let refusedPort: number;

  beforeAll(async () => {
    browser = await launchBrowser();
    schema = await createTestSchema('browser');
    const ports = [await freePort(), await freePort()];
    allowedPort = await freePort();
    refusedPort = await freePort();
    origins = ports.map((port) => `http://127.0.0.1:${port}`);
    const cors = [...origins, `http://127.0.0.1:${allowedPort}`].join(',');
    hubs = await Promise.all(
      ports.map((port, i) =>
        instances.start({
          redisUrl: REDIS_URL,
          channelPrefix,
          backplane: 'streams',
          databaseUrl: schema.databaseUrl,
          instanceId: `browser-hub-${i + 1}`,
          args: ['--port', String(port), '--demo', origins.join(','), '--dashboard', '--cors-origins', cors],
          // note: EXAMPLE_APP for engineer 11a's --example-app, which mounts the orders API
          env: { DASHBOARD_TOKEN, EXAMPLE_APP: 'true' },
        }),
      ),
    );
    worker = await startWorkerProcess({
      redisUrl: REDIS_URL,
      channelPrefix,
      databaseUrl: schema.databaseUrl,
    });
  });

  afterAll(async () => {
    await browser?.close();
    await clients.stopAll();
    for (const server of statics) server.close();
    await worker?.stop();
    await instances.stopAll();
    await schema?.drop();
    await deletePrefix(REDIS_URL, channelPrefix);
  });

  const open = async (url: string): Promise<Page> => {
    const page = await browser.context.newPage();
    await page.goto(url);
    return page;
  };

  it('the demo page connects, chats across two instances, receives orderStatus and acks it', async () => {
    const [one, two] = origins as [string, string];
    const alice = await open(`${one}/?user=alice`);
    const bob = await open(`${two}/?user=bob`);
    try {
      for (const page of [alice, bob]) {
        await page.locator('#status.connected').waitFor();
        await page.click('#join');
        await page.locator('#joined', { hasText: 'lobby' }).waitFor();
      }
      expect(await alice.textContent('#instance')).toContain('browser-hub-1');
      expect(await bob.textContent('#instance')).toContain('browser-hub-2');
      await bob.fill('#chat-input', 'hello from bob on instance 2');
      await bob.click('#send');
      await alice.locator('#chat-log li', { hasText: 'bob: hello from bob on instance 2' }).waitFor();

      await alice.selectOption('#order-status', 'shipped');
      await alice.click('#post-order');
      await alice.locator('#orders li', { hasText: 'order A-1001: shipped' }).waitFor();
      expect(await alice.textContent('#order-summary')).toContain('missing: none');
      // the page's handler returned: the worker applies the ack, deleting the outbox row (it was there:
      // the page shows its message)
      await waitFor(async () => {
        const { rows } = await schema.pool.query(
          `SELECT 1 FROM relayhub_outbox WHERE user_id = 'alice' AND target = 'orderStatus'`,
        );
        return rows.length === 0;
      });
      await alice.screenshot({ path: browser.artifact('demo-page.png') });
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('the dashboard shows the connection count and a message rate that moves', async () => {
    const [one] = origins as [string];
    const hubUrl = `${one}/hubs/demo`;
    const dashboard = await open(`${one}/relayhub/?token=${DASHBOARD_TOKEN}`);
    const card = dashboard.locator(`.instance[data-origin="${one}"]`);
    try {
      const token = await signToken('carol');
      await clients.connect(hubUrl, { token });
      const busy = await clients.connect(hubUrl, { token });
      await card.locator('[data-field="connections"]', { hasText: /^2$/ }).waitFor();
      expect(await card.locator('[data-field="hubs"]').textContent()).toBe('/hubs/demo: 2');
      const stop = new AbortController();
      const load = (async () => {
        while (!stop.signal.aborted) await busy.invoke('Echo', 'tick');
      })();
      await waitFor(async () => Number(await card.locator('[data-field="rate"]').textContent()) > 10, {
        timeoutMs: 10_000,
      });
      stop.abort();
      await load;
      await dashboard.screenshot({ path: browser.artifact('dashboard.png'), fullPage: true });
      // and it falls again once the traffic stops
      await waitFor(async () => Number(await card.locator('[data-field="rate"]').textContent()) === 0, {
        timeoutMs: 10_000,
      });
      const feed = await fetch(`${one}/relayhub/api/stats`);
      expect(feed.status).toBe(401);
    } finally {
      await dashboard.close();
      await clients.stopAll();
    }
  });

  it('a page on an origin allowed by cors connects; one on another origin is refused', async () => {
    const [one] = origins as [string];
    const token = await signToken('dave');
    statics.push(await listenStatic(allowedPort, () => crossOriginPage(one, token)));
    statics.push(await listenStatic(refusedPort, () => crossOriginPage(one, token)));
    const allowed = await open(`http://127.0.0.1:${allowedPort}/`);
    const refused = await open(`http://127.0.0.1:${refusedPort}/`);
    try {
      await allowed.locator('#result', { hasText: /^(ok|refused)/ }).waitFor();
      await refused.locator('#result', { hasText: /^(ok|refused)/ }).waitFor();
      // negotiate (fetch with CORS) and skipNegotiation (the WebSocket origin check) alike
      expect(await allowed.textContent('#result')).toBe('ok:hi ok:hi');
      expect(await refused.textContent('#result')).toBe('refused refused');
    } finally {
      await allowed.close();
      await refused.close();
    }
  });

  // note: last, because it kills the first instance
  it('the reliable lane: the page survives a killed instance and misses nothing', async () => {
    const [one, two] = origins as [string, string];
    const erin = await open(`${one}/?user=erin`);
    try {
      await erin.locator('#status.connected').waitFor();
      const token = await signToken('erin');
      const post = (origin: string, status: string) =>
        fetch(`${origin}/api/orders/E-1/status`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ userId: 'erin', status }),
        }).then((r) => expect(r.status).toBe(200));
      await post(one, 'paid');
      await erin.locator('#orders li[data-offset="1"]').waitFor();
      hubs[0]!.kill('SIGKILL');
      await hubs[0]!.exited;
      // committed while the page has no instance: they wait in Postgres and in erin's inbox
      for (const status of ['packed', 'shipped', 'delivered']) await post(two, status);
      await erin.locator('#instance', { hasText: 'browser-hub-2' }).waitFor({ timeout: 15_000 });
      await erin.locator('#orders li[data-offset="4"]').waitFor({ timeout: 15_000 });
      expect(await erin.locator('#orders li').allTextContents()).toEqual([
        '#1 order E-1: paid (via browser-hub-1)',
        '#2 order E-1: packed (via browser-hub-2)',
        '#3 order E-1: shipped (via browser-hub-2)',
        '#4 order E-1: delivered (via browser-hub-2)',
      ]);
      expect(await erin.textContent('#order-summary')).toMatch(
        /received 4 \(offsets 1\.\.4\), missing: none/,
      );
      await erin.screenshot({ path: browser.artifact('demo-page-after-kill.png') });
    } finally {
      await erin.close();
    }
  });
});
