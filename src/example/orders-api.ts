import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type pg from 'pg';
import type { Logger } from 'pino';
import { isRelayhubError } from '../errors.js';
import { enqueue } from '../outbox/enqueue.js';

const ROUTE = /^\/api\/orders\/([^/]+)\/status$/;
const MAX_BODY_BYTES = 16_384;
const FIELDS = new Set(['userId', 'status']);

class BadRequest extends Error {}

/**
 * The example app's HTTP API: `POST /api/orders/:orderId/status` with `{ "userId": "...", "status": "..." }`
 * updates the `example_orders` row and enqueues the reliable `orderStatus` message in ONE transaction; the
 * user's clients receive `orderStatus({ orderId, status }, { messageId, offset })` and ack it by returning.
 */
export function ordersApi(pool: pg.Pool, logger?: Logger): RequestListener {
  return (req, res) => {
    handle(pool, req, res).catch((error: unknown) => {
      if (error instanceof BadRequest) return send(res, 400, { error: error.message });
      if (isRelayhubError(error) && error.code === 'ERR_INVALID_MESSAGE') {
        return send(res, 400, { error: error.message });
      }
      // note: the client only learns "retry later"; the operator learns why, once per failed request.
      logger?.error({ err: error, url: req.url }, 'orders API answered 503: the order could not be saved');
      send(res, 503, { error: 'The order could not be saved; nothing was sent. Retry later.' });
    });
  };
}

async function handle(pool: pg.Pool, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const match = ROUTE.exec(url.pathname);
  if (!match) return send(res, 404, { error: 'Not found.' });
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return send(res, 405, { error: 'Use POST.' });
  }
  const orderId = decodeURIComponent(match[1] as string);
  const { userId, status } = parseBody(await readBody(req, res));
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(
      `INSERT INTO example_orders (order_id, user_id, status, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (order_id) DO UPDATE SET user_id = $2, status = $3, updated_at = now()`,
      [orderId, userId, status],
    );
    const { id } = await enqueue(client, { userId, target: 'orderStatus', args: [{ orderId, status }] });
    await client.query('COMMIT');
    send(res, 200, { orderId, status, outboxId: id });
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

function parseBody(text: string): { userId: string; status: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BadRequest('The body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequest('The body must be a JSON object with userId and status.');
  }
  const unknown = Object.keys(body).filter((k) => !FIELDS.has(k));
  if (unknown.length > 0) throw new BadRequest(`Unknown field(s): ${unknown.join(', ')}.`);
  const { userId, status } = body as Record<string, unknown>;
  if (typeof userId !== 'string' || userId.length === 0)
    throw new BadRequest("'userId' must be a non-empty string.");
  if (typeof status !== 'string' || status.length === 0)
    throw new BadRequest("'status' must be a non-empty string.");
  return { userId, status };
}

function readBody(req: IncomingMessage, res: ServerResponse): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // note: not req.destroy(), which cut the socket before the 400 was written; stop collecting and
        // close the connection once the answer is out.
        req.removeAllListeners('data');
        res.setHeader('Connection', 'close');
        reject(new BadRequest(`The body is larger than ${MAX_BODY_BYTES} bytes.`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
