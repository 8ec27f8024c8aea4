/** pino JSON logs; tokens, cookies and payloads never reach them. */
import cluster from 'node:cluster';
import { type Logger, pino } from 'pino';

export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      // With WORKERS > 1 every line says which worker wrote it.
      base: { service: 'sse-gateway', pid: process.pid, ...(cluster.isWorker ? { worker: cluster.worker?.id } : {}) },
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'token', 'data'], censor: '[redacted]' },
    },
    // Buffered, asynchronous stdout: a connection's open and close lines (a burst of thousands in a
    // reconnect storm) leave in writes of LOG_BUFFER_BYTES instead of one write(2) each (~20 µs per line
    // measured); a timer bounds the delay for a quiet node. flushLogs() empties the buffer before exit.
    destination,
  );
}

const LOG_BUFFER_BYTES = 8 * 1024;
const LOG_FLUSH_INTERVAL_MS = 100;
const destination = pino.destination({ dest: 1, sync: false, minLength: LOG_BUFFER_BYTES });
setInterval(() => {
  try {
    destination.flush();
  } catch {
    // Not open yet: the next round writes it.
  }
}, LOG_FLUSH_INTERVAL_MS).unref();

/** Writes out whatever the logs still buffer; call it before process.exit. */
export function flushLogs(): void {
  try {
    destination.flushSync();
  } catch {
    // Nothing buffered yet (not ready), or stdout is gone: nothing to save.
  }
}
