/**
 * The official browser client (`@microsoft/signalr`'s browser bundle) in headless Chromium, with WebSockets
 * disabled in the page: it falls back to Server-Sent Events; with EventSource disabled too, to long
 * polling. Two pages on two hub instances (separate processes, PUB/SUB backplane) still chat.
 *
 * Needs Chromium at /usr/bin/chromium and `npm run build` (the instances run from dist/).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const require = createRequire(import.meta.url);
const SIGNALR_BUNDLE = readFileSync(
  require.resolve('@microsoft/signalr/dist/browser/signalr.min.js'),
  'utf8',
);

/** A page served (by request interception) from the hub instance's own origin, with transports removed. */
function pageHtml(disable: string[], token: string): string {
  return `<!doctype html><html><head>
<script>${disable.map((name) => `window.${name} = undefined;`).join('\n')}</script>
<script>${SIGNALR_BUNDLE}</script>
</head><body><script>
  window.received = [];
  window.hub = new signalR.HubConnectionBuilder().withUrl('/hubs/demo', { accessTokenFactory: () => ${JSON.stringify(token)} }).configureLogging(signalR.LogLevel.None).build();
  window.hub.on('message', (from, text) => window.received.push(text));
  window.started = window.hub.start().then(() => 'started', (e) => 'failed: ' + e);
</script></body></html>`;
}

describe('browser fallback from WebSockets to SSE and long polling', () => {
  const instances = new InstancePool();
  const channelPrefix = uniquePrefix('browser');
  let hubs: InstanceProcess[] = [];
  let browser: Browser;

  beforeAll(async () => {
    hubs = await Promise.all([0, 1].map(() => instances.start({ redisUrl: REDIS_URL, channelPrefix })));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await instances.stopAll();
    await deletePrefix(REDIS_URL, channelPrefix);
  });

  /** Opens the test page on `hub`'s origin; records which transports its requests used. */
  async function open(hub: InstanceProcess, disable: string[], user: string) {
    const token = await signToken(user);
    const page: Page = await browser.newPage();
    const seen = { websockets: 0, eventStreams: 0, polls: 0 };
    page.on('websocket', () => seen.websockets++);
    page.on('request', (request) => {
      if (!/\/hubs\/demo\?id=/.test(request.url()) || request.method() !== 'GET') return;
      if ((request.headers().accept ?? '').includes('text/event-stream')) seen.eventStreams++;
      else seen.polls++;
    });
    const origin = new URL(hub.url()).origin;
    await page.route(`${origin}/fallback-test`, (route) =>
      route.fulfill({ contentType: 'text/html', body: pageHtml(disable, token) }),
    );
    await page.goto(`${origin}/fallback-test`);
    expect(await page.evaluate(() => (globalThis as unknown as { started: Promise<string> }).started)).toBe(
      'started',
    );
    return { page, seen };
  }

  it('chats across two instances over SSE and long polling', async () => {
    const sse = await open(hubs[0]!, ['WebSocket'], 'ann');
    const polling = await open(hubs[1]!, ['WebSocket', 'EventSource'], 'ben');
    expect(sse.seen).toMatchObject({ websockets: 0, eventStreams: 1 });
    expect(polling.seen.websockets).toBe(0);
    expect(polling.seen.eventStreams).toBe(0);
    expect(polling.seen.polls).toBeGreaterThanOrEqual(1);

    const send = (page: Page, text: string) =>
      page.evaluate(
        (t) =>
          (globalThis as unknown as { hub: { invoke(m: string, a: string): Promise<void> } }).hub.invoke(
            'SendToAll',
            t,
          ),
        text,
      );
    const received = (page: Page) =>
      page.evaluate(() => (globalThis as unknown as { received: string[] }).received);
    await send(sse.page, 'from sse');
    await send(polling.page, 'from long polling');
    for (const page of [sse.page, polling.page]) {
      await expect
        .poll(() => received(page), { timeout: 10_000 })
        .toEqual(expect.arrayContaining(['from sse', 'from long polling']));
    }
    expect(await received(sse.page)).toHaveLength(2);
    expect(await received(polling.page)).toHaveLength(2);
    await sse.page.close();
    await polling.page.close();
  });
});
