/**
 * The admin listener: plain HTTP/1.1 on ADMIN_HOST:ADMIN_PORT (loopback by default). With WORKERS it is
 * each worker's own socket (exclusive), not shared round-robin like PORT: every worker is a node that
 * Prometheus scrapes and an operator drains on its own.
 */
import { createServer, type Server } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import { errorBody } from '../http/errors.js';

export interface AdminServer {
  readonly port: number;
  readonly url: string;
  /** Stops listening and ends every admin connection (dashboard streams included). */
  close(): Promise<void>;
}

export async function startAdminServer(app: Hono, host: string, port: number): Promise<AdminServer> {
  const listener = getRequestListener(app.fetch, {
    hostname: host,
    errorHandler: () => Response.json(errorBody('bad_request', 'the request could not be read'), { status: 400 }),
  });
  const server: Server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, listener);
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new Error(
              `ADMIN_PORT ${port} on ${host} is in use (EADDRINUSE): set ADMIN_PORT (0 = any free port, off = none)`,
            )
          : error,
      ),
    );
    server.listen({ host, port, exclusive: true }, resolve);
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return {
    port: bound,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
