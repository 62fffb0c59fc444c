import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetricsCollector } from './hub-metrics.js';

/** Where `GET /metrics` is served. */
export interface MetricsOptions {
  /**
   * Serve the metrics on their own port (e.g. only reachable from the monitoring network) instead of the
   * hub server's port. 0 picks a free port.
   * @default undefined (on the hub server's port)
   */
  port?: number;
  /** @default '0.0.0.0' */
  host?: string;
}

export const METRICS_PATH = '/metrics';

/** Answers `GET /metrics` with the Prometheus text format (and 405 for other methods). */
export function metricsHandler(metrics: () => Promise<string>, contentType: string): RequestListener {
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET' }).end();
      return;
    }
    metrics().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (error: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`metrics failed: ${error instanceof Error ? error.message : String(error)}\n`);
      },
    );
  };
}

/** A small HTTP server that only serves `GET /metrics` (404 elsewhere); resolves once it listens. */
export async function listenMetrics(
  collector: Pick<MetricsCollector, 'metrics' | 'registry'>,
  port: number,
  host = '0.0.0.0',
): Promise<{ server: Server; address: AddressInfo }> {
  const handler = metricsHandler(() => collector.metrics(), collector.registry.contentType);
  const server = createServer((req, res) => {
    if ((req.url ?? '/').split('?')[0] === METRICS_PATH) return handler(req, res);
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found. Metrics are at /metrics.\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, address: server.address() as AddressInfo };
}

/** Stops a server from {@link listenMetrics}. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
