import type { HubConnection } from '@microsoft/signalr';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import type { HubRuntime } from '../../src/hub/hub-runtime.js';
import { parseHandshakeRequest } from '../../src/protocol/handshake.js';
import { formatMessage, parseMessage, splitRecords } from '../../src/protocol/json/json-protocol.js';
import type { HubMessage } from '../../src/protocol/messages.js';
import { connect } from '../helpers/client.js';
import { handshakeRequest, RawClient, RS } from '../helpers/raw-client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

// ---- arbitraries ---------------------------------------------------------------------------------------

const FIELDS = [
  'type',
  'invocationId',
  'target',
  'arguments',
  'streamIds',
  'headers',
  'item',
  'result',
  'error',
  'allowReconnect',
  'sequenceId',
  'protocol',
  'version',
  'toString',
  'valueOf',
  '__proto__',
  'constructor',
] as const;

/** Strings, from short and odd to over the default 32 KB message limit. */
const text = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 2, arbitrary: fc.constantFrom('', 'Echo', 'echo', 'SendToAll', 'JoinGroup', 'NoSuchMethod', RS) },
  { weight: 1, arbitrary: fc.constantFrom(1_000, 33_000, 150_000).map((n) => 'h'.repeat(n)) },
);

/** Any JSON value, with the odd huge string. */
const json: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: text },
);

/** Values for protocol fields: sometimes of the right type, often not. */
const fieldValue = fc.oneof(
  text,
  fc.integer({ min: -3, max: 12 }),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(text, fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(text, fc.integer()), { maxKeys: 3 }),
);

/** Objects that look like hub messages: a type (mostly 1..9), protocol field names and random values. */
const messageLike = fc
  .record({
    type: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 1, max: 9 }) },
      { weight: 2, arbitrary: fc.integer({ min: -2, max: 20 }) },
      { weight: 1, arbitrary: fieldValue },
    ),
    fields: fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 6 }),
  })
  .map(({ type, fields }) => ({ ...fields, type }));

/** A few ids shared by upload streams, stream invocations, items, completions and cancels. */
const streamId = fc.constantFrom('a', 'b', '0', '1');

/** Messages the server accepts, so that runs also reach the states after good traffic. */
const goodMessage = fc.oneof(
  fc.constant<unknown>({ type: 6 }),
  fc.record({
    type: fc.constant(1),
    invocationId: fc.string({ maxLength: 4 }),
    target: fc.constant('Echo'),
    arguments: fc.array(json, { maxLength: 2 }),
  }),
  fc.record({ type: fc.constant(1), target: text, arguments: fc.array(json, { maxLength: 2 }) }),
  fc.record({
    type: fc.constant(1),
    invocationId: fc.string({ maxLength: 4 }),
    target: text,
    arguments: fc.array(json, { maxLength: 2 }),
  }),
  fc.record({
    type: fc.constant(4),
    invocationId: fc.string({ minLength: 1, maxLength: 4 }),
    target: text,
    arguments: fc.constant([]),
  }),
  fc.record({
    type: fc.constantFrom(1, 4),
    invocationId: streamId,
    target: fc.constant('Echo'),
    arguments: fc.array(json, { maxLength: 1 }),
    streamIds: fc.array(streamId, { minLength: 1, maxLength: 2 }),
  }),
  // note: items, completions and cancels for the few ids above, so that they meet their uploads and streams.
  { arbitrary: fc.record({ type: fc.constant(2), invocationId: streamId, item: json }), weight: 3 },
  fc.record({ type: fc.constant(3), invocationId: streamId }),
  fc.record({ type: fc.constant(3), invocationId: streamId, error: text }),
  fc.record({ type: fc.constant(5), invocationId: streamId }),
  fc.record({ type: fc.constant(8), sequenceId: fc.integer({ min: 1, max: 5 }) }),
  fc.constant<unknown>({ type: 7 }),
);

type Frame =
  | { kind: 'text'; text: string }
  | { kind: 'textBytes'; bytes: Uint8Array }
  | { kind: 'binary'; bytes: Uint8Array };

const records = (values: unknown[]) => values.map((v) => JSON.stringify(v) + RS).join('');

