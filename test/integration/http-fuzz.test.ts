/**
 * A bounded, seeded fuzz of the HTTP edge against a real `relayhub serve` process (so that a crash shows as
 * an exit): random request lines (methods, targets with odd escapes, authority-like and absolute forms,
 * versions; several pipelined on one socket), headers (Host, Upgrade, Sec-WebSocket-*, Content-Length, Transfer-Encoding, Authorization,
 * Cookie, junk) and bodies, POSTs to the example orders API (odd ids, valid and bad tokens, content types,
 * bodies); then WebSocket upgrades followed by random frames (valid and broken headers,
 * masks, lengths, opcodes, payloads that are hub-protocol-like or random). After every batch the process
 * must still be running, no answer may be a 500 or 503, and at the end the official client and a raw
 * negotiate + WebSocket must work.
 *
 * Seeded (FUZZ_SEED overrides) so that a failure replays; the batch that killed the process is reported.
 * Needs `npm run build`.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool } from '../helpers/client.js';
import { type InstanceProcess, InstancePool } from '../helpers/process.js';
import { negotiate, RawClient, RS } from '../helpers/raw-ws.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x11a);
/** Replaced by a valid token for user `fuzzer` when a case runs (tokens are signed asynchronously). */
const TOKEN = '{{TOKEN}}';
const HTTP_CASES = 4_000;
const WS_CASES = 1_000;
const PARALLEL = 24;
/** How long one case waits for an answer before it moves on (most answer at once). */
const CASE_WAIT_MS = 250;

// ---- arbitraries ---------------------------------------------------------------------------------------

const nasty = fc.constantFrom(
  '%',
  '%E0%A4%A',
  '%C3',
  '%zz',
  '%00',
  '%2F',
  '%25',
  '[',
  ']',
  '//',
  '/',
  ':',
  '@',
  '?',
  '#',
  '\\',
  '..',
  '~',
  '|',
  '^',
  '{',
  '}',
  'é',
  '\u{1F600}',
  '\u0000',
  ';',
  '=',
  '&',
  "'",
  '"',
  '<',
  '>',
  '*',
);
const pathPart = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      '/hubs/demo',
      '/HUBS/Demo',
      '/hubs/demo/negotiate',
      '/healthz',
      '/api/orders/o/status',
      '/',
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);
const target = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(pathPart, fc.array(nasty, { maxLength: 3 })).map(([p, n]) => p + n.join('')),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.constantFrom('http://', 'https://', '//', 'ftp://', 'http:', ''),
        fc.string({ maxLength: 8 }),
        pathPart,
      )
      .map(([scheme, host, path]) => scheme + host + path),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        pathPart,
        fc.dictionary(
          fc.constantFrom('id', 'access_token', 'negotiateVersion', 'x'),
          fc.string({ maxLength: 6 }),
        ),
      )
      .map(
        ([p, q]) =>
          `${p}?${Object.entries(q)
            .map(([k, v]) => `${k}=${v}`)
            .join('&')}`,
      ),
  },
  { weight: 1, arbitrary: fc.constantFrom('*', '', ' ', 'a', 'http://[', '//[', '//a:b', '//:99999') },
);
const method = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'GET',
      'POST',
      'PUT',
      'DELETE',
      'OPTIONS',
      'HEAD',
      'PATCH',
      'CONNECT',
      'TRACE',
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
);
const version = fc.oneof(
  { weight: 8, arbitrary: fc.constant('HTTP/1.1') },
  { weight: 2, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1 x', 'http/1.1', '') },
);
const header = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'Host: 127.0.0.1',
      'Host: [',
      'Host: a:b:c',
      'Host:',
      'Upgrade: websocket',
      'Upgrade: h2c',
      'Connection: Upgrade',
      'Connection: keep-alive, Upgrade',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Version: 99',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Key: x',
      'Sec-WebSocket-Protocol: a, , b',
      'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits',
      'Content-Length: 5',
      'Content-Length: -1',
      'Content-Length: 99999999999999999999',
      'Content-Length: 1, 2',
      'Transfer-Encoding: chunked',
      'Transfer-Encoding: gzip, chunked',
      'Authorization: Bearer x.y.z',
      'Authorization: Bearer',
      'Authorization: Basic',
      'Cookie: a=%; b="; =c',
      'Content-Type: application/json',
      'Content-Type: text/plain',
      'Expect: 100-continue',
      'X-Forwarded-For: ::1, [',
      'Origin: null',
    ),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.stringMatching(/^[A-Za-z0-9-]{1,10}$/), fc.stringMatching(/^[ -~]{0,20}$/))
      .map(([n, v]) => `${n}: ${v}`),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 }))
      .map(([n, v]) => `${n}: ${v}`),
  },
);
/** Most requests carry a plain Host (HTTP/1.1 requires one), so that they get past Node's parser. */
const host = fc.oneof(
  { weight: 8, arbitrary: fc.constant(['Host: 127.0.0.1']) },
  { weight: 2, arbitrary: fc.constant([]) },
);
const body = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  {
    weight: 2,
    arbitrary: fc.constantFrom('{"userId":"u","status":"s"}', '0\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n', '{'),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 64 }) },
);
const wildCase = fc
  .record({
    method,
    target,
    version,
    host,
    headers: fc.array(header, { maxLength: 8 }),
    body,
    ending: fc.constantFrom('\r\n\r\n', '\r\n\r\n', '\r\n\r\n', '\n\n', '\r\n', ''),
  })
  .map(({ method: m, target: t, version: v, host: h, headers, body: b, ending }) =>
    Buffer.from(`${m} ${t} ${v}\r\n${[...h, ...headers].join('\r\n')}${ending}${b}`, 'utf8'),
  );

