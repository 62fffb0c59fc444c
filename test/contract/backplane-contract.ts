/**
 * The contract every backplane implementation passes: three hub servers share one backplane medium and
 * official SignalR clients spread over them check who receives each send of the server API, groups across
 * instances, client results across instances, per-sender ordering and the end of group membership.
 *
 * An implementation runs it in three lines, e.g. `test/contract/memory.test.ts`:
 *
 * ```ts
 * backplaneContract('memory', async () => {
 *   const bus = new MemoryBus();
 *   return { createBackplane: () => new MemoryBackplane({ bus }), close: async () => {} };
 * });
 * ```
 *
 * Negative checks (who must NOT receive) use no sleeps: after the expected receivers got a message, the
 * same sender sends a marker to everyone, and the check waits until every client got the marker. Frames
 * from one sender reach each connection in order, so a client that has the marker but not the message
 * will never get the message. Group and user names carry a random suffix per test, so that runs sharing
 * one medium (one Redis) never hear each other.
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Backplane } from '../../src/backplane/backplane.js';
import { type ErrorCode, RelayhubError } from '../../src/errors.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import type { CallerClients, ClientProxy, HubClients } from '../../src/hub/clients.js';
import type { HubContext, HubDefinition } from '../../src/hub/hub.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

export interface BackplaneHarness {
  /** A new backplane for one more instance; all backplanes of one harness share one medium (bus / Redis + prefix). */
  createBackplane(): Backplane | Promise<Backplane>;
  /** Frees what the harness holds (not the backplanes: each HubServer closes its own). */
  close(): Promise<void>;
}

const HUB = '/hubs/contract';
/** How long an error for an unknown or vanished connection may take. */
const ERROR_WITHIN_MS = 2_000;
const WAIT = { timeoutMs: 5_000 };

/** Who a send goes to, as JSON so that a client can hand it to a hub method. */
type Target =
  | { kind: 'all' }
  | { kind: 'allExcept'; ids: string[] }
  | { kind: 'client'; id: string }
  | { kind: 'clients'; ids: string[] }
  | { kind: 'group'; name: string }
  | { kind: 'groupExcept'; name: string; ids: string[] }
  | { kind: 'groups'; names: string[] }
  | { kind: 'user'; id: string }
  | { kind: 'users'; ids: string[] }
  | { kind: 'caller' }
  | { kind: 'others' }
  | { kind: 'othersInGroup'; name: string };

function proxyFor(clients: HubClients | CallerClients, target: Target): ClientProxy {
  const caller = (): CallerClients => {
    if (!('caller' in clients)) throw new Error(`'${target.kind}' exists only inside a hub method.`);
    return clients;
  };
  switch (target.kind) {
    case 'all':
      return clients.all;
    case 'allExcept':
      return clients.allExcept(target.ids);
    case 'client':
      return clients.client(target.id);
    case 'clients':
      return clients.clients(target.ids);
    case 'group':
      return clients.group(target.name);
    case 'groupExcept':
      return clients.groupExcept(target.name, target.ids);
    case 'groups':
      return clients.groups(target.names);
    case 'user':
      return clients.user(target.id);
    case 'users':
      return clients.users(target.ids);
    case 'caller':
      return caller().caller;
    case 'others':
      return caller().others;
    case 'othersInGroup':
      return caller().othersInGroup(target.name);
  }
}

/** Every client receives `msg(id)`; the hub methods send through the caller's own instance. */
const contractHub: HubDefinition = {
  methods: {
    /** A round trip: invocations run once the server has made the connection addressable. */
    Ready: (ctx) => ctx.connectionId,
    Join: (ctx, group: string) => ctx.groups.add(ctx.connectionId, group),
    AddToGroup: (ctx, connectionId: string, group: string) => ctx.groups.add(connectionId, group),
    RemoveFromGroup: (ctx, connectionId: string, group: string) => ctx.groups.remove(connectionId, group),
    Send: (ctx, target: Target, id: string) => proxyFor(ctx.clients, target).send('msg', id),
    /** Starts every send before awaiting any, as a busy sender does. */
    SendMany: async (ctx, target: Target, ids: string[]) => {
      const proxy = proxyFor(ctx.clients, target);
      await Promise.all(ids.map((id) => proxy.send('msg', id)));
    },
    Ask: (ctx, connectionId: string, value: unknown) =>
      ctx.clients.client(connectionId).invoke('answer', value),
  },
};

