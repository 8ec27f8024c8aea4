#!/usr/bin/env node
/** Composition root: read config, start a gateway node, drain on SIGTERM/SIGINT and exit 0, reload TLS on SIGHUP. */
import { ConfigError, helpText, loadConfig } from './config.js';
import { startGateway } from './gateway.js';
import { flushLogs } from './logger.js';

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

const gateway = await startGateway(config).catch((error: unknown) => {
  process.stderr.write(`could not start: ${(error as Error).message}\n`);
  process.exit(1);
});

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) {
      gateway.logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    gateway.logger.info({ signal, drainMs: config.drainMs }, 'draining');
    gateway.close().then(
      () => {
        gateway.logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        gateway.logger.error({ err: error }, 'error while draining');
        process.exit(1);
      },
    );
  });
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