/** Requests that get past Node's parser (one header list, one odd escape at most) to reach the routes. */
const nearValidCase = fc
  .record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'OPTIONS', 'DELETE'),
    path: pathPart.filter((p) => /^[!-~]*$/.test(p)),
    nasty: fc.option(
      nasty.filter((n) => /^[!-~]+$/.test(n) && n !== '#' && n !== '?'),
      { nil: '' },
    ),
    query: fc.option(fc.constantFrom('?negotiateVersion=1', '?id=x', '?access_token=a.b.c', '?a=%zz&b'), {
      nil: '',
    }),
    headers: fc.subarray(
      [
        'Upgrade: websocket',
        'Connection: Upgrade',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        'Authorization: Bearer x.y.z',
        `Authorization: Bearer ${TOKEN}`,
        'Content-Type: application/json',
        'Cookie: a=%; b="; =c',
        'X-Forwarded-For: ::1, [',
      ],
      { maxLength: 4 },
    ),
    body: fc.constantFrom(
      '',
      '',
      '{"userId":"fuzzer","status":"s"}',
      '{"userId":"other","status":"s"}',
      '{"x":1}',
    ),
  })
  .map(({ method: m, path, nasty: n, query, headers, body: b }) =>
    Buffer.from(
      `${m} ${path}${n}${query} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}` +
        `Content-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n\r\n${b}`,
    ),
  );
/** POSTs to the orders API: ids with odd escapes, some valid tokens, JSON and other bodies and types. */
const ordersCase = fc
  .record({
    id: fc.tuple(fc.stringMatching(/^[A-Za-z0-9-]{1,6}$/), fc.array(nasty, { maxLength: 2 })),
    token: fc.constantFrom(TOKEN, TOKEN, TOKEN, 'x.y.z', ''),
    type: fc.constantFrom(
      'application/json',
      'application/json',
      'Application/JSON; charset=utf-8',
      'text/plain',
      '',
    ),
    body: fc.oneof(
      fc
        .constantFrom('fuzzer', 'fuzzer', 'other', '', 'a b', 'u{1}')
        .map((u) => JSON.stringify({ userId: u, status: 's' })),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? ''),
      fc.string({ maxLength: 40 }),
    ),
  })
  .map(({ id: [id, n], token: t, type, body: b }) =>
    Buffer.from(
      `POST /api/orders/${id}${n.filter((x) => /^[!-~]+$/.test(x) && x !== '#' && x !== '?').join('')}/status HTTP/1.1\r\n` +
        `Host: 127.0.0.1\r\n${t ? `Authorization: Bearer ${t}\r\n` : ''}${type ? `Content-Type: ${type}\r\n` : ''}` +
        `Content-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n\r\n${b}`,
    ),
  );
/** Several requests pipelined on one keep-alive socket (only the last asks to close). */
const pipelinedCase = fc
  .array(fc.oneof(nearValidCase, ordersCase, wildCase), { minLength: 2, maxLength: 4 })
  .map((requests) =>
    Buffer.concat(
      requests.map((r, i) =>
        i === requests.length - 1
          ? r
          : Buffer.from(r.toString('latin1').replace('Connection: close\r\n', ''), 'latin1'),
      ),
    ),
  );
