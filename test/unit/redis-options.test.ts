import { describe, expect, it } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { ReliableProducer } from '../../src/backplane/streams/reliable-producer.js';
import { RelayhubError } from '../../src/errors.js';
import { describeTarget, isClusterTarget, targetFromUrl } from '../../src/redis/connection.js';

const configError = (make: () => unknown, message: RegExp) => {
  let error: unknown;
  try {
    make();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(RelayhubError);
  expect((error as RelayhubError).code).toBe('ERR_CONFIG');
  expect((error as RelayhubError).message).toMatch(message);
};

describe('Redis options', () => {
  it('reads a comma-separated REDIS_URL as Cluster seed nodes only when told to', () => {
    const seeds = 'redis://127.0.0.1:7000, redis://127.0.0.1:7001,';
    expect(targetFromUrl(seeds, true)).toEqual({
      cluster: ['redis://127.0.0.1:7000', 'redis://127.0.0.1:7001'],
    });
    expect(targetFromUrl('redis://127.0.0.1:6379', false)).toEqual({ url: 'redis://127.0.0.1:6379' });
    expect(isClusterTarget(targetFromUrl(seeds, true))).toBe(true);
    expect(describeTarget(targetFromUrl(seeds, true))).toBe(
      'redis://127.0.0.1:7000,redis://127.0.0.1:7001 (Cluster)',
    );
  });

  it('refuses bad cluster options with a sentence, before opening any connection', () => {
    configError(() => new PubSubBackplane({ broadcastPartitions: 0 }), /broadcastPartitions/);
    configError(() => new PubSubBackplane({ broadcastPartitions: 2.5 }), /broadcastPartitions/);
    configError(() => new PubSubBackplane({ pubsubMode: 'sharded' }), /needs a Redis Cluster/);
    configError(() => new PubSubBackplane({ redis: { cluster: [] } }), /at least one seed node/);
    configError(() => new ReliableProducer({ hub: '/h', replicas: -1 }), /replicas/);
    configError(() => new ReliableProducer({ hub: '/h', replicaTimeoutMs: 0 }), /replicaTimeoutMs/);
  });
});
