import { MemoryEngine } from '../src/engine/memory-engine.js';
import { runEngineContract } from './engine-contract.js';

runEngineContract('memory', async (retention) => {
  const engine = new MemoryEngine(retention);
  return { engine, cleanup: () => engine.close() };
});