/** One WebSocket frame of client input. */
const frame: fc.Arbitrary<Frame> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes): Frame => ({ kind: 'binary', bytes })),
  },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes): Frame => ({ kind: 'textBytes', bytes })),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.string({ unit: 'binary', maxLength: 40 }), fc.boolean())
      .map(([t, terminated]): Frame => ({ kind: 'text', text: terminated ? t + RS : t })),
  },
  {
    weight: 2,
    arbitrary: fc
      .array(json, { minLength: 1, maxLength: 3 })
      .map((v): Frame => ({ kind: 'text', text: records(v) })),
  },
  {
    weight: 4,
    arbitrary: fc
      .array(messageLike, { minLength: 1, maxLength: 3 })
      .map((v): Frame => ({ kind: 'text', text: records(v) })),
  },
  {
    weight: 4,
    arbitrary: fc
      .array(goodMessage, { minLength: 1, maxLength: 4 })
      .map((v): Frame => ({ kind: 'text', text: records(v) })),
  },
);

type Opening = 'none' | 'v1' | 'v2' | 'bad';

const opening = fc.constantFrom<Opening>('none', 'v1', 'v1', 'v1', 'v2', 'v2', 'bad');

// ---- (a) the parser -----------------------------------------------------------------------------------

const isString = (v: unknown): v is string => typeof v === 'string';
const isStringRecord = (v: unknown) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every(isString);
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v);

/** The message has exactly the fields its type allows, each of the right type, and none undefined. */
function wellTyped(message: HubMessage): boolean {
  const m = message as unknown as Record<string, unknown>;
  if (Object.values(m).some((v) => v === undefined)) return false;
  const keysWithin = (allowed: string[]) => Object.keys(m).every((k) => allowed.includes(k));
  switch (m.type) {
    case 1:
    case 4:
      return (
        keysWithin(['type', 'invocationId', 'target', 'arguments', 'streamIds', 'headers']) &&
        isString(m.target) &&
        Array.isArray(m.arguments) &&
        (m.type === 4 ? isString(m.invocationId) : optional(m.invocationId, isString)) &&
        optional(m.streamIds, (v) => Array.isArray(v) && v.every(isString)) &&
        optional(m.headers, isStringRecord)
      );
    case 2:
      return (
        keysWithin(['type', 'invocationId', 'item', 'headers']) && isString(m.invocationId) && 'item' in m
      );
    case 3:
      return (
        keysWithin(['type', 'invocationId', 'result', 'error', 'headers']) &&
        isString(m.invocationId) &&
        optional(m.error, isString) &&
        !('result' in m && 'error' in m) &&
        optional(m.headers, isStringRecord)
      );
    case 5:
      return keysWithin(['type', 'invocationId', 'headers']) && isString(m.invocationId);
    case 6:
      return keysWithin(['type']);
    case 7:
      return (
        keysWithin(['type', 'error', 'allowReconnect']) &&
        optional(m.error, isString) &&
        optional(m.allowReconnect, (v) => typeof v === 'boolean')
      );
    case 8:
    case 9:
      return (
        keysWithin(['type', 'sequenceId']) &&
        Number.isSafeInteger(m.sequenceId) &&
        (m.sequenceId as number) >= 1
      );
    default:
      return false;
  }
}

/** Runs `fn`; anything it throws must be a ProtocolError. Returns its value, or undefined when it threw. */
function protocolErrorOr<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (error) {
    if (!(error instanceof ProtocolError)) {
      throw new Error(`expected a ProtocolError, got ${String(error)}`, { cause: error });
    }
    return undefined;
  }
}

function checkFrame(input: string): void {
  const split = protocolErrorOr(() => splitRecords(input));
  if (split === undefined) return;
  expect(split.join(RS) + RS).toBe(input);
  for (const r of split) {
    const message = protocolErrorOr(() => parseMessage(r));
    if (message === undefined) continue;
    expect(wellTyped(message), JSON.stringify(message)).toBe(true);
    // note: what the parser accepts, the formatter writes back to an equal message.
    expect(parseMessage(splitRecords(formatMessage(message))[0] as string)).toEqual(message);
  }
  const handshake = protocolErrorOr(() => parseHandshakeRequest(split[0] ?? ''));
  if (handshake !== undefined) expect([1, 2]).toContain(handshake.version);
}