type PeerName = 'a0' | 'a1' | 'b0' | 'b1' | 'c0' | 'c1';

/** One official client: its connection, the instance it is on, and every `msg` it received, in order. */
interface Peer {
  readonly name: PeerName;
  readonly server: 0 | 1 | 2;
  readonly user: string;
  readonly conn: HubConnection;
  readonly log: string[];
  /** The current connection id (a new one after a restart). */
  readonly id: string;
}

/**
 * Instance A (servers[0]) holds a0 (alice, the caller of hub methods) and a1 (bob); instance B holds b0
 * (carol) and b1 (multi); instance C holds c0 (multi) and c1 (dave). Groups: red = {a0, b0, c0},
 * blue = {b0, c1}.
 */
type UserKey = 'alice' | 'bob' | 'carol' | 'multi' | 'dave';

const LAYOUT: readonly { name: PeerName; server: 0 | 1 | 2; user: UserKey }[] = [
  { name: 'a0', server: 0, user: 'alice' },
  { name: 'a1', server: 0, user: 'bob' },
  { name: 'b0', server: 1, user: 'carol' },
  { name: 'b1', server: 1, user: 'multi' },
  { name: 'c0', server: 2, user: 'multi' },
  { name: 'c1', server: 2, user: 'dave' },
];

interface World {
  servers: TestServer[];
  peers: Record<PeerName, Peer>;
  list: Peer[];
  /** Unique per test: `${base}-${suffix}`. */
  name(base: string): string;
  red: string;
  blue: string;
  users: Record<UserKey, string>;
  hub(server: 0 | 1 | 2): HubContext;
}

/** A sender of the server API: a hub method on instance A (caller a0), or `server.hub(path)` on instance B. */
interface Sender {
  label: string;
  inHub: boolean;
  send(w: World, target: Target, id: string): Promise<unknown>;
  sendMany(w: World, target: Target, ids: string[]): Promise<unknown>;
}

const SENDERS: readonly Sender[] = [
  {
    label: 'a hub method on instance A',
    inHub: true,
    send: (w, target, id) => w.peers.a0.conn.invoke('Send', target, id),
    sendMany: (w, target, ids) => w.peers.a0.conn.invoke('SendMany', target, ids),
  },
  {
    label: 'server.hub(path).clients on instance B',
    inHub: false,
    send: (w, target, id) => proxyFor(w.hub(1).clients, target).send('msg', id),
    sendMany: (w, target, ids) => {
      const proxy = proxyFor(w.hub(1).clients, target);
      return Promise.all(ids.map((id) => proxy.send('msg', id)));
    },
  },
];

interface RecipientCase {
  name: string;
  /** caller, others and othersInGroup exist only inside a hub method. */
  inHubOnly?: boolean;
  target(w: World): Target;
  expected: readonly PeerName[];
}

const RECIPIENT_CASES: readonly RecipientCase[] = [
  { name: 'all', target: () => ({ kind: 'all' }), expected: ['a0', 'a1', 'b0', 'b1', 'c0', 'c1'] },
  {
    name: 'allExcept',
    target: (w) => ({ kind: 'allExcept', ids: [w.peers.a1.id, w.peers.c0.id] }),
    expected: ['a0', 'b0', 'b1', 'c1'],
  },
  { name: 'client', target: (w) => ({ kind: 'client', id: w.peers.c1.id }), expected: ['c1'] },
  {
    name: 'clients',
    target: (w) => ({ kind: 'clients', ids: [w.peers.a1.id, w.peers.b1.id, w.peers.c1.id] }),
    expected: ['a1', 'b1', 'c1'],
  },
  { name: 'group', target: (w) => ({ kind: 'group', name: w.red }), expected: ['a0', 'b0', 'c0'] },
  {
    name: 'groupExcept',
    target: (w) => ({ kind: 'groupExcept', name: w.red, ids: [w.peers.b0.id] }),
    expected: ['a0', 'c0'],
  },
  {
    name: 'groups (b0 is in both groups and receives once)',
    target: (w) => ({ kind: 'groups', names: [w.red, w.blue] }),
    expected: ['a0', 'b0', 'c0', 'c1'],
  },
  {
    name: 'othersInGroup',
    inHubOnly: true,
    target: (w) => ({ kind: 'othersInGroup', name: w.red }),
    expected: ['b0', 'c0'],
  },
  {
    name: 'others',
    inHubOnly: true,
    target: () => ({ kind: 'others' }),
    expected: ['a1', 'b0', 'b1', 'c0', 'c1'],
  },
  { name: 'caller', inHubOnly: true, target: () => ({ kind: 'caller' }), expected: ['a0'] },
  {
    name: 'user (every connection of the user, on every instance)',
    target: (w) => ({ kind: 'user', id: w.users.multi }),
    expected: ['b1', 'c0'],
  },
  {
    name: 'users',
    target: (w) => ({ kind: 'users', ids: [w.users.bob, w.users.multi] }),
    expected: ['a1', 'b1', 'c0'],
  },
];

