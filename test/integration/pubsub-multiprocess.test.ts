/**
 * The PUB/SUB backplane across real OS processes: three hub instances (separate `node` processes) share
 * the Redis at REDIS_URL under a unique channel prefix, and official @microsoft/signalr clients spread over
 * them check who receives each send of the server API.
 *
 * Negative checks (who must NOT receive) use no sleeps: after the expected receivers got a message, the
 * same sender sends a marker through `all`, and the check waits until every client got the marker. Frames
 * from one sender reach each connection in the order they were published, so a client that has the marker
 * but not the message will never get the message.
 *
 * The same suite runs on one Redis and on a private Redis Cluster (3 primaries + 3 replicas, started for
 * this file), where the instances run with `--redis-cluster` and use sharded PUB/SUB.
 *
 * Needs `npm run build` (the instances run from dist/).
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

interface Peer {
  name: string;
  userId: string;
  /** Index of the instance (process) it is connected to. */
  instance: number;
  conn: HubConnection;
  id: string;
  /** Every `message(from, text)` it received. */
  got: unknown[][];
}

const tag = (label: string) => `${label}-${randomBytes(3).toString('hex')}`;

const count = (peer: Peer, text: string) => peer.got.filter((args) => args[1] === text).length;

/** Resolves with the settled outcome of `promise` and how long it took, failing after `limitMs`. */
async function timed<T>(
  promise: Promise<T>,
  limitMs: number,
): Promise<{ ok: boolean; value?: T; error?: Error; ms: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    promise.then(
      (value) => ({ ok: true, value }),
      (error: Error) => ({ ok: false, error }),
    ),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No outcome within ${limitMs} ms (hang).`)), limitMs);
    }),
  ]);
  clearTimeout(timer);
  return { ...outcome, ms: Date.now() - started };
}

/**
 * Who received `text` (each must have it exactly once, from `sender`), proven complete with an `all`
 * marker from the same sender (sent with `allMarker`).
 */
async function recipientsOf(
  peers: Peer[],
  sender: Peer,
  text: string,
  expected: Peer[],
  allMarker: (sender: Peer, marker: string) => Promise<unknown>,
  from: (sender: Peer) => string = (s) => s.id,
): Promise<string[]> {
  await waitFor(() => expected.every((p) => count(p, text) >= 1), {
    timeoutMs: 5_000,
    message: `'${text}' to reach ${expected.map((p) => p.name).join(', ') || 'nobody'}`,
  });
  const marker = `${text}#marker`;
  await allMarker(sender, marker);
  await waitFor(() => peers.every((p) => count(p, marker) >= 1), {
    timeoutMs: 5_000,
    message: `marker '${marker}' to reach every client`,
  });
  for (const peer of peers) {
    for (const args of peer.got.filter((a) => a[1] === text)) expect(args[0]).toBe(from(sender));
    // note: at most once, never twice (a connection in two groups, a user on two instances).
    expect(count(peer, text), `${peer.name} received '${text}'`).toBeLessThanOrEqual(1);
    expect(count(peer, marker), `${peer.name} received '${marker}'`).toBe(1);
  }
  return peers
    .filter((p) => count(p, text) === 1)
    .map((p) => p.name)
    .sort();
}

const names = (peers: Peer[]) => peers.map((p) => p.name).sort();

/** Where the instances' Redis is: the URL (or seed list) and the flags that say how to use it. */
type Medium = () => { redisUrl: string; args: string[] };

