/**
 * WORKERS > 1: this process supervises that many gateway workers (node:cluster) sharing one port. Each
 * worker is a full node (its own Redis connections, hub, metrics and logs, tagged with its worker id); the
 * supervisor only forks, restarts a worker that died, and passes SIGTERM/SIGINT (as a drain request) and
 * SIGHUP on. It exits 0 once every worker has drained.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Config } from './config.js';
import { createLogger } from './logger.js';

/** What the supervisor sends a worker to make it drain and exit. */
export const SHUTDOWN_MESSAGE = 'sse-gateway:shutdown';
/** Tells a worker which of the N it is (0 to N-1), for its admin port and node id. */
export const WORKER_SLOT_ENV = 'SSE_WORKER_SLOT';
/** A worker that dies is started again after this long (a crash loop then costs little). */
const RESTART_DELAY_MS = 1000;

export function runWorkers(config: Config): void {
  const log = createLogger(config.logLevel).child({ mod: 'workers' });
  let stopping = false;
  const alive = new Set<Worker>();

  const fork = (slot: number): Worker => {
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(slot) });
    alive.add(worker);
    worker.on('exit', (code, signal) => {
      alive.delete(worker);
      if (stopping) {
        if (alive.size === 0) {
          log.info('every worker has stopped');
          process.exit(0);
        }
        return;
      }
      // Its clients reconnect to the other workers (or to its successor) and resume where they were.
      log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died; starting another');
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, RESTART_DELAY_MS).unref();
    });
    return worker;
  };

  for (let slot = 0; slot < config.workers; slot++) fork(slot);
  log.info({ workers: config.workers, port: config.port }, 'supervising gateway workers');

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) {
        log.warn({ signal }, 'second signal: stopping every worker now');
        for (const worker of alive) worker.process.kill('SIGKILL');
        process.exit(1);
      }
      stopping = true;
      log.info({ signal, drainMs: config.drainMs }, 'draining every worker');
      if (alive.size === 0) process.exit(0);
      for (const worker of alive) worker.send(SHUTDOWN_MESSAGE);
    });
  }
  process.on('SIGHUP', () => {
    for (const worker of alive) worker.process.kill('SIGHUP');
  });
}
