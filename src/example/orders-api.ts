import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type pg from 'pg';
import type { Logger } from 'pino';
import { isRelayhubError } from '../errors.js';
import type { Authenticate, Principal } from '../hub/auth.js';
import { decodePathSegment, parseRequestTarget } from '../hub/request-target.js';
import { enqueue } from '../outbox/enqueue.js';
import { DEMO_HUB_PATH } from './demo-hub.js';

const ROUTE = /^\/api\/orders\/([^/]+)\/status$/;
const MAX_BODY_BYTES = 16_384;
const FIELDS = new Set(['userId', 'status']);

/**
 * The claim of a service token that may post orders for any user: `{ "relayhub:orders": "any" }`. Without
 * it a caller may post only for itself (`userId` equal to its token's `sub`).
 */
export const ORDERS_ANY_USER_CLAIM = 'relayhub:orders';

export interface OrdersApiOptions {
  /**
   * Who is calling: the same authenticator as the hub (`jwtAuthenticator({ secret })`), reading
   * `Authorization: Bearer`. `null` (or a throw) answers 401.
   */
  authenticate: Authenticate;
  /** The deployment's channel prefix (the outbox rows are its, for the demo hub). @default 'relayhub' */
  channelPrefix?: string;
  /** Where a 503's cause is logged (once per failed request). @default none */
  logger?: Logger;
}

class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The example app's HTTP API: `POST /api/orders/:orderId/status` with `{ "userId": "...", "status": "..." }`
 * and a bearer JWT updates the `example_orders` row and enqueues the reliable `orderStatus` message in ONE
 * transaction; the user's clients receive `orderStatus({ orderId, status }, { messageId, offset })` and ack
 * it by returning.
 *
 * Answers: 401 without a valid token; 403 when the token's `sub` is not `userId` (unless it carries
 * {@link ORDERS_ANY_USER_CLAIM}`: "any"`); 415 unless `Content-Type: application/json`; 400 for a bad body
 * or target; 409 when the order belongs to another user (an order is never moved); 503 when Postgres fails.
 */
export function ordersApi(pool: pg.Pool, options: OrdersApiOptions): RequestListener {
  return (req, res) => {
    handle(pool, options, req, res).catch((error: unknown) => {
      if (error instanceof HttpProblem) return send(res, error.status, { error: error.message });
      if (isRelayhubError(error) && error.code === 'ERR_INVALID_MESSAGE') {
        return send(res, 400, { error: error.message });
      }
      // note: the client only learns "retry later"; the operator learns why, once per failed request.
      options.logger?.error(
        { err: error, url: req.url },
        'orders API answered 503: the order could not be saved',
      );
      send(res, 503, { error: 'The order could not be saved; nothing was sent. Retry later.' });
    });
  };
}

async function handle(
  pool: pg.Pool,
  options: OrdersApiOptions,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = parseRequestTarget(req);
  if (!url) throw new HttpProblem(400, 'Bad request target.');
  const match = ROUTE.exec(url.pathname);
  if (!match) return send(res, 404, { error: 'Not found.' });
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return send(res, 405, { error: 'Use POST.' });
  }
  const orderId = decodePathSegment(match[1] as string);
  if (orderId === undefined) throw new HttpProblem(400, 'Bad request target.');
  const principal = await caller(options.authenticate, req, url);
  if (!principal) {
    res.setHeader('WWW-Authenticate', 'Bearer');
    throw new HttpProblem(401, 'A bearer token (the same JWT as the hub) is required.');
  }
  if (!isJson(req.headers['content-type'])) {
    res.setHeader('Connection', 'close');
    throw new HttpProblem(415, "Send the body as 'Content-Type: application/json'.");
  }
  const { userId, status } = parseBody(await readBody(req, res));
  if (principal.userId !== userId && principal.claims[ORDERS_ANY_USER_CLAIM] !== 'any') {
    throw new HttpProblem(
      403,
      `This token may post orders only for its own user (sub); a service token needs the claim "${ORDERS_ANY_USER_CLAIM}": "any".`,
    );
  }
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    // note: one statement, so that two first updates of an order for different users cannot both win.
    const { rowCount } = await client.query(
      `INSERT INTO example_orders (order_id, user_id, status, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (order_id) DO UPDATE SET status = $3, updated_at = now()
       WHERE example_orders.user_id = $2`,
      [orderId, userId, status],
    );
    if (rowCount === 0) {
      throw new HttpProblem(
        409,
        `Order '${orderId}' belongs to another user; an order cannot be moved to another user.`,
      );
    }
    const { id } = await enqueue(
      client,
      { userId, target: 'orderStatus', args: [{ orderId, status }] },
      { hub: DEMO_HUB_PATH, ...(options.channelPrefix ? { channelPrefix: options.channelPrefix } : {}) },
    );
    await client.query('COMMIT');
    send(res, 200, { orderId, status, outboxId: id });
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function caller(authenticate: Authenticate, req: IncomingMessage, url: URL): Promise<Principal | null> {
  try {
    return await authenticate(req, url);
  } catch {
    return null;
  }
}

/** `application/json`, any case, with or without parameters (`; charset=utf-8`). */
function isJson(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === 'application/json';
}

function parseBody(text: string): { userId: string; status: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpProblem(400, 'The body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpProblem(400, 'The body must be a JSON object with userId and status.');
  }
  const unknown = Object.keys(body).filter((k) => !FIELDS.has(k));
  if (unknown.length > 0) throw new HttpProblem(400, `Unknown field(s): ${unknown.join(', ')}.`);
  const { userId, status } = body as Record<string, unknown>;
  if (typeof userId !== 'string' || userId.length === 0)
    throw new HttpProblem(400, "'userId' must be a non-empty string.");
  if (typeof status !== 'string' || status.length === 0)
    throw new HttpProblem(400, "'status' must be a non-empty string.");
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
        reject(new HttpProblem(400, `The body is larger than ${MAX_BODY_BYTES} bytes.`));
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
