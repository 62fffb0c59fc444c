/**
 * The official client (`@microsoft/signalr` + `@microsoft/signalr-protocol-msgpack`) over every transport
 * and hub protocol it can combine (SSE carries text only, so JSON there): the same hub API, auth (the
 * token in the query for SSE), the streams backplane and the reliable lane's ack, on each.
 */
import { HttpTransportType, type HubConnection, HubConnectionState, Subject } from '@microsoft/signalr';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { HubError } from '../../src/errors.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import type { HubRuntime } from '../../src/hub/hub-runtime.js';
import { messagePackProtocol } from '../../src/protocol/messagepack/messagepack-protocol.js';
import { type ClientOptions, ClientPool, record } from '../helpers/client.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/matrix';

const hub: HubDefinition = {
  methods: {
    Echo: (_ctx, value: unknown) => value,
    Bytes: () => Buffer.from([1, 2, 3]),
    Fail: () => {
      throw new HubError('No such order.');
    },
    Join: (ctx, group: string) => ctx.groups.add(ctx.connectionId, group),
    ToGroup: (ctx, group: string, value: unknown) => ctx.clients.group(group).send('got', value),
    ToUser: (ctx, userId: string, value: unknown) => ctx.clients.user(userId).send('got', value),
    Count: async function* (_ctx, n: number) {
      for (let i = 1; i <= n; i++) yield i;
    },
    Sum: async (_ctx, items: AsyncIterable<number>) => {
      let sum = 0;
      for await (const item of items) sum += item;
      return sum;
    },
    AskCaller: (ctx, question: string) => ctx.clients.caller.invoke('answer', question),
  },
};

const combos: [string, HttpTransportType, 'json' | 'messagepack'][] = [
  ['WebSockets', HttpTransportType.WebSockets, 'json'],
  ['WebSockets', HttpTransportType.WebSockets, 'messagepack'],
  ['ServerSentEvents', HttpTransportType.ServerSentEvents, 'json'],
  ['LongPolling', HttpTransportType.LongPolling, 'json'],
  ['LongPolling', HttpTransportType.LongPolling, 'messagepack'],
];

let prefix: string;
let server: TestServer;
let seq = 0;
const uniqueUser = () => `u${process.pid}-${seq++}`;

beforeAll(async () => {
  prefix = uniquePrefix('matrix');
  server = await startServer(
    {
      backplane: new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix: prefix }),
      authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }),
    },
    { [HUB]: hub },
  );
});

afterAll(async () => {
  await server?.close();
  await deletePrefix(REDIS_URL, prefix);
});

