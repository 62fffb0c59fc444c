import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { ServerResponse } from 'node:http';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The static pages shipped with the package (`public/`), resolved from `src/` and from `dist/` alike. */
export const PUBLIC_DIR = fileURLToPath(new URL('../public/', import.meta.url));

/** The official SignalR browser bundle, served to the demo page and the dashboard. */
export const SIGNALR_BROWSER_BUNDLE = createRequire(import.meta.url).resolve(
  '@microsoft/signalr/dist/browser/signalr.min.js',
);

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
};

const cache = new Map<string, Promise<Buffer>>();

/** Answers with a file (read once, then from memory); 404 when it cannot be read. */
export function sendFile(res: ServerResponse, path: string): void {
  let body = cache.get(path);
  if (!body) {
    body = readFile(path);
    cache.set(path, body);
    body.catch(() => cache.delete(path));
  }
  body.then(
    (bytes) => {
      res.writeHead(200, {
        'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream',
        'Content-Length': bytes.length,
        'Cache-Control': 'no-cache',
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(bytes);
    },
    () => {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found.\n');
    },
  );
}

/** Answers with `body` as JSON, never cached. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
  });
  res.end(text);
}
