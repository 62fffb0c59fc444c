import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { HubServerStats } from '../metrics/hub-metrics.js';
import type { OutboxBacklog } from '../outbox/backlog.js';
import { bearerToken } from '../hub/auth.js';
import { PUBLIC_DIR, sendFile, sendJson } from '../static-files.js';

export const DASHBOARD_PATH = '/relayhub/';

export interface DashboardOptions {
  /** Required by the feed (`Authorization: Bearer`, or `?access_token=` / `?token=`). */
  token: string;
  instanceId: string;
  /** This instance's figures (`HubServer.stats`). */
  stats(): Promise<HubServerStats>;
  /** The outbox backlog, when this instance uses Postgres. */
  outbox?: () => Promise<OutboxBacklog>;
  /** Origins of the other instances' dashboards, which the page polls too. @default [] */
  peers?: readonly string[];
}

export interface DashboardFeed {
  instanceId: string;
  peers: readonly string[];
  stats: HubServerStats;
  outbox?: OutboxBacklog;
}

const FILES: Record<string, string> = {
  [DASHBOARD_PATH]: join(PUBLIC_DIR, 'dashboard', 'index.html'),
  [`${DASHBOARD_PATH}dashboard.js`]: join(PUBLIC_DIR, 'dashboard', 'dashboard.js'),
};
const FEED = `${DASHBOARD_PATH}api/stats`;

/**
 * The live dashboard at `/relayhub/`: a static page and one read-only JSON feed (`/relayhub/api/stats`)
 * behind `token`. Returns false for requests outside `/relayhub/`.
 */
export function dashboard(options: DashboardOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const expected = Buffer.from(options.token);
  const authorized = (req: IncomingMessage, url: URL): boolean => {
    const given = Buffer.from(bearerToken(req, url) ?? url.searchParams.get('token') ?? '');
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/relayhub') {
      res.writeHead(308, { Location: `${DASHBOARD_PATH}${url.search}` }).end();
      return true;
    }
    if (!url.pathname.startsWith(DASHBOARD_PATH)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: 'The dashboard is read-only.' });
      return true;
    }
    // note: the page and its script are static and hold nothing; the feed is what the token guards.
    const file = FILES[url.pathname];
    if (file) {
      sendFile(res, file);
      return true;
    }
    if (!authorized(req, url)) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      sendJson(res, 401, { error: 'The dashboard needs its token: /relayhub/?token=<DASHBOARD_TOKEN>.' });
      return true;
    }
    if (url.pathname === FEED) {
      feed(options).then(
        (body) => sendJson(res, 200, body),
        (error: unknown) =>
          sendJson(res, 500, { error: error instanceof Error ? error.message : String(error) }),
      );
      return true;
    }
    sendJson(res, 404, { error: 'Not found.' });
    return true;
  };
}

async function feed(options: DashboardOptions): Promise<DashboardFeed> {
  const [stats, outbox] = await Promise.all([
    options.stats(),
    // note: Postgres away: the feed still answers, without the outbox figures.
    options.outbox?.().catch(() => undefined),
  ]);
  return { instanceId: options.instanceId, peers: options.peers ?? [], stats, ...(outbox ? { outbox } : {}) };
}