describe.each(combos)('%s × %s', (_name, transport, protocol) => {
  const clients = new ClientPool();
  afterEach(async () => {
    vi.restoreAllMocks();
    await clients.stopAll();
  });

  async function connect(userId = uniqueUser(), extra: ClientOptions = {}): Promise<HubConnection> {
    return clients.connect(server.url(HUB), {
      token: await signToken(userId),
      transport,
      protocol,
      ...extra,
    });
  }

  it('invokes, gets HubError texts, and carries binary and dates as the protocol does', async () => {
    const c = await connect();
    expect(c.connectionId).toBeTypeOf('string');
    expect(await c.invoke('Echo', { text: 'héllo', n: [1, 2.5, null] })).toEqual({
      text: 'héllo',
      n: [1, 2.5, null],
    });
    await expect(c.invoke('Fail')).rejects.toThrow(
      "An unexpected error occurred invoking 'Fail' on the server. HubException: No such order.",
    );
    await expect(c.invoke('Nope')).rejects.toThrow("Failed to invoke 'Nope': unknown hub method.");
    const when = new Date('2026-01-02T03:04:05.678Z');
    if (protocol === 'messagepack') {
      expect(await c.invoke('Bytes')).toEqual(new Uint8Array([1, 2, 3]));
      const bytes = new Uint8Array([0, 255, 7]);
      expect(new Uint8Array((await c.invoke('Echo', bytes)) as Uint8Array)).toEqual(bytes);
      expect(await c.invoke('Echo', when)).toEqual(when);
    } else {
      // note: JSON carries binary as base64 and dates as ISO strings, as ASP.NET's JSON protocol does.
      expect(await c.invoke('Bytes')).toBe('AQID');
      expect(await c.invoke('Echo', when)).toBe(when.toISOString());
    }
  });

  it('sends to groups and users, reaching clients of the other protocols, encoding once per protocol', async () => {
    const group = `g-${uniqueUser()}`;
    const bob = uniqueUser();
    const me = await connect();
    const sameKind = await connect(bob);
    const jsonWs = await clients.connect(server.url(HUB), {
      token: await signToken(uniqueUser()),
      transport: HttpTransportType.WebSockets,
    });
    const packedWs = await clients.connect(server.url(HUB), {
      token: await signToken(uniqueUser()),
      transport: HttpTransportType.WebSockets,
      protocol: 'messagepack',
    });
    const seen = [me, sameKind, jsonWs, packedWs].map((c) => record(c, 'got'));
    for (const c of [me, sameKind, jsonWs, packedWs]) await c.invoke('Join', group);
    const write = vi.spyOn(messagePackProtocol, 'write');
    await me.invoke('ToGroup', group, { hello: 'group' });
    await waitFor(() => seen.every((calls) => calls.length === 1));
    for (const calls of seen) expect(calls[0]).toEqual([{ hello: 'group' }]);
    const invocations = write.mock.calls.filter(([m]) => m.type === 1 && m.target === 'got');
    expect(invocations).toHaveLength(1);
    await me.invoke('ToUser', bob, 'for bob');
    await waitFor(() => seen[1]!.length === 2);
    expect(seen[1]![1]).toEqual(['for bob']);
    expect(seen[0]).toHaveLength(1);
  });

  it('streams both ways', async () => {
    const c = await connect();
    const items: number[] = [];
    await new Promise<void>((resolve, reject) => {
      c.stream<number>('Count', 5).subscribe({
        next: (i) => items.push(i),
        complete: resolve,
        error: reject,
      });
    });
    expect(items).toEqual([1, 2, 3, 4, 5]);
    const upload = new Subject<number>();
    const sum = c.invoke('Sum', upload);
    for (const n of [10, 20, 30]) upload.next(n);
    upload.complete();
    expect(await sum).toBe(60);
  });

  it('answers client results', async () => {
    const c = await connect();
    c.on('answer', (question: string) => `answer to ${question}`);
    expect(await c.invoke('AskCaller', 'life')).toBe('answer to life');
  });

  it('reconnects when the server closes with allowReconnect', async () => {
    const c = await connect(uniqueUser(), { reconnectDelays: [0, 50, 200] });
    const before = c.connectionId as string;
    const reconnected = new Promise<string | undefined>((resolve) => c.onreconnected(resolve));
    const runtime = server.server.hub(HUB) as HubRuntime;
    runtime.registry.get(before)?.close('Please move.', true);
    const after = await reconnected;
    expect(after).toBeTypeOf('string');
    expect(after).not.toBe(before);
    expect(c.state).toBe(HubConnectionState.Connected);
    expect(await c.invoke('Echo', 'again')).toBe('again');
  });

  it('refuses a client without a token', async () => {
    await expect(clients.connect(server.url(HUB), { transport, protocol })).rejects.toThrow(
      /401|Unauthorized/,
    );
  });

  it("acks reliable messages with the metadata argument, deduplicated by the client's handler", async () => {
    const userId = uniqueUser();
    const c = await connect(userId);
    const got: unknown[][] = [];
    c.on('note', (...args: unknown[]) => {
      got.push(args);
      return true;
    });
    const context = server.server.hub(HUB);
    const before = (await context.reliable.metrics()).acked;
    const first = await context.reliable.send({
      userId,
      target: 'note',
      args: [{ n: 1 }],
      key: `${userId}-1`,
    });
    const again = await context.reliable.send({
      userId,
      target: 'note',
      args: [{ n: 1 }],
      key: `${userId}-1`,
    });
    expect(again).toMatchObject({ duplicate: true, messageId: first.messageId });
    await waitFor(async () => (await context.reliable.metrics()).acked >= before + 1);
    expect(got).toEqual([[{ n: 1 }, { messageId: first.messageId, offset: 1 }]]);
  });
});
