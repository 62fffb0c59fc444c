/**
 * The backplane contract on two Redis endpoints: two private redis-servers, `a` and `b`; the instances
 * alternate which is their primary (the other is their secondary), so that every cross-instance send
 * travels between instances that listen on different endpoints, and every send that reaches both copies
 * must still reach each connection once.
 */
import { EndpointsBackplane } from '../../src/backplane/endpoints/endpoints-backplane.js';
import { uniquePrefix } from '../helpers/redis.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { backplaneContract } from './backplane-contract.js';

backplaneContract('endpoints (two Redis, alternating primaries)', async () => {
  const [a, b] = await Promise.all([startRedisServer(), startRedisServer()]);
  const channelPrefix = uniquePrefix('contract-endpoints');
  let instance = 0;
  return {
    createBackplane: () => {
      const primary = instance++ % 2 === 0 ? 'a' : 'b';
      return new EndpointsBackplane({
        channelPrefix,
        endpoints: [
          { name: 'a', redis: { url: a.url }, type: primary === 'a' ? 'primary' : 'secondary' },
          { name: 'b', redis: { url: b.url }, type: primary === 'b' ? 'primary' : 'secondary' },
        ],
      });
    },
    close: async () => {
      await Promise.all([a.dispose(), b.dispose()]);
    },
  };
});
