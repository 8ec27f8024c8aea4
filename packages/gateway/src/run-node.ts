/**
 * One gateway node in this process: start it, drain on SIGTERM/SIGINT and exit 0, reload TLS on SIGHUP.
 * The same whether it is the only process or one worker of several (workers.ts), which also asks for a
 * drain by message, and when the supervisor is gone.
 */
import cluster from 'node:cluster';
import type { Config } from './config.js';
import { startGateway } from './gateway.js';
import { SHUTDOWN_MESSAGE, WORKER_SLOT_ENV } from './workers.js';

export async function runNode(config: Config): Promise<void> {
  let stopping = false;
  let drain = (_reason: string, _drainMs?: number) => {};
  const gateway = await startGateway(workerConfig(config), {
    onDrainRequested: (drainMs) => drain('admin API', drainMs),
  }).catch((error: unknown) => {
    process.stderr.write(`could not start: ${(error as Error).message}\n`);
    process.exit(1);
  });

  drain = (reason: string, drainMs = config.drainMs) => {
    if (stopping) return;
    stopping = true;
    gateway.logger.info({ reason, drainMs }, 'draining');
    gateway.close(drainMs).then(
      () => {
        gateway.logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        gateway.logger.error({ err: error }, 'error while draining');
        process.exit(1);
      },
    );
  };

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) {
        gateway.logger.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      drain(signal);
    });
  }

  if (cluster.isWorker) {
    // The supervisor asks by message (a signal of its own would count as a second Ctrl-C, which reaches
    // every process of the group); a supervisor that died leaves its workers to drain by themselves.
    process.on('message', (message) => {
      if (message === SHUTDOWN_MESSAGE) drain('supervisor');
    });
    process.on('disconnect', () => drain('supervisor gone'));
  }

  // A renewed certificate (certbot, cert-manager) is picked up without dropping a single stream.
  process.on('SIGHUP', () => {
    if (!config.tlsCert) {
      gateway.logger.info('SIGHUP: no TLS_CERT configured; nothing to reload');
      return;
    }
    try {
      gateway.reloadTls();
    } catch (error) {
      gateway.logger.error({ err: error }, 'TLS reload refused; still serving the previous certificate');
    }
  });
}

/**
 * A worker's own settings: worker k of the supervisor (SSE_WORKER_SLOT, set by workers.ts; the same slot
 * for a worker's successor) has the admin port ADMIN_PORT + k and the node id NODE_ID-wk.
 */
function workerConfig(config: Config): Config {
  if (!cluster.isWorker) return config;
  const slot = Number(process.env[WORKER_SLOT_ENV] ?? 0);
  const adminPort =
    typeof config.adminPort === 'number' && config.adminPort !== 0 ? config.adminPort + slot : config.adminPort;
  return Object.freeze({ ...config, adminPort, nodeId: `${config.nodeId}-w${slot}` });
}
