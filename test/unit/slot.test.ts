import { describe, expect, it } from 'vitest';
import { hubChannels, reliableKeys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/slot.js';

describe('keySlot', () => {
  it('computes the slots Redis Cluster does (values from CLUSTER KEYSLOT on redis-server 7.0)', () => {
    const expected: [string, number][] = [
      ['foo', 12182],
      ['123456789', 12739],
      ['{user1000}.following', 3443],
      ['user1000', 3443],
      // an empty {} does not count: the whole key is hashed
      ['foo{}{bar}', 8363],
      ['foo{{bar}}zap', 4015],
      ['{bar', 4015],
    ];
    for (const [key, slot] of expected) expect(keySlot(key), key).toBe(slot);
  });

  it('puts every key of one user, and of one instance, in one slot; spreads the broadcast partitions', () => {
    const keys = reliableKeys('app', '/hubs/demo');
    const user = keys.user('alice');
    const userSlots = new Set([user.seq, user.inbox, user.acked, user.presence, user.sent].map(keySlot));
    expect(userSlots.size).toBe(1);
    expect(keySlot(keys.alive('i1'))).toBe(keySlot(keys.deliveries('i1')));
    const channels = hubChannels('app', '/hubs/demo', 16);
    expect(new Set(channels.all.map(keySlot)).size).toBe(16);
    expect(hubChannels('app', '/hubs/demo').all).toEqual(['app:/hubs/demo:all']);
  });
});
