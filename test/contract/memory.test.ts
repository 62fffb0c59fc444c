import { MemoryBackplane, MemoryBus } from '../../src/backplane/memory/memory-backplane.js';
import { backplaneContract } from './backplane-contract.js';

backplaneContract('memory', async () => {
  const bus = new MemoryBus();
  return { createBackplane: () => new MemoryBackplane({ bus }), close: async () => {} };
});
