/**
 * The first-bytes router (src/server/connection-router.ts) with real sockets and a real node:http server:
 * a stream taker that takes a connection owns it and node:http never sees it; one that declines leaves
 * node:http every byte (also when the head arrives in pieces); a taker's exception closes that connection
 * only; a silent connection gets the 408 node:http's clientError handling gives; close() ends silent ones.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type ConnectionRouter, createConnectionRouter } from '../src/server/connection-router.js';
import { rawExchange } from './support/raw-socket.js';
import { waitFor } from './support/wait.js';

interface Fixture {
  readonly port: number;
  readonly router: ConnectionRouter;
  /** Requests node:http served, as `METHOD url`. */
  readonly served: string[];
  readonly takeErrors: unknown[];
  /** Connections the listening socket holds now. */
  connections(): Promise<number>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function startRouter(
  takeStream: ((socket: Socket, firstBytes: Buffer) => boolean) | undefined,
  silentTimeoutMs = 60_000,
): Promise<Fixture> {
  const served: string[] = [];
  const takeErrors: unknown[] = [];
  const http1: HttpServer = createHttpServer((req, res) => {
    served.push(`${req.method} ${req.url}`);
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' }).end('from node:http');
  });
  http1.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    socket.end(`HTTP/1.1 ${error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400} X\r\nConnection: close\r\n\r\n`);
  });
  const router = createConnectionRouter({
    http1,
    ...(takeStream ? { takeStream } : {}),
    silentTimeoutMs,
    onTakeError: (error) => takeErrors.push(error),
  });
  const acceptor: NetServer = createNetServer({ noDelay: true }, router.route);
  await new Promise<void>((resolve) => acceptor.listen(0, '127.0.0.1', resolve));
  http1.emit('listening');
  cleanups.push(async () => {
    router.close();
    http1.closeAllConnections();
    await new Promise<void>((resolve) => acceptor.close(() => resolve()));
  });
  return {
    port: (acceptor.address() as { port: number }).port,
    router,
    served,
    takeErrors,
    connections: () =>
      new Promise((resolve, reject) =>
        acceptor.getConnections((error, count) => (error ? reject(error) : resolve(count))),
      ),
  };
}

/** Sends `parts` and resolves with everything answered until the server closed the connection. */
async function exchange(
  port: number,
  parts: readonly string[],
  beforeNext?: (index: number) => Promise<void>,
): Promise<string> {
  return (await rawExchange(port, parts, beforeNext ? { beforeNext } : {})).text;
}

const GET = 'GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n';

describe('the connection router', () => {
  it('a taker that takes the connection owns it: it got the first bytes, node:http saw nothing', async () => {
    const offered: string[] = [];
    const fixture = await startRouter((socket, firstBytes) => {
      offered.push(firstBytes.toString('latin1'));
      socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfrom the taker');
      return true;
    });
    expect(await exchange(fixture.port, [GET])).toMatch(/from the taker$/);
    expect(offered).toEqual([GET]);
    expect(fixture.served).toEqual([]);
  });

  it('a taker that declines leaves node:http every byte, also of a head that arrives in pieces', async () => {
    const offered: string[] = [];
    const fixture = await startRouter((_socket, firstBytes) => {
      offered.push(firstBytes.toString('latin1'));
      return false;
    });
    expect(await exchange(fixture.port, [GET])).toContain('from node:http');
    expect(
      await exchange(fixture.port, [GET.slice(0, 9), GET.slice(9)], async () => {
        // The second part only once the router has offered the first: they must not arrive as one read.
        await waitFor(() => offered.length === 2, { what: 'the first part to be offered' });
      }),
    ).toContain('from node:http');
    expect(offered).toEqual([GET, GET.slice(0, 9)]);
    expect(fixture.served).toEqual(['GET /events?topic=a', 'GET /events?topic=a']);
  });

  it("a taker's exception closes that connection only, and is reported", async () => {
    let calls = 0;
    const fixture = await startRouter(() => {
      calls++;
      if (calls === 1) throw new Error('a bug in the taker');
      return false;
    });
    expect(await exchange(fixture.port, [GET])).toBe('');
    expect(fixture.takeErrors).toHaveLength(1);
    expect(await exchange(fixture.port, [GET])).toContain('from node:http');
  });

  it('a connection that sends nothing gets the 408 after the silent timeout', async () => {
    const fixture = await startRouter(undefined, 300);
    const startedAt = performance.now();
    const answer = await exchange(fixture.port, []);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(250);
  });

  it('close() ends the connections that have not sent anything yet', async () => {
    const fixture = await startRouter(undefined);
    const socket = connect({ host: '127.0.0.1', port: fixture.port });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    await waitFor(async () => (await fixture.connections()) === 1, { what: 'the server to accept it' });
    fixture.router.close();
    await waitFor(() => socket.destroyed, { what: 'the silent connection to be closed' });
  });
});