let sequence = 0;
const nextId = (prefix: string): string => `${prefix}-${++sequence}`;
const suffix = (): string => randomBytes(4).toString('hex');

/**
 * Sends one message and checks its exact recipients: each expected peer got it once, every other peer
 * not at all (proved by a marker to everyone from the same sender, see the file comment).
 */
async function expectRecipients(
  w: World,
  expected: readonly PeerName[],
  send: (id: string) => Promise<unknown>,
  marker: (id: string) => Promise<unknown>,
): Promise<void> {
  const id = nextId('msg');
  await send(id);
  await waitFor(() => expected.every((name) => w.peers[name].log.includes(id)), {
    ...WAIT,
    message: `Expected ${expected.join(', ') || 'nobody'} to receive ${id}`,
  });
  const mark = nextId('marker');
  await marker(mark);
  await waitFor(() => w.list.every((peer) => peer.log.includes(mark)), {
    ...WAIT,
    message: `Expected every client to receive the marker ${mark}`,
  });
  const received = Object.fromEntries(w.list.map((p) => [p.name, p.log.filter((x) => x === id).length]));
  const wanted = Object.fromEntries(w.list.map((p) => [p.name, expected.includes(p.name) ? 1 : 0]));
  expect(received).toEqual(wanted);
}

/**
 * Waits until the server has made a started client addressable on every instance: the handshake answer
 * comes before that (a subscribing backplane may still be subscribing), invocations only after it.
 */
async function ready(conn: HubConnection): Promise<void> {
  expect(await conn.invoke('Ready')).toBe(conn.connectionId);
}

/** Awaits `promise` for at most `limitMs` and returns the RelayhubError it rejected with. */
async function expectRelayhubError(
  promise: Promise<unknown>,
  codes: readonly ErrorCode[],
  limitMs = ERROR_WITHIN_MS,
): Promise<RelayhubError> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    promise.then(
      (value) => ({ settled: 'resolved' as const, value }),
      (error: unknown) => ({ settled: 'rejected' as const, error }),
    ),
    new Promise<{ settled: 'pending' }>((resolve) => {
      timer = setTimeout(() => resolve({ settled: 'pending' }), limitMs);
    }),
  ]);
  clearTimeout(timer);
  const elapsedMs = performance.now() - started;
  if (outcome.settled === 'pending') throw new Error(`Expected a rejection within ${limitMs} ms`);
  if (outcome.settled === 'resolved') {
    throw new Error(`Expected a rejection, but it resolved with ${JSON.stringify(outcome.value)}`);
  }
  expect(outcome.error).toBeInstanceOf(RelayhubError);
  const error = outcome.error as RelayhubError;
  expect(codes).toContain(error.code);
  expect(elapsedMs).toBeLessThan(limitMs);
  return error;
}