const httpCase = fc.oneof(
  { weight: 4, arbitrary: nearValidCase },
  { weight: 1, arbitrary: ordersCase },
  { weight: 1, arbitrary: pipelinedCase },
  { weight: 4, arbitrary: wildCase },
);

/** Hub-protocol-like text: handshakes and records, good and bad. */
const hubText = fc.oneof(
  fc.constantFrom(
    `{"protocol":"json","version":1}${RS}`,
    `{"protocol":"messagepack","version":1}${RS}`,
    `{"type":1,"target":"Echo","arguments":[1]}${RS}`,
    `{"type":1,"invocationId":"1","target":"Echo","arguments":["x"],"streamIds":["a"]}${RS}`,
    `{"type":2,"invocationId":"1","item":1}${RS}`,
    `{"type":6}${RS}{"type":7}${RS}`,
    `{"type":8,"sequenceId":-1}${RS}`,
    RS.repeat(3),
    '{',
  ),
  fc.string({ maxLength: 80 }).map((s) => s + RS),
);
/** One WebSocket frame as a client could write it: fields sometimes wrong on purpose. */
const frame = fc
  .record({
    fin: fc.boolean(),
    rsv: fc.integer({ min: 0, max: 7 }),
    opcode: fc.constantFrom(0, 1, 1, 1, 2, 8, 9, 10, 3, 11, 15),
    masked: fc.constantFrom(true, true, true, false),
    payload: fc.oneof(
      hubText.map((t) => Buffer.from(t, 'utf8')),
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    ),
    lengthForm: fc.constantFrom('exact', 'exact', 'exact', 'short', 'long16', 'long64', 'huge'),
  })
  .map(({ fin, rsv, opcode, masked, payload, lengthForm }) =>
    encodeFrame(fin, rsv, opcode, masked, payload, lengthForm),
  );
const wsCase = fc.record({
  path: fc.constantFrom('/hubs/demo', '/HUBS/DEMO', '/hubs/demo?id=nope', '/hubs/demo/'),
  frames: fc.array(frame, { minLength: 1, maxLength: 6 }),
  trailing: fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a)),
});

function encodeFrame(
  fin: boolean,
  rsv: number,
  opcode: number,
  masked: boolean,
  payload: Buffer,
  lengthForm: string,
): Buffer {
  const head: number[] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const mask = masked ? 0x80 : 0;
  const length = lengthForm === 'short' ? Math.max(0, payload.length - 3) : payload.length;
  if (lengthForm === 'long16' || (length >= 126 && length < 65_536 && lengthForm !== 'long64')) {
    head.push(mask | 126, (length >> 8) & 0xff, length & 0xff);
  } else if (lengthForm === 'long64' || lengthForm === 'huge' || length >= 65_536) {
    const big = lengthForm === 'huge' ? 0x7fffffffffffn : BigInt(length);
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64BE(big);
    head.push(mask | 127, ...bytes);
  } else {
    head.push(mask | length);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload.map((byte, i) => byte ^ (key[i % 4] as number)));
  return Buffer.concat([Buffer.from(head), key, body]);
}

// ---- running cases ---------------------------------------------------------------------------------------

/**
 * Writes `chunks` (the later ones after the first answer, when `afterAnswer`), waits briefly, closes;
 * resolves with the status of the first answer (0 when none came).
 */
function runCase(port: number, chunks: Buffer[], afterAnswer: boolean): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answered = false;
    let status = 0;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(status);
    };
    const timer = setTimeout(done, CASE_WAIT_MS);
    socket.on('error', done);
    socket.on('close', done);
    socket.on('connect', () => {
      socket.write(chunks[0] as Buffer);
      if (!afterAnswer) for (const chunk of chunks.slice(1)) socket.write(chunk);
    });
    socket.on('data', (chunk: Buffer) => {
      if (answered) return;
      answered = true;
      status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(chunk.toString('latin1'))?.[1] ?? 0);
      if (!afterAnswer) return done();
      for (const chunk of chunks.slice(1)) if (!socket.destroyed) socket.write(chunk);
      setTimeout(done, 30);
    });
  });
}

