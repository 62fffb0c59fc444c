import type { HubConnection } from '@microsoft/signalr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isRelayhubError, type RelayhubError } from '../../src/errors.js';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { jwtAuthenticator } from '../../src/hub/auth.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool, record } from '../helpers/client.js';
import { signToken, startServer, TEST_JWT_SECRET, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/proxies-test';
const authenticate = jwtAuthenticator({ secret: TEST_JWT_SECRET });

/** Every server API proxy, called from a hub method so that the caller-relative ones work too. */
const proxiesHub: HubDefinition = {
  authorizeGroupJoin: (_ctx, group) => !group.startsWith('vip-'),
  methods: {
    Join: (ctx, group: string) => ctx.groups.add(ctx.connectionId, group),
    Leave: (ctx, group: string) => ctx.groups.remove(ctx.connectionId, group),
    Send: async (ctx, kind: string, arg: unknown, tag: string) => {
      const c = ctx.clients;
      const ids = arg as string[];
      switch (kind) {
        case 'all':
          return c.all.send('msg', tag);
        case 'allExcept':
          return c.allExcept(ids).send('msg', tag);
        case 'client':
          return c.client(arg as string).send('msg', tag);
        case 'clients':
          return c.clients(ids).send('msg', tag);
        case 'group':
          return c.group(arg as string).send('msg', tag);
        case 'groupExcept': {
          const [group, except] = arg as [string, string[]];
          return c.groupExcept(group, except).send('msg', tag);
        }
        case 'groups':
          return c.groups(ids).send('msg', tag);
        case 'othersInGroup':
          return c.othersInGroup(arg as string).send('msg', tag);
        case 'others':
          return c.others.send('msg', tag);
        case 'caller':
          return c.caller.send('msg', tag);
        case 'user':
          return c.user(arg as string).send('msg', tag);
        case 'users':
          return c.users(ids).send('msg', tag);
        default:
          throw new Error(`unknown kind ${kind}`);
      }
    },
  },
};

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isRelayhubError(error)) return error.code;
    throw error;
  }
  throw new Error('expected a rejection');
}

