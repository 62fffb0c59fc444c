import { afterAll, beforeAll } from 'vitest';
import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { uniquePrefix } from '../helpers/redis.js';
import { backplaneContract } from './backplane-contract.js';

// note: one private cluster (3 primaries + 3 replicas) for the whole file; each test has its own prefix.
let cluster: RedisCluster | undefined;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 60_000);
afterAll(() => cluster?.dispose());

backplaneContract('pubsub on Redis Cluster (sharded PUB/SUB)', async () => {
  const channelPrefix = uniquePrefix('contract');
  const redis = { cluster: (cluster as RedisCluster).urls };
  return { createBackplane: () => new PubSubBackplane({ redis, channelPrefix }), close: async () => {} };
});
