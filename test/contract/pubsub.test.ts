import { PubSubBackplane } from '../../src/backplane/pubsub/pubsub-backplane.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { backplaneContract } from './backplane-contract.js';

backplaneContract('pubsub', async () => {
  const channelPrefix = uniquePrefix('contract');
  return {
    createBackplane: () => new PubSubBackplane({ redisUrl: REDIS_URL, channelPrefix }),
    close: async () => {},
  };
});
