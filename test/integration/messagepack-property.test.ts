/**
 * Properties of the MessagePack hub protocol: arbitrary bytes and arbitrary MessagePack values either parse
 * to well-formed messages or fail with a ProtocolError (never another exception); what parses writes back to
 * an equal message; and a live server survives random frames, keeps serving, and never crashes.
 */
import { encode } from '@msgpack/msgpack';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpTransportType } from '@microsoft/signalr';
import { ProtocolError } from '../../src/errors.js';
import { messagePackProtocol } from '../../src/protocol/messagepack/messagepack-protocol.js';
import type { HubMessage } from '../../src/protocol/messages.js';
import { connect } from '../helpers/client.js';
import { lengthPrefix, RawMsgpackClient } from '../helpers/raw-msgpack.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const LIMIT = 32_768;

function parseOrProtocolError(payload: Buffer): HubMessage[] | undefined {
  const out: HubMessage[] = [];
  try {
    for (const message of messagePackProtocol.parse(payload, LIMIT)) out.push(message);
    return out;
  } catch (error) {
    if (!(error instanceof ProtocolError)) {
      throw new Error(`expected a ProtocolError, got ${String(error)}`, { cause: error });
    }
    return undefined;
  }
}

/** What the parser accepts, the writer writes back to an equal message. */
function checkRoundTrip(messages: HubMessage[]): void {
  for (const message of messages) {
    expect(Number.isInteger(message.type) && message.type >= 1 && message.type <= 9).toBe(true);
    const again = [...messagePackProtocol.parse(messagePackProtocol.write(message) as Buffer, Infinity)];
    expect(again).toEqual([message]);
  }
}

const framed = (value: unknown): Buffer => {
  const body = Buffer.from(encode(value));
  return Buffer.concat([lengthPrefix(body.length), body]);
};

const str = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('Echo', 's1', '', '__proto__'));
const value = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true }),
  str,
  fc.boolean(),
  fc.constant(null),
  fc.uint8Array({ maxLength: 8 }),
  fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('2100-01-01') }),
);
/** Arrays shaped like hub messages (a small type first), with fields of any kind. */
const messageLike = fc.tuple(
  fc.integer({ min: 0, max: 10 }),
  fc.array(fc.oneof(value, fc.dictionary(str, value, { maxKeys: 3 }), fc.array(value, { maxLength: 3 })), {
    maxLength: 6,
  }),
);

describe('property: the MessagePack parser', () => {
  it('returns messages or throws ProtocolError for arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const messages = parseOrProtocolError(Buffer.from(bytes));
        if (messages) checkRoundTrip(messages);
      }),
      { numRuns: 3_000 },
    );
  });

  it('returns messages or throws ProtocolError for arbitrary message-shaped arrays, and round-trips them', () => {
    fc.assert(
      fc.property(messageLike, ([type, fields]) => {
        const messages = parseOrProtocolError(framed([type, ...fields]));
        if (messages) checkRoundTrip(messages);
      }),
      { numRuns: 3_000 },
    );
  });

  it('round-trips well-formed invocations with binary and date arguments', () => {
    fc.assert(
      fc.property(
        fc.option(str, { nil: undefined }),
        str,
        fc.array(value, { maxLength: 5 }),
        (id, target, args) => {
          const message: HubMessage = {
            type: 1,
            target,
            arguments: args,
            ...(id !== undefined ? { invocationId: id } : {}),
          };
          const [parsed] = [
            ...messagePackProtocol.parse(messagePackProtocol.write(message) as Buffer, LIMIT),
          ];
          // note: binary comes back as a Buffer (a Uint8Array), the type Node code expects.
          // note: -0 is written as the integer 0, as the JSON protocol writes it ("0").
          const expected = args.map((v) =>
            v instanceof Uint8Array ? Buffer.from(v) : Object.is(v, -0) ? 0 : v,
          );
          expect(parsed).toEqual({ ...message, arguments: expected });
        },
      ),
      { numRuns: 1_000 },
    );
  });
});

/** True when `frame` parses (at least up to a point) into a client Close message. */
function sendsClose(frame: Buffer): boolean {
  const seen: HubMessage[] = [];
  try {
    for (const message of messagePackProtocol.parse(frame, LIMIT)) seen.push(message);
  } catch {
    // a later record was malformed: what parsed before it still reached the server
  }
  return seen.some((m) => m.type === 7);
}

describe('property: a live server and random MessagePack frames', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('closes or answers each connection, and keeps serving', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          messageLike.map(([t, f]) => framed([t, ...f])),
          fc.uint8Array({ maxLength: 40 }).map(Buffer.from),
        ),
        async (frame) => {
          const raw = await RawMsgpackClient.open(server.url());
          try {
            expect(raw.handshake).toEqual({});
            raw.send(frame);
            // note: a Ping after the frame: either the connection closed, or it still reads (and answers).
            raw.send(framed([1, {}, 'probe', 'Echo', ['alive']]));
            await waitFor(
              () => raw.closeCode !== undefined || raw.messages.some((m) => m[0] === 3 && m[2] === 'probe'),
            );
            if (raw.closeCode !== undefined) {
              expect(raw.closeCode).toBe(1000);
              // note: a Close the client sent ends the connection without a Close back, as in SignalR;
              // anything else that closes it is answered with a Close that says why.
              if (!sendsClose(frame)) expect((raw.messages.at(-1) as unknown[])[0]).toBe(7);
            }
          } finally {
            raw.close();
          }
        },
      ),
      { numRuns: 40 },
    );
    const healthy = await connect(server.url(), {
      protocol: 'messagepack',
      transport: HttpTransportType.WebSockets,
    });
    expect(await healthy.invoke('Echo', 'still here')).toBe('still here');
    await healthy.stop();
  });
});
