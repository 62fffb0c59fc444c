/**
 * Protocols and transports across real processes: two hub instances (the API fixture on the PUB/SUB
 * backplane) with clients of every transport and protocol spread over them. A send carries binary data and
 * a date: the backplane carries it once, and each instance encodes it for its own clients, so MessagePack
 * clients get bytes and a Timestamp, JSON clients base64 and an ISO string, wherever the sender is.
 *
 * Needs `npm run build` (the instances run from dist/).
 */
import { HttpTransportType, type HubConnection } from '@microsoft/signalr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, record } from '../helpers/client.js';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { negotiate } from '../helpers/raw-ws.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('protocols and transports across instances', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  const channelPrefix = uniquePrefix('proto');
  let hubs: InstanceProcess[] = [];

  beforeAll(async () => {
    hubs = await Promise.all(
      [0, 1].map(() => instances.startFixture({ redisUrl: REDIS_URL, channelPrefix })),
    );
  });

  afterAll(async () => {
    await clients.stopAll();
    await instances.stopAll();
    await deletePrefix(REDIS_URL, channelPrefix);
  });

  it('delivers binary and dates to every protocol on every instance, from either protocol', async () => {
    const kinds: [number, HttpTransportType, 'json' | 'messagepack'][] = [
      [0, HttpTransportType.WebSockets, 'messagepack'],
      [0, HttpTransportType.WebSockets, 'json'],
      [1, HttpTransportType.LongPolling, 'messagepack'],
      [1, HttpTransportType.ServerSentEvents, 'json'],
      [1, HttpTransportType.WebSockets, 'messagepack'],
    ];
    const peers: { conn: HubConnection; protocol: string; got: unknown[][] }[] = [];
    for (const [i, transport, protocol] of kinds) {
      const conn = await clients.connect(hubs[i]!.url(), {
        token: await signToken(`user-${peers.length}`),
        transport,
        protocol,
      });
      peers.push({ conn, protocol, got: record(conn, 'message') });
    }
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const when = new Date('2026-12-01T10:00:00.123Z');
    // note: sent from instance 0 by a MessagePack client, then from instance 1 by a JSON client.
    await peers[0]!.conn.invoke('All', { bytes, when, text: 'packed' });
    await peers[3]!.conn.invoke('All', { text: 'plain', n: 1 });
    await waitFor(() => peers.every((p) => p.got.length === 2), {
      message: JSON.stringify(peers.map((p) => p.got.length)),
    });
    for (const peer of peers) {
      const [first, second] = peer.got.map((args) => args[1] as Record<string, unknown>);
      if (peer.protocol === 'messagepack') {
        expect(new Uint8Array(first!.bytes as Uint8Array)).toEqual(bytes);
        expect(first!.when).toEqual(when);
      } else {
        expect(first!.bytes).toBe(Buffer.from(bytes).toString('base64'));
        expect(first!.when).toBe(when.toISOString());
      }
      expect(first!.text).toBe('packed');
      expect(second).toEqual({ text: 'plain', n: 1 });
    }
  });

  it('relayhub serve --transports / --protocols turn transports and protocols off', async () => {
    const only = await instances.start({
      redisUrl: REDIS_URL,
      channelPrefix,
      args: ['--transports', 'WebSockets,LongPolling', '--protocols', 'messagepack'],
    });
    const { body } = await negotiate(only.url(), '?negotiateVersion=1', {
      headers: { Authorization: `Bearer ${await signToken('cli-user')}` },
    });
    expect(body.availableTransports).toEqual([
      { transport: 'WebSockets', transferFormats: ['Binary'] },
      { transport: 'LongPolling', transferFormats: ['Binary'] },
    ]);
    const packed = await clients.connect(only.url(), {
      token: await signToken('cli-user'),
      protocol: 'messagepack',
    });
    expect(await packed.invoke('Echo', 'packed')).toBe('packed');
  });
});
