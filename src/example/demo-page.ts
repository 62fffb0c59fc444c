import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { PUBLIC_DIR, SIGNALR_BROWSER_BUNDLE, sendFile, sendJson } from '../static-files.js';

export interface DemoPageOptions {
  /** Signs the development tokens the page asks for. */
  jwtSecret: string;
  /** Shown on the page (which instance the browser is on). */
  instanceId: string;
  /** The origins of every demo instance, in order: the page fails over to the next one. */
  instances: readonly string[];
}

const USER = /^[a-z0-9_-]{1,32}$/i;
const FILES: Record<string, string> = {
  '/': join(PUBLIC_DIR, 'demo', 'index.html'),
  '/demo/demo.js': join(PUBLIC_DIR, 'demo', 'demo.js'),
  '/demo/demo.css': join(PUBLIC_DIR, 'demo', 'demo.css'),
  '/demo/signalr.min.js': SIGNALR_BROWSER_BUNDLE,
};

/**
 * The demo web page (`/`) with its assets, `GET /demo/info` (this instance) and `GET /demo/token?user=`:
 * a development token endpoint that signs a token for any user name. Only `relayhub demo` turns it on.
 * Returns false for requests it does not handle.
 */
export function demoPage(options: DemoPageOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const key = new TextEncoder().encode(options.jwtSecret);
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const url = new URL(req.url ?? '/', 'http://localhost');
    const file = FILES[url.pathname];
    if (file) {
      sendFile(res, file);
      return true;
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return true;
    }
    if (url.pathname === '/demo/info') {
      sendJson(res, 200, { instanceId: options.instanceId, pid: process.pid, instances: options.instances });
      return true;
    }
    if (url.pathname === '/demo/token') {
      const user = url.searchParams.get('user') ?? '';
      if (!USER.test(user)) {
        sendJson(res, 400, { error: "'user' must be 1 to 32 letters, digits, '-' or '_'." });
        return true;
      }
      new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(user)
        .setIssuedAt()
        .setExpirationTime('12h')
        .sign(key)
        .then((token) => sendJson(res, 200, { token }));
      return true;
    }
    return false;
  };
}