export function backplaneContract(name: string, createHarness: () => Promise<BackplaneHarness>): void {
  describe(`backplane contract: ${name}`, () => {
    const pool = new ClientPool();
    let harness: BackplaneHarness | undefined;
    let servers: TestServer[] = [];
    let w: World;

    beforeEach(async () => {
      harness = await createHarness();
      for (let i = 0; i < 3; i++) {
        const backplane = await harness.createBackplane();
        servers.push(
          await startServer(
            { backplane, authenticate: jwtAuthenticator({ secret: TEST_JWT_SECRET }) },
            { [HUB]: contractHub },
          ),
        );
      }
      const tag = suffix();
      const user = (base: string) => `${base}-${tag}`;
      const users: Record<UserKey, string> = {
        alice: user('alice'),
        bob: user('bob'),
        carol: user('carol'),
        multi: user('multi'),
        dave: user('dave'),
      };
      const list = await Promise.all(
        LAYOUT.map(async (spec): Promise<Peer> => {
          const userId = users[spec.user];
          const url = (servers[spec.server] as TestServer).url(HUB);
          const conn = pool.add(buildClient(url, { token: await signToken(userId) }));
          const log: string[] = [];
          conn.on('msg', (id: string) => {
            log.push(id);
          });
          await conn.start();
          await ready(conn);
          return {
            name: spec.name,
            server: spec.server,
            user: userId,
            conn,
            log,
            get id() {
              const id = conn.connectionId;
              if (!id) throw new Error(`${spec.name} is not connected`);
              return id;
            },
          };
        }),
      );
      const peers = Object.fromEntries(list.map((p) => [p.name, p])) as Record<PeerName, Peer>;
      w = {
        servers,
        peers,
        list,
        name: (base) => `${base}-${tag}`,
        red: `red-${tag}`,
        blue: `blue-${tag}`,
        users,
        hub: (i) => (servers[i] as TestServer).server.hub(HUB),
      };
      for (const p of [peers.a0, peers.b0, peers.c0]) await p.conn.invoke('Join', w.red);
      for (const p of [peers.b0, peers.c1]) await p.conn.invoke('Join', w.blue);
    });

    afterEach(async () => {
      await pool.stopAll();
      const closed = await Promise.allSettled(servers.map((s) => s.close()));
      servers = [];
      await harness?.close();
      harness = undefined;
      const failed = closed.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });

    for (const sender of SENDERS) {
      describe(`exact recipients of sends from ${sender.label}`, () => {
        for (const c of RECIPIENT_CASES) {
          if (c.inHubOnly && !sender.inHub) continue;
          it(c.name, async () => {
            await expectRecipients(
              w,
              c.expected,
              (id) => sender.send(w, c.target(w), id),
              (id) => sender.send(w, { kind: 'all' }, id),
            );
          });
        }
      });
    }

    describe('groups across instances', () => {
      it('server API: add and remove a connection on another instance resolve once done', async () => {
        const group = w.name('moved');
        const a = w.hub(0);
        const viaA = (target: Target) => (id: string) => proxyFor(a.clients, target).send('msg', id);
        // c1 is on instance C; the send right after each await must see the change.
        await a.groups.add(w.peers.c1.id, group);
        await expectRecipients(w, ['c1'], viaA({ kind: 'group', name: group }), viaA({ kind: 'all' }));
        await a.groups.remove(w.peers.c1.id, group);
        await expectRecipients(w, [], viaA({ kind: 'group', name: group }), viaA({ kind: 'all' }));
      });

      it('hub method: add and remove a connection on another instance resolve once done', async () => {
        const group = w.name('moved');
        const a0 = w.peers.a0.conn;
        const viaA0 = (target: Target) => (id: string) => a0.invoke('Send', target, id);
        await a0.invoke('AddToGroup', w.peers.b1.id, group);
        await expectRecipients(w, ['b1'], viaA0({ kind: 'group', name: group }), viaA0({ kind: 'all' }));
        await a0.invoke('RemoveFromGroup', w.peers.b1.id, group);
        await expectRecipients(w, [], viaA0({ kind: 'group', name: group }), viaA0({ kind: 'all' }));
      });

      it('add and remove reject ERR_CONNECTION_NOT_FOUND quickly for an unknown connection', async () => {
        const unknown = randomBytes(16).toString('base64url');
        const group = w.name('nobody');
        await expectRelayhubError(w.hub(0).groups.add(unknown, group), ['ERR_CONNECTION_NOT_FOUND']);
        await expectRelayhubError(w.hub(1).groups.remove(unknown, group), ['ERR_CONNECTION_NOT_FOUND']);
      });

      it('membership ends with the connection: a reconnected client is not in the old group', async () => {
        const group = w.name('gone');
        const { b0, c1 } = w.peers;
        await b0.conn.invoke('Join', group);
        await c1.conn.invoke('Join', group);
        const a = w.hub(0);
        const viaA = (target: Target) => (id: string) => proxyFor(a.clients, target).send('msg', id);
        await expectRecipients(w, ['b0', 'c1'], viaA({ kind: 'group', name: group }), viaA({ kind: 'all' }));

        const oldId = c1.id;
        await c1.conn.stop();
        const instanceC = w.servers[2] as TestServer;
        await waitFor(() => instanceC.server.connectionCount === 1, {
          ...WAIT,
          message: 'Expected instance C to forget the stopped connection',
        });
        await c1.conn.start();
        await ready(c1.conn);
        expect(c1.id).not.toBe(oldId);

        await expectRecipients(w, ['b0'], viaA({ kind: 'group', name: group }), viaA({ kind: 'all' }));
        await expectRelayhubError(a.groups.add(oldId, group), ['ERR_CONNECTION_NOT_FOUND']);
      });
    });

    describe('client results across instances', () => {
      it('resolves with what the client returned, from another instance and from the own one', async () => {
        const { b0, c1 } = w.peers;
        b0.conn.on('answer', (n: number) => ({ by: 'b0', doubled: n * 2 }));
        c1.conn.on('answer', (n: number) => ({ by: 'c1', doubled: n * 2 }));
        // instance A asks b0 on instance B
        expect(await w.hub(0).clients.client(b0.id).invoke('answer', 2)).toEqual({ by: 'b0', doubled: 4 });
        // a hub method on instance A asks c1 on instance C
        expect(await w.peers.a0.conn.invoke('Ask', c1.id, 5)).toEqual({ by: 'c1', doubled: 10 });
        // instance B asks its own b0
        expect(await w.hub(1).clients.client(b0.id).invoke('answer', 3)).toEqual({ by: 'b0', doubled: 6 });
      });

      it("rejects ERR_CLIENT_RESULT when the client's handler throws", async () => {
        const { b0 } = w.peers;
        b0.conn.on('answer', () => {
          throw new Error('boom');
        });
        const error = await expectRelayhubError(w.hub(0).clients.client(b0.id).invoke('answer', 2), [
          'ERR_CLIENT_RESULT',
        ]);
        // note: the client's text exactly, across instances too.
        expect(error.message).toBe('Error: boom');
      });

      it('rejects ERR_CONNECTION_NOT_FOUND quickly for an unknown connection', async () => {
        const unknown = randomBytes(16).toString('base64url');
        await expectRelayhubError(w.hub(0).clients.client(unknown).invoke('answer', 2), [
          'ERR_CONNECTION_NOT_FOUND',
        ]);
      });

      it('rejects when the client on another instance disconnects while the invoke is pending', async () => {
        const { b0 } = w.peers;
        let asked = false;
        b0.conn.on('answer', () => {
          asked = true;
          return new Promise(() => {}); // never answers
        });
        const pending = w.hub(0).clients.client(b0.id).invoke('answer', 2);
        // note: keeps the rejection handled while the client is being stopped.
        pending.catch(() => {});
        await waitFor(() => asked, { ...WAIT, message: 'Expected b0 to be asked' });
        await b0.conn.stop();
        await expectRelayhubError(pending, ['ERR_CONNECTION_CLOSED', 'ERR_CONNECTION_NOT_FOUND']);
      });
    });

    describe('ordering', () => {
      const COUNT = 200;

      for (const sender of SENDERS) {
        it(`${COUNT} sends from ${sender.label} reach both instances of a user in order`, async () => {
          const ids = Array.from({ length: COUNT }, (_, i) => `order-${i}-${suffix()}`);
          const { b1, c0 } = w.peers;
          await sender.sendMany(w, { kind: 'user', id: w.users.multi }, ids);
          const last = ids[COUNT - 1] as string;
          await waitFor(() => b1.log.includes(last) && c0.log.includes(last), {
            ...WAIT,
            message: 'Expected both connections of the user to get the last send',
          });
          const wanted = new Set(ids);
          expect(b1.log.filter((id) => wanted.has(id))).toEqual(ids);
          expect(c0.log.filter((id) => wanted.has(id))).toEqual(ids);
        });
      }
    });

    describe('local recipients', () => {
      it('a client on the sending instance gets the send', async () => {
        const a = w.hub(0);
        const viaA = (target: Target) => (id: string) => proxyFor(a.clients, target).send('msg', id);
        const { a0, a1 } = w.peers;
        // audiences held only by the sending instance
        await expectRecipients(w, ['a1'], viaA({ kind: 'client', id: a1.id }), viaA({ kind: 'all' }));
        await expectRecipients(
          w,
          ['a0', 'a1'],
          viaA({ kind: 'clients', ids: [a0.id, a1.id] }),
          viaA({ kind: 'all' }),
        );
        const viaA0 = (target: Target) => (id: string) => a0.conn.invoke('Send', target, id);
        await expectRecipients(w, ['a1'], viaA0({ kind: 'user', id: w.users.bob }), viaA0({ kind: 'all' }));
        // local and remote recipients of one send
        await expectRecipients(
          w,
          ['a1', 'c1'],
          viaA({ kind: 'users', ids: [w.users.bob, w.users.dave] }),
          viaA({ kind: 'all' }),
        );
      });
    });
  });
}