describe('property: the parser', () => {
  it('returns well-typed messages or throws ProtocolError for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        checkFrame(s);
        checkFrame(s + RS);
      }),
      { numRuns: 2_000 },
    );
  });

  it('returns well-typed messages or throws ProtocolError for arbitrary bytes decoded as UTF-8', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const s = Buffer.from(bytes).toString('utf8');
        checkFrame(s);
        checkFrame(s + RS);
      }),
      { numRuns: 2_000 },
    );
  });

  it('returns well-typed messages or throws ProtocolError for arbitrary JSON and message-like objects', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(json, messageLike, goodMessage), { minLength: 1, maxLength: 4 }),
        (values) => {
          checkFrame(records(values));
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('accepts every well-formed message it is given', () => {
    fc.assert(
      fc.property(goodMessage, (message) => {
        const parsed = parseMessage(JSON.stringify(message));
        expect(wellTyped(parsed)).toBe(true);
      }),
      { numRuns: 1_000 },
    );
  });
});

// ---- (b) the connection -------------------------------------------------------------------------------

describe('property: a connection fed random frames', () => {
  let server: TestServer;
  let resident: HubConnection;

  beforeAll(async () => {
    server = await startServer({ statefulReconnectTimeoutMs: 200, handshakeTimeoutMs: 500 });
    // note: one good client stays connected through every run, and must keep working.
    resident = await connect(server.url());
  });

  afterAll(async () => {
    await resident?.stop();
    await server?.close();
  });

  const runtime = () => server.server.hub(DEMO_HUB_PATH) as HubRuntime;

  async function sendFrame(raw: RawClient, f: Frame): Promise<void> {
    try {
      if (f.kind === 'text') await raw.sendText(f.text);
      else if (f.kind === 'textBytes') await raw.sendTextBytes(f.bytes);
      else await raw.sendBinary(f.bytes);
    } catch {
      // note: the server may already have closed the socket; the rest of the run is then moot.
    }
  }

  it('never crashes, leaks or stops serving', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        opening,
        fc.array(frame, { minLength: 1, maxLength: 6 }),
        fc.constantFrom<'close' | 'terminate'>('close', 'terminate'),
        async (open, frames, ending) => {
          runs++;
          const raw = await RawClient.connect(server.url(), { statefulReconnect: open === 'v2' });
          try {
            if (open === 'v1' || open === 'v2') {
              expect(await raw.handshake(open === 'v1' ? 1 : 2)).toEqual({});
            } else if (open === 'bad') {
              await sendFrame(raw, { kind: 'text', text: handshakeRequest(7) });
            }
            for (const f of frames) await sendFrame(raw, f);
            if (ending === 'close') await raw.close();
            else raw.terminate();
            await raw.closed;

            // note: the connection is gone: only the resident client is counted, the token is forgotten.
            await waitFor(() => server.server.connectionCount === 1, {
              message: () => `connection count is ${server.server.connectionCount}, expected 1`,
            });
            await waitFor(() => runtime().connectionByToken(raw.token as string) === undefined, {
              message: 'connection token still known',
            });

            // note: everything the server sent was well-formed: whole records, text frames, valid messages,
            // and nothing after a Close.
            expect(raw.incompleteFrames).toEqual([]);
            expect(raw.binaryFrames).toBe(0);
            const [answer, ...rest] = raw.records;
            if (answer !== undefined) {
              const parsed = JSON.parse(answer) as Record<string, unknown>;
              expect(Object.keys(parsed).length === 0 || typeof parsed.error === 'string').toBe(true);
              if (parsed.error !== undefined) expect(rest).toEqual([]);
            }
            const messages = rest.map((r) => parseMessage(r));
            const closeAt = messages.findIndex((m) => m.type === 7);
            if (closeAt >= 0) expect(closeAt).toBe(messages.length - 1);

            // note: the server still serves a fresh client, and the resident one.
            const fresh = await connect(server.url());
            try {
              expect(await fresh.invoke('Echo', runs)).toBe(runs);
            } finally {
              await fresh.stop();
            }
            expect(await resident.invoke('Echo', 'resident')).toBe('resident');
            await waitFor(() => server.server.connectionCount === 1);
          } finally {
            raw.terminate();
          }
        },
      ),
      { numRuns: 80 },
    );
    expect(runs).toBeGreaterThanOrEqual(80);
  });
});
