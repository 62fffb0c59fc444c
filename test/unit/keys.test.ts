import { describe, expect, it } from 'vitest';
import {
  groupNameProblem,
  hubChannels,
  reliableKeys,
  validateChannelPrefix,
  validateUserId,
} from '../../src/redis/keys.js';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { isRelayhubError } from '../../src/errors.js';
import { reliableClients } from '../../src/hub/reliable-clients.js';
import { OutboxWorker } from '../../src/worker/outbox-worker.js';

const codeOf = (run: () => unknown): string | undefined => {
  try {
    run();
    return undefined;
  } catch (error) {
    return isRelayhubError(error) ? error.code : String(error);
  }
};

describe('one user id rule for every reliable sender', () => {
  // note: 'a}:dedup:zz' + idempotency key 'zz}:inbox' would spell user a's inbox key.
  const bad = ['', 'a}:dedup:zz', '{a}', 'with space', 'tab\there', 'x'.repeat(257), 42, undefined];

  it.each(bad.map((id) => [id]))('refuses %j', (id) => {
    expect(codeOf(() => validateUserId(id))).toBe('ERR_INVALID_MESSAGE');
  });

  it('accepts ids a JWT sub would carry', () => {
    for (const id of ['alice', 'user-42', 'auth0|5f3c', 'a@b.example', 'x'.repeat(256)]) {
      expect(validateUserId(id)).toBe(id);
    }
  });

  it('hub.reliable.user(id) refuses a bad id at once, before any lane is needed', () => {
    const reliable = reliableClients(() => undefined);
    expect(codeOf(() => reliable.user('a}:dedup:zz'))).toBe('ERR_INVALID_MESSAGE');
    // note: a good id gets its proxy (sending would then say that the lane is missing).
    expect(codeOf(() => reliable.user('alice'))).toBeUndefined();
  });

  it('the keys of two different valid ids never collide', () => {
    const keys = reliableKeys('p', '/hubs/x');
    const a = keys.user('a');
    const b = keys.user('a:dedup:zz');
    expect(new Set([a.seq, a.inbox, a.acked, a.presence, b.seq, b.inbox, b.acked, b.presence]).size).toBe(8);
  });
});

describe('channel prefixes are validated where they enter', () => {
  const bad = ['', 'has space', '{slot}', 'a}b', 'x'.repeat(129)];

  it.each(bad.map((p) => [p]))('refuses %j in the key builders and every constructor', (prefix) => {
    expect(codeOf(() => validateChannelPrefix(prefix))).toBe('ERR_CONFIG');
    expect(codeOf(() => hubChannels(prefix, '/hubs/x'))).toBe('ERR_CONFIG');
    expect(codeOf(() => reliableKeys(prefix, '/hubs/x'))).toBe('ERR_CONFIG');
    expect(codeOf(() => new PubSubBackplane({ channelPrefix: prefix }))).toBe('ERR_CONFIG');
    expect(codeOf(() => new StreamsBackplane({ channelPrefix: prefix }))).toBe('ERR_CONFIG');
    expect(codeOf(() => new ReliableProducer({ channelPrefix: prefix, hub: '/hubs/x' }))).toBe('ERR_CONFIG');
    expect(codeOf(() => new OutboxWorker({ channelPrefix: prefix }))).toBe('ERR_CONFIG');
  });

  it('accepts the default and namespaced prefixes', () => {
    for (const prefix of ['relayhub', 'myapp:prod', 'rh-test-01ab'])
      expect(validateChannelPrefix(prefix)).toBe(prefix);
  });
});

describe('group names', () => {
  it('refuses braces (they would split a group from its Redis Cluster slot) and empty names', () => {
    expect(groupNameProblem('room-1')).toBeUndefined();
    expect(groupNameProblem('a}b')).toBe("Group names may not contain '{' or '}'.");
    expect(groupNameProblem('')).toBe('Group names must be non-empty strings.');
  });
});