function multiprocessSuite(name: string, medium: Medium): void {
  describe(`pubsub across processes: the server API (fixture hub) on ${name}`, () => {
    const channelPrefix = uniquePrefix('multiproc');
    const instances = new InstancePool();
    const clients = new ClientPool();
    const nodes: InstanceProcess[] = [];
    const peers: Peer[] = [];
    const byName = (name: string) => peers.find((p) => p.name === name) as Peer;
    const g1 = tag('g1');
    const g2 = tag('g2');

    const allMarker = (sender: Peer, marker: string) => sender.conn.invoke('All', marker);
    const check = async (sender: Peer, method: string, args: unknown[], expected: Peer[]) => {
      const text = tag(method);
      await sender.conn.invoke(method, ...args, text);
      return recipientsOf(peers, sender, text, expected, allMarker);
    };

    beforeAll(async () => {
      const started = await Promise.all(
        [0, 1, 2].map((i) =>
          instances.startFixture({ ...medium(), channelPrefix, instanceId: `${channelPrefix}-i${i}` }),
        ),
      );
      nodes.push(...started);
      expect(new Set(nodes.map((n) => n.pid)).size).toBe(3);
      // alice has a connection on two processes.
      const layout: [string, string, number][] = [
        ['a1', 'alice', 0],
        ['a2', 'alice', 1],
        ['b', 'bob', 1],
        ['c', 'carol', 2],
        ['d', 'dave', 0],
        ['e', 'erin', 2],
      ];
      for (const [name, userId, instance] of layout) {
        const conn = await clients.connect((nodes[instance] as InstanceProcess).url(), {
          token: await signToken(userId),
        });
        peers.push({
          name,
          userId,
          instance,
          conn,
          id: conn.connectionId as string,
          got: record(conn, 'message'),
        });
      }
      // g1 = {a1, b, c}, added by a1 (P0): itself locally, b and c on other processes.
      const a1 = byName('a1');
      for (const member of ['a1', 'b', 'c']) await a1.conn.invoke('AddToGroup', byName(member).id, g1);
      // g2 = {b, d, e}, added by e (P2).
      const e = byName('e');
      for (const member of ['b', 'd', 'e']) await e.conn.invoke('AddToGroup', byName(member).id, g2);
    });

    afterEach(() => {
      for (const peer of peers) peer.got.length = 0;
    });

    afterAll(async () => {
      await clients.stopAll();
      await instances.stopAll();
    });

    it('runs three processes, each holding the connections it was given', async () => {
      for (const peer of peers) {
        const who = (await peer.conn.invoke('Whoami')) as {
          connectionId: string;
          userId: string;
          pid: number;
        };
        expect(who).toMatchObject({
          connectionId: peer.id,
          userId: peer.userId,
          instanceId: `${channelPrefix}-i${peer.instance}`,
          pid: nodes[peer.instance]?.pid,
        });
      }
    });

    it('all: every connection on every process, once', async () => {
      expect(await check(byName('c'), 'All', [], peers)).toEqual(names(peers));
    });

    it('allExcept: everyone but the listed connections, wherever they are', async () => {
      const [b, c] = [byName('b'), byName('c')];
      const expected = peers.filter((p) => p !== b && p !== c);
      expect(await check(byName('a1'), 'AllExcept', [[b.id, c.id]], expected)).toEqual(names(expected));
    });

    it('client: only that connection, on another process or the same one', async () => {
      const a1 = byName('a1');
      expect(await check(a1, 'Client', [byName('c').id], [byName('c')])).toEqual(['c']);
      expect(await check(a1, 'Client', [byName('d').id], [byName('d')])).toEqual(['d']);
      // the sender's own connection, and a connection nobody holds (reaches nobody, no error)
      expect(await check(a1, 'Client', [a1.id], [a1])).toEqual(['a1']);
      expect(await check(a1, 'Client', ['no-such-connection'], [])).toEqual([]);
    });

    it('clients: exactly the listed connections across processes', async () => {
      const listed = ['b', 'e', 'd'].map(byName);
      expect(await check(byName('a1'), 'Clients', [listed.map((p) => p.id)], listed)).toEqual(names(listed));
    });

    it('group: the members on every process, and nobody else', async () => {
      const members = ['a1', 'b', 'c'].map(byName);
      // d is not a member and sends from P0
      expect(await check(byName('d'), 'Group', [g1], members)).toEqual(names(members));
    });

    it('groupExcept: the members but the listed ones', async () => {
      const expected = ['a1', 'c'].map(byName);
      expect(await check(byName('d'), 'GroupExcept', [g1, [byName('b').id]], expected)).toEqual(
        names(expected),
      );
    });

    it('groups: members of any of the groups, once each (b is in both)', async () => {
      const expected = ['a1', 'b', 'c', 'd', 'e'].map(byName);
      // from P0: P1 hears the send once per group and must deliver it to b once
      expect(await check(byName('d'), 'Groups', [[g1, g2]], expected)).toEqual(names(expected));
      // from P1, where b is local
      expect(await check(byName('a2'), 'Groups', [[g1, g2]], expected)).toEqual(names(expected));
    });

    it('othersInGroup: the members but the caller', async () => {
      const expected = ['a1', 'c'].map(byName);
      expect(await check(byName('b'), 'OthersInGroup', [g1], expected)).toEqual(names(expected));
    });

    it('others: everyone but the caller', async () => {
      const c = byName('c');
      const expected = peers.filter((p) => p !== c);
      expect(await check(c, 'Others', [], expected)).toEqual(names(expected));
    });

    it('caller: only the caller', async () => {
      expect(await check(byName('e'), 'Caller', [], [byName('e')])).toEqual(['e']);
    });

    it('user: every connection of the user, on both processes that hold one; an unknown user: nobody', async () => {
      const alice = ['a1', 'a2'].map(byName);
      expect(await check(byName('c'), 'User', ['alice'], alice)).toEqual(['a1', 'a2']);
      expect(await check(byName('c'), 'User', ['nobody'], [])).toEqual([]);
    });

    it('users: every connection of each user', async () => {
      const expected = ['a1', 'a2', 'b'].map(byName);
      expect(await check(byName('e'), 'Users', [['alice', 'bob']], expected)).toEqual(names(expected));
    });

    it('groups.add/remove of a connection on another process resolve once its process has acted', async () => {
      const [b, c, d] = [byName('b'), byName('c'), byName('d')];
      // the fixture's authorizeGroupJoin takes 300 ms for `slow-*` groups on the owning process (P2): an add
      // that resolved before the owner acted would let the sends below miss c.
      const fresh = tag('slow-fresh');
      // d (P0) adds c (P2); right after, d and then b (P1) send to the group: c gets both.
      await d.conn.invoke('AddToGroup', c.id, fresh);
      expect(await check(d, 'Group', [fresh], [c])).toEqual(['c']);
      expect(await check(b, 'Group', [fresh], [c])).toEqual(['c']);
      // d removes c; right after, a send to the group reaches nobody.
      await d.conn.invoke('RemoveFromGroup', c.id, fresh);
      expect(await check(d, 'Group', [fresh], [])).toEqual([]);
      expect(await check(b, 'Group', [fresh], [])).toEqual([]);
      // adding again works, and removing what is not a member resolves (idempotent)
      await b.conn.invoke('AddToGroup', c.id, fresh);
      expect(await check(b, 'Group', [fresh], [c])).toEqual(['c']);
      await d.conn.invoke('RemoveFromGroup', c.id, fresh);
      await d.conn.invoke('RemoveFromGroup', c.id, fresh);
      expect(await check(d, 'Group', [fresh], [])).toEqual([]);
    });

    it("groups.add surfaces the owning process's authorizeGroupJoin refusal as ERR_FORBIDDEN", async () => {
      const [a1, c] = [byName('a1'), byName('c')];
      const forbidden = tag('forbidden');
      const outcome = await timed(a1.conn.invoke('AddToGroup', c.id, forbidden), 5_000);
      expect(outcome.ok).toBe(false);
      expect(outcome.error?.message).toMatch(/ERR_FORBIDDEN/);
      expect(await check(a1, 'Group', [forbidden], [])).toEqual([]);
    });

    it('groups.add/remove and invoke of an unknown connection reject at once with ERR_CONNECTION_NOT_FOUND', async () => {
      const a1 = byName('a1');
      for (const call of [
        () => a1.conn.invoke('AddToGroup', 'no-such-connection', tag('g')),
        () => a1.conn.invoke('RemoveFromGroup', 'no-such-connection', tag('g')),
        () => a1.conn.invoke('InvokeClient', 'no-such-connection', 'anything'),
      ]) {
        const outcome = await timed(call(), 5_000);
        expect(outcome.ok).toBe(false);
        expect(outcome.error?.message).toMatch(/ERR_CONNECTION_NOT_FOUND/);
        expect(outcome.error?.message).toContain('no-such-connection');
        expect(outcome.ms).toBeLessThan(2_000);
      }
    });

    it('client results: a hub method on one process gets the answer of a client on another', async () => {
      const [a1, c] = [byName('a1'), byName('c')];
      const asked: unknown[][] = [];
      c.conn.on('compute', (x: number, y: number) => {
        asked.push([x, y]);
        return x + y;
      });
      c.conn.on('fail', () => {
        throw new Error('the client refuses');
      });
      try {
        expect(await a1.conn.invoke('InvokeClient', c.id, 'compute', 20, 22)).toBe(42);
        expect(asked).toEqual([[20, 22]]);
        // a client on the same process as the caller (a2 and b are both on P1)
        const a2 = byName('a2');
        a2.conn.on('compute', (x: number, y: number) => x * y);
        expect(await byName('b').conn.invoke('InvokeClient', a2.id, 'compute', 6, 7)).toBe(42);
        a2.conn.off('compute');
        // the client's handler throws: the caller gets ERR_CLIENT_RESULT with the client's error
        const failed = await timed(a1.conn.invoke('InvokeClient', c.id, 'fail'), 5_000);
        expect(failed.ok).toBe(false);
        expect(failed.error?.message).toMatch(/ERR_CLIENT_RESULT/);
        expect(failed.error?.message).toMatch(/the client refuses/);
      } finally {
        c.conn.off('compute');
        c.conn.off('fail');
      }
    });

    describe('an instance that dies while a client result is pending', () => {
      const local = new InstancePool();
      const localClients = new ClientPool();
      afterEach(async () => {
        await localClients.stopAll();
        await local.stopAll();
      });

      it('rejects the invoke with ERR_CONNECTION_CLOSED within a few seconds', async () => {
        const doomed = await local.startFixture({
          ...medium(),
          channelPrefix,
          instanceId: `${channelPrefix}-doomed`,
        });
        const k = await localClients.connect(doomed.url(), { token: await signToken('kim') });
        let asked = 0;
        // never answers
        k.on('hang', () => {
          asked++;
          return new Promise(() => undefined);
        });
        const a1 = byName('a1');
        const pending = timed(a1.conn.invoke('InvokeClient', k.connectionId, 'hang'), 10_000);
        await waitFor(() => asked === 1, { message: 'the client on the doomed process to be asked' });
        const killedAt = Date.now();
        doomed.kill('SIGKILL');
        expect(await doomed.exited).toMatchObject({ signal: 'SIGKILL' });
        const outcome = await pending;
        const afterKillMs = Date.now() - killedAt;
        expect(outcome.ok).toBe(false);
        expect(outcome.error?.message).toMatch(/ERR_CONNECTION_CLOSED/);
        expect(outcome.error?.message).toMatch(/went away/);
        expect(afterKillMs).toBeLessThan(5_000);
        // the caller's connection is still fine
        expect(await check(a1, 'Caller', [], [a1])).toEqual(['a1']);
      });
    });
  });

  describe(`pubsub across processes: the demo hub on \`relayhub serve\` on ${name}`, () => {
    const channelPrefix = uniquePrefix('multiproc-demo');
    const instances = new InstancePool();
    const clients = new ClientPool();
    const peers: Peer[] = [];
    const byName = (name: string) => peers.find((p) => p.name === name) as Peer;

    const allMarker = (sender: Peer, marker: string) => sender.conn.invoke('SendToAll', marker);
    /** The demo hub says who a message is from by user id. */
    const recipients = (sender: Peer, text: string, expected: Peer[]) =>
      recipientsOf(peers, sender, text, expected, allMarker, (s) => s.userId);

    beforeAll(async () => {
      const nodes = await Promise.all(
        [0, 1, 2].map((i) =>
          instances.start({ ...medium(), channelPrefix, instanceId: `${channelPrefix}-i${i}` }),
        ),
      );
      const layout: [string, string, number][] = [
        ['alice@0', 'alice', 0],
        ['alice@1', 'alice', 1],
        ['bob@1', 'bob', 1],
        ['carol@2', 'carol', 2],
      ];
      for (const [name, userId, instance] of layout) {
        const conn = await clients.connect((nodes[instance] as InstanceProcess).url('/hubs/demo'), {
          token: await signToken(userId),
        });
        peers.push({
          name,
          userId,
          instance,
          conn,
          id: conn.connectionId as string,
          got: record(conn, 'message'),
        });
      }
    });

    afterAll(async () => {
      await clients.stopAll();
      await instances.stopAll();
    });

    it('SendToAll reaches every connection on the three processes once', async () => {
      const text = tag('all');
      await byName('carol@2').conn.invoke('SendToAll', text);
      expect(await recipients(byName('carol@2'), text, peers)).toEqual(names(peers));
    });

    it("SendToUser reaches the user's connections on two processes, and nobody else", async () => {
      const text = tag('user');
      const carol = byName('carol@2');
      await carol.conn.invoke('SendToUser', 'alice', text);
      expect(await recipients(carol, text, [byName('alice@0'), byName('alice@1')])).toEqual([
        'alice@0',
        'alice@1',
      ]);
    });

    it('SendToGroup reaches the members on other processes; LeaveGroup takes one out', async () => {
      const room = tag('room');
      const [alice0, bob, carol] = [byName('alice@0'), byName('bob@1'), byName('carol@2')];
      await bob.conn.invoke('JoinGroup', room);
      await carol.conn.invoke('JoinGroup', room);
      const text = tag('group');
      await alice0.conn.invoke('SendToGroup', room, text);
      expect(await recipients(alice0, text, [bob, carol])).toEqual(['bob@1', 'carol@2']);
      await bob.conn.invoke('LeaveGroup', room);
      const after = tag('group-after-leave');
      await alice0.conn.invoke('SendToGroup', room, after);
      expect(await recipients(alice0, after, [carol])).toEqual(['carol@2']);
    });
  });
}

multiprocessSuite('one Redis', () => ({ redisUrl: REDIS_URL, args: [] }));

describe('on Redis Cluster (sharded PUB/SUB, `--redis-cluster`)', () => {
  let cluster: RedisCluster | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(() => cluster?.dispose());
  multiprocessSuite('Redis Cluster', () => ({
    redisUrl: (cluster as RedisCluster).urls.join(','),
    args: ['--redis-cluster'],
  }));
});
