import { StreamsBackplane } from '../../src/backplane/streams/streams-backplane.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { backplaneContract } from './backplane-contract.js';

backplaneContract('streams', async () => {
  const channelPrefix = uniquePrefix('contract');
  return {
    createBackplane: () => new StreamsBackplane({ redisUrl: REDIS_URL, channelPrefix }),
    close: async () => {},
  };
});