describe('HTTP and WebSocket fuzz', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  let hub: InstanceProcess;

  let schema: TestSchema;
  let prefix: string;
  let token: string;

  // note: the streams backplane with the example app, so that the orders API (and Postgres behind it) is
  // fuzzed too; some cases carry a valid token for 'fuzzer'.
  beforeAll(async () => {
    [schema, token] = await Promise.all([createTestSchema('fuzz'), signToken('fuzzer')]);
    prefix = uniquePrefix('fuzz');
    hub = await instances.start({
      redisUrl: REDIS_URL,
      channelPrefix: prefix,
      backplane: 'streams',
      databaseUrl: schema.databaseUrl,
      args: ['--example-app'],
    });
  });
  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
    await schema?.drop();
    if (prefix) await deletePrefix(REDIS_URL, prefix);
  });

  /**
   * Runs the cases, {@link PARALLEL} at a time (a pool, not batches: a slow case holds up no other);
   * returns how many answers of each status came. Stops at the first case after which the server is gone,
   * reporting the cases in flight then (one of them killed it).
   */
  async function runAll(cases: { chunks: Buffer[]; afterAnswer: boolean }[]): Promise<Map<number, number>> {
    const statuses = new Map<number, number>();
    const inFlight = new Set<number>();
    let next = 0;
    let failure: Error | undefined;
    const worker = async () => {
      while (next < cases.length && !failure) {
        const index = next++;
        const c = cases[index] as (typeof cases)[number];
        inFlight.add(index);
        const chunks = c.chunks.map((chunk) =>
          chunk.includes(TOKEN)
            ? Buffer.from(chunk.toString('latin1').replace(TOKEN, token), 'latin1')
            : chunk,
        );
        const status = await runCase(hub.port, chunks, c.afterAnswer);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (hub.hasExited && !failure) {
          const shown = [...inFlight].map(
            (k) =>
              `#${k} ${JSON.stringify(Buffer.concat(cases[k]!.chunks).toString('latin1').slice(0, 300))}`,
          );
          failure = new Error(
            `the server exited (seed ${SEED}); cases in flight:\n${shown.join('\n')}\n${hub.output()}`,
          );
        }
        inFlight.delete(index);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    if (failure) throw failure;
    return statuses;
  }

  it(`survives ${HTTP_CASES} random requests and ${WS_CASES} random WebSocket sessions, then serves a good client`, async () => {
    const requests = fc.sample(httpCase, { seed: SEED, numRuns: HTTP_CASES });
    const http = await runAll(requests.map((request) => ({ chunks: [request], afterAnswer: false })));
    // note: many cases get past Node's parser to the server's own routes (404, 405, 401, 200 answers).
    const routed = [200, 401, 404, 405].reduce((n, status) => n + (http.get(status) ?? 0), 0);
    expect(routed, JSON.stringify([...http])).toBeGreaterThan(HTTP_CASES / 10);
    // note: no input is the server's fault: no 500 (a handler threw) and no 503 (the orders API failed).
    expect(http.get(500) ?? 0, JSON.stringify([...http])).toBe(0);
    expect(http.get(503) ?? 0, JSON.stringify([...http])).toBe(0);
    // note: some reached the orders API with a valid token and a body it took (or refused as another user's)
    const { rows } = await schema.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM example_orders');
    expect(rows[0]?.n, JSON.stringify([...http])).toBeGreaterThan(0);

    const sessions = fc.sample(wsCase, { seed: SEED + 1, numRuns: WS_CASES });
    const ws = await runAll(
      sessions.map(({ path, frames, trailing }) => {
        const sep = path.includes('?') ? '&' : '?';
        const upgrade =
          `GET ${path}${sep}access_token=${token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
          'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
        return { chunks: [Buffer.from(upgrade), ...frames, trailing], afterAnswer: true };
      }),
    );

    // note: about half the sessions open (two of the four paths are hubs), so their frames reach the hub.
    expect(ws.get(101) ?? 0).toBeGreaterThan(WS_CASES / 4);
    expect(hub.hasExited, hub.output()).toBe(false);
    const client = await clients.connect(hub.url(), { token: await signToken('alice') });
    expect(await client.invoke('Echo', 'after the fuzz')).toBe('after the fuzz');
    const negotiated = await negotiate(hub.url(), '?negotiateVersion=1', {
      headers: { Authorization: `Bearer ${token}` },
    });
    expect(negotiated.status).toBe(200);
    const raw = await RawClient.open(`${hub.url()}?id=${negotiated.body.connectionToken as string}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    raw.send({ type: 1, invocationId: '1', target: 'Echo', arguments: ['raw'] });
    await expect.poll(() => raw.messages.find((m) => m.type === 3)).toMatchObject({ result: 'raw' });
    raw.close();
    expect(hub.hasExited).toBe(false);
  }, 90_000);
});
