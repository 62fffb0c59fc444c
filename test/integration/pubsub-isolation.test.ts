/**
 * Two deployments share one Redis under two channel prefixes: `relayhub serve` processes with prefix P1
 * and with P2 (two instances each), clients on each, and the same user and group names on both sides.
 * A send (all, group, user) reaches its own prefix's connections on both of its instances, never the other
 * prefix's.
 *
 * Negatives without sleeps: after the expected receivers got a message, a marker is sent through
 * SendToAll by the same sender (proving the sender's side complete: one sender's frames reach each
 * connection in order) AND by a client of the other prefix. Redis handles PUBLISH commands one at a time
 * and each instance hears them in that order on its one subscriber connection; the other prefix's marker
 * is published after the message was, so an instance of the other prefix that had (wrongly) heard the
 * message would have delivered it before its own marker.
 *
 * Needs `npm run build` (the instances run from dist/).
 */
import { randomBytes } from 'node:crypto';
import type { HubConnection } from '@microsoft/signalr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

interface Peer {
  /** e.g. `P1 alice@0` */
  name: string;
  side: 'P1' | 'P2';
  conn: HubConnection;
  /** Every `message(from, text)` it received. */
  got: unknown[][];
}

const tag = (label: string) => `${label}-${randomBytes(3).toString('hex')}`;
const count = (peer: Peer, text: string) => peer.got.filter((args) => args[1] === text).length;
const ROOM = 'room';

describe('pubsub: two channel prefixes on one Redis never hear each other', () => {
  const prefixes = { P1: uniquePrefix('iso-p1'), P2: uniquePrefix('iso-p2') };
  const instances = new InstancePool();
  const clients = new ClientPool();
  const peers: Peer[] = [];
  const peer = (name: string) => peers.find((p) => p.name === name) as Peer;
  const side = (s: 'P1' | 'P2') => peers.filter((p) => p.side === s);

  beforeAll(async () => {
    // the same user ids, group name and instance ids on both sides: alice on both instances, bob in the
    // room with alice@0
    for (const s of ['P1', 'P2'] as const) {
      const nodes = await Promise.all(
        [0, 1].map((i) =>
          instances.start({ redisUrl: REDIS_URL, channelPrefix: prefixes[s], instanceId: `instance-${i}` }),
        ),
      );
      for (const [user, i] of [
        ['alice', 0],
        ['alice', 1],
        ['bob', 1],
      ] as const) {
        const conn = await clients.connect(nodes[i]!.url('/hubs/demo'), { token: await signToken(user) });
        peers.push({ name: `${s} ${user}@${i}`, side: s, conn, got: record(conn, 'message') });
      }
      await peer(`${s} alice@0`).conn.invoke('JoinGroup', ROOM);
      await peer(`${s} bob@1`).conn.invoke('JoinGroup', ROOM);
    }
  });

  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
  });

  /** Who got `text` once the senders' markers reached everyone (see the file comment). */
  async function recipients(sender: Peer, text: string, expected: Peer[]): Promise<string[]> {
    await waitFor(() => expected.every((p) => count(p, text) >= 1), {
      message: `'${text}' to reach ${expected.map((p) => p.name).join(', ')}`,
    });
    const other = peers.find((p) => p.side !== sender.side) as Peer;
    const marker = `${text}#marker`;
    await sender.conn.invoke('SendToAll', marker);
    await other.conn.invoke('SendToAll', marker);
    await waitFor(() => peers.every((p) => count(p, marker) >= 1), {
      message: `marker '${marker}' to reach every client on both prefixes`,
    });
    for (const p of peers) {
      // each marker only on its own side: one per client
      expect(count(p, marker), `${p.name} received '${marker}'`).toBe(1);
      expect(count(p, text), `${p.name} received '${text}'`).toBeLessThanOrEqual(1);
    }
    return peers
      .filter((p) => count(p, text) === 1)
      .map((p) => p.name)
      .sort();
  }

  const names = (list: Peer[]) => list.map((p) => p.name).sort();

  for (const [from, to] of [
    ['P1', 'P2'],
    ['P2', 'P1'],
  ] as const) {
    it(`SendToAll from ${from} reaches ${from}'s instances only, not ${to}`, async () => {
      const sender = peer(`${from} bob@1`);
      const text = tag('all');
      await sender.conn.invoke('SendToAll', text);
      expect(await recipients(sender, text, side(from))).toEqual(names(side(from)));
    });

    it(`SendToGroup '${ROOM}' from ${from} reaches ${from}'s members only, not ${to}'s '${ROOM}'`, async () => {
      const sender = peer(`${from} alice@1`);
      const text = tag('group');
      await sender.conn.invoke('SendToGroup', ROOM, text);
      const members = [peer(`${from} alice@0`), peer(`${from} bob@1`)];
      expect(await recipients(sender, text, members)).toEqual(names(members));
    });

    it(`SendToUser 'alice' from ${from} reaches ${from}'s alice only, not ${to}'s alice`, async () => {
      const sender = peer(`${from} bob@1`);
      const text = tag('user');
      await sender.conn.invoke('SendToUser', 'alice', text);
      const alice = [peer(`${from} alice@0`), peer(`${from} alice@1`)];
      expect(await recipients(sender, text, alice)).toEqual(names(alice));
    });
  }
});
