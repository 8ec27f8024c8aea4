import { MemoryClaimStore } from '../src/engine/claim-store.js';
import { MemoryEngine } from '../src/engine/memory-engine.js';
import { MemoryNodeDirectory } from '../src/engine/node-directory.js';
import { runClaimStoreContract } from './claim-store-contract.js';
import { runEngineContract } from './engine-contract.js';
import { runNodeDirectoryContract } from './node-directory-contract.js';

runEngineContract('memory', async (retention) => {
  const engine = new MemoryEngine(retention);
  return { engine, cleanup: () => engine.close() };
});

runClaimStoreContract('memory', async () => ({ store: new MemoryClaimStore(), cleanup: async () => {} }));

runNodeDirectoryContract('memory', async () => {
  const shared = new MemoryNodeDirectory();
  return { directoryOfNode: () => shared, cleanup: async () => {} };
});
