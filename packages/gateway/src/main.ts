#!/usr/bin/env node
/**
 * Composition root: read config, then run one gateway node in this process (run-node.ts), or with WORKERS > 1
 * a supervisor of that many worker processes sharing the port (workers.ts).
 */
import cluster from 'node:cluster';
import { ConfigError, helpText, loadConfig } from './config.js';
import { flushLogs } from './logger.js';
import { runNode } from './run-node.js';
import { runWorkers } from './workers.js';

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  process.stdout.write(helpText());
  process.exit(0);
}

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n\nRun with --help to see every setting.\n`);
    process.exit(2);
  }
  throw error;
}

// Logs are written asynchronously: whatever is still buffered goes out on every way of exiting.
process.on('exit', flushLogs);

if (config.workers > 1 && cluster.isPrimary) runWorkers(config);
else await runNode(config);
