/**
 * Free loopback ports for spawned servers. A probe can only say "free right now": whoever binds the port
 * next must still be ready for EADDRINUSE and retry with another one.
 */
import { createServer } from 'node:net';

const HOST = '127.0.0.1';

/** A port nothing listens on right now: bind port 0, read it, release it. */
export function freePort(host = HOST): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