describe('groups and users', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  describe('every proxy reaches exactly its recipients', () => {
    /** a1 and a2 are alice's, b is bob's, c is carol's, d is dave's. g1 = {a1, b}, g2 = {b, c}. */
    let conns: Record<'a1' | 'a2' | 'b' | 'c' | 'd', HubConnection>;
    let inbox: Map<HubConnection, unknown[][]>;
    let seq = 0;

    beforeEach(async () => {
      server = await startServer({ authenticate }, { [HUB]: proxiesHub });
      const url = server.url(HUB);
      const as = async (user: string) => clients.connect(url, { token: await signToken(user) });
      conns = {
        a1: await as('alice'),
        a2: await as('alice'),
        b: await as('bob'),
        c: await as('carol'),
        d: await as('dave'),
      };
      inbox = new Map(Object.values(conns).map((c) => [c, record(c, 'msg')]));
      await conns.a1.invoke('Join', 'g1');
      await conns.b.invoke('Join', 'g1');
      await conns.b.invoke('Join', 'g2');
      await conns.c.invoke('Join', 'g2');
    });

    const id = (name: keyof typeof conns): string => conns[name].connectionId as string;

    /**
     * `a1` calls `Send(kind, arg)`; exactly `expected` get the message (once), proven by a final marker
     * to everyone that arrives after it on every connection.
     */
    async function expectRecipients(
      kind: string,
      arg: unknown,
      expected: (keyof typeof conns)[],
    ): Promise<void> {
      const tag = `${kind}-${++seq}`;
      const marker = `marker-${seq}`;
      await conns.a1.invoke('Send', kind, arg, tag);
      await waitFor(() => expected.every((name) => inbox.get(conns[name])?.some(([t]) => t === tag)), {
        message: `${kind}: every expected recipient got it`,
      });
      await conns.a1.invoke('Send', 'all', null, marker);
      await waitFor(() => [...inbox.values()].every((calls) => calls.some(([t]) => t === marker)), {
        message: `${kind}: everyone got the marker`,
      });
      for (const [name, connection] of Object.entries(conns) as [keyof typeof conns, HubConnection][]) {
        const got = (inbox.get(connection) ?? []).map(([t]) => t);
        expect(got, `what ${name} received`).toEqual(expected.includes(name) ? [tag, marker] : [marker]);
        inbox.get(connection)?.splice(0);
      }
    }

    it('all', () => expectRecipients('all', null, ['a1', 'a2', 'b', 'c', 'd']));
    it('allExcept', () => expectRecipients('allExcept', [id('b'), id('c')], ['a1', 'a2', 'd']));
    it('client', () => expectRecipients('client', id('c'), ['c']));
    it('client of an unknown connection', () => expectRecipients('client', 'no-such-connection', []));
    it('clients', () => expectRecipients('clients', [id('a2'), id('d'), id('d')], ['a2', 'd']));
    it('group', () => expectRecipients('group', 'g1', ['a1', 'b']));
    it('group without members', () => expectRecipients('group', 'nobody-here', []));
    it('groupExcept', () => expectRecipients('groupExcept', ['g1', [id('a1')]], ['b']));
    it('groups: a connection in two groups receives once', () =>
      expectRecipients('groups', ['g1', 'g2'], ['a1', 'b', 'c']));
    it('othersInGroup', () => expectRecipients('othersInGroup', 'g1', ['b']));
    it('others', () => expectRecipients('others', null, ['a2', 'b', 'c', 'd']));
    it('caller', () => expectRecipients('caller', null, ['a1']));
    it('user: every connection of the user gets it', () => expectRecipients('user', 'alice', ['a1', 'a2']));
    it('user without connections', () => expectRecipients('user', 'mallory', []));
    it('users', () => expectRecipients('users', ['bob', 'carol', 'bob'], ['b', 'c']));

    it('the server API (outside hub methods) reaches the same recipients', async () => {
      const hub = (server as TestServer).server.hub(HUB);
      await hub.clients.group('g2').send('msg', 'from-server');
      await hub.clients.user('alice').send('msg', 'from-server');
      await waitFor(() =>
        (['a1', 'a2', 'b', 'c'] as const).every((n) =>
          inbox.get(conns[n])?.some(([t]) => t === 'from-server'),
        ),
      );
      await hub.clients.all.send('msg', 'end');
      await waitFor(() => [...inbox.values()].every((calls) => calls.some(([t]) => t === 'end')));
      expect(inbox.get(conns.d)?.map(([t]) => t)).toEqual(['end']);
      expect(inbox.get(conns.b)?.map(([t]) => t)).toEqual(['from-server', 'end']);
    });

    it('a connection that left a group no longer receives its messages', async () => {
      await conns.b.invoke('Leave', 'g1');
      await expectRecipients('group', 'g1', ['a1']);
      // note: leaving one group keeps the other.
      await expectRecipients('group', 'g2', ['b', 'c']);
    });
  });

  describe('the demo hub with JWT users', () => {
    it('joins, sends to a group, leaves, and sends to a user', async () => {
      server = await startServer({ authenticate });
      const url = server.url(DEMO_HUB_PATH);
      const alice = await clients.connect(url, { token: await signToken('alice') });
      const alice2 = await clients.connect(url, { token: await signToken('alice') });
      const bob = await clients.connect(url, { token: await signToken('bob') });
      const carol = await clients.connect(url, { token: await signToken('carol') });
      const got = new Map([alice, alice2, bob, carol].map((c) => [c, record(c, 'message')]));

      await alice.invoke('JoinGroup', 'room-1');
      await bob.invoke('JoinGroup', 'room-1');
      await carol.invoke('SendToGroup', 'room-1', 'hi room');
      await waitFor(() => got.get(alice)?.length === 1 && got.get(bob)?.length === 1);
      expect(got.get(alice)).toEqual([['carol', 'hi room']]);
      expect(got.get(bob)).toEqual([['carol', 'hi room']]);

      await bob.invoke('LeaveGroup', 'room-1');
      await carol.invoke('SendToGroup', 'room-1', 'second');
      await waitFor(() => got.get(alice)?.length === 2);

      await bob.invoke('SendToUser', 'alice', 'psst');
      await waitFor(() => got.get(alice)?.length === 3 && got.get(alice2)?.length === 1);

      await carol.invoke('SendToAll', 'the end');
      await waitFor(() => [...got.values()].every((calls) => calls.some(([, text]) => text === 'the end')));
      expect(got.get(alice)).toEqual([
        ['carol', 'hi room'],
        ['carol', 'second'],
        ['bob', 'psst'],
        ['carol', 'the end'],
      ]);
      expect(got.get(alice2)).toEqual([
        ['bob', 'psst'],
        ['carol', 'the end'],
      ]);
      expect(got.get(bob)).toEqual([
        ['carol', 'hi room'],
        ['carol', 'the end'],
      ]);
      expect(got.get(carol)).toEqual([['carol', 'the end']]);
    });

    it('refuses empty group names with a clear error', async () => {
      server = await startServer({ authenticate });
      const alice = await clients.connect(server.url(DEMO_HUB_PATH), { token: await signToken('alice') });
      await expect(alice.invoke('JoinGroup', '')).rejects.toThrow("'group' must be a non-empty string.");
    });
  });

  describe('group management', () => {
    it('rejects groups.add and groups.remove of an unknown connection quickly with ERR_CONNECTION_NOT_FOUND', async () => {
      server = await startServer({ authenticate }, { [HUB]: proxiesHub });
      const hub = server.server.hub(HUB);
      const started = Date.now();
      expect(await codeOf(hub.groups.add('no-such-connection', 'g'))).toBe('ERR_CONNECTION_NOT_FOUND');
      expect(await codeOf(hub.groups.remove('no-such-connection', 'g'))).toBe('ERR_CONNECTION_NOT_FOUND');
      expect(Date.now() - started).toBeLessThan(500);
    });

    it('rejects a join that authorizeGroupJoin refuses with ERR_FORBIDDEN and does not add it', async () => {
      server = await startServer({ authenticate }, { [HUB]: proxiesHub });
      const hub = server.server.hub(HUB);
      const alice = await clients.connect(server.url(HUB), { token: await signToken('alice') });
      const got = record(alice, 'msg');
      const error = await hub.groups.add(alice.connectionId as string, 'vip-lounge').catch((e: unknown) => e);
      expect(isRelayhubError(error)).toBe(true);
      expect((error as RelayhubError).code).toBe('ERR_FORBIDDEN');
      expect((error as RelayhubError).message).toContain('vip-lounge');
      // note: from a hub method the refusal fails the invocation.
      await expect(alice.invoke('Join', 'vip-lounge')).rejects.toThrow("invoking 'Join'");

      await hub.groups.add(alice.connectionId as string, 'lobby');
      await hub.clients.group('vip-lounge').send('msg', 'vip');
      await hub.clients.group('lobby').send('msg', 'lobby');
      await waitFor(() => got.length === 1);
      expect(got).toEqual([['lobby']]);
    });

    it('ends group membership with the connection', async () => {
      server = await startServer({ authenticate }, { [HUB]: proxiesHub });
      const hub = server.server.hub(HUB);
      const url = server.url(HUB);
      const leaving = await clients.connect(url, { token: await signToken('alice') });
      const staying = await clients.connect(url, { token: await signToken('bob') });
      await leaving.invoke('Join', 'room');
      await staying.invoke('Join', 'room');
      const leavingId = leaving.connectionId as string;
      await leaving.stop();
      await waitFor(
        async () => (await codeOf(hub.groups.add(leavingId, 'other'))) === 'ERR_CONNECTION_NOT_FOUND',
      );

      // note: a new connection of the same user is not in the old connection's groups.
      const back = await clients.connect(url, { token: await signToken('alice') });
      const backGot = record(back, 'msg');
      const stayingGot = record(staying, 'msg');
      await hub.clients.group('room').send('msg', 'room');
      await hub.clients.all.send('msg', 'marker');
      await waitFor(() => backGot.length === 1 && stayingGot.length === 2);
      expect(backGot).toEqual([['marker']]);
      expect(stayingGot).toEqual([['room'], ['marker']]);
      expect(server.server.connectionCount).toBe(2);
    });
  });
});
