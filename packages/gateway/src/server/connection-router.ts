/**
 * Decides, from a cleartext connection's first bytes, who takes it:
 * - the HTTP/2 server, when H2C is on and they open with the h2 preface (`PRI `, which no HTTP/1.1 method is);
 * - the stream taker (the GET /events fast path), when they are a whole request head it accepts: it then
 *   owns the socket, and node:http never sees the connection;
 * - node:http otherwise, with the bytes read put back, exactly as if it had accepted the connection itself.
 * A connection that sends nothing within HEADERS_TIMEOUT_MS gets node:http's 408, as it would there.
 */
import type { Server as Http1Server } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';

/** The HTTP/2 connection preface starts with these bytes; no HTTP/1.1 method does. */
const H2_PREFACE_START = 'PRI ';
/** How often connections that have not sent anything yet are checked against the timeout. */
const SILENT_CHECK_INTERVAL_MS = 1000;

export interface ConnectionRoutes {
  readonly http1: Http1Server;
  /** Cleartext HTTP/2 with prior knowledge (H2C), when enabled. */
  readonly http2?: Http2Server;
  /** Offered the first bytes; true when it took the socket (it then owns it, errors included). */
  readonly takeStream?: (socket: Socket, firstBytes: Buffer) => boolean;
  /** A connection silent this long is answered 408 by node:http's clientError handling. */
  readonly silentTimeoutMs: number;
  /** Told of a stream taker's exception (a bug): the connection is closed, the process goes on. */
  readonly onTakeError: (error: unknown) => void;
}

export interface ConnectionRouter {
  route(socket: Socket): void;
  /** Stops the silent-connection checks and closes the connections that have not sent anything yet. */
  close(): void;
}

export function createConnectionRouter(routes: ConnectionRoutes): ConnectionRouter {
  /** Connections that have not sent a byte yet, in the order they were accepted. */
  const silent = new Map<Socket, { readonly acceptedAt: number; readonly stopRouting: () => void }>();
  const checker = setInterval(() => {
    const cutoff = Date.now() - routes.silentTimeoutMs;
    for (const [socket, { acceptedAt, stopRouting }] of silent) {
      if (acceptedAt > cutoff) break;
      stopRouting();
      // The same answer node:http gives a request that did not arrive in time.
      const timeout = Object.assign(new Error('no request in time'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
      socket.on('error', () => socket.destroy());
      routes.http1.emit('clientError', timeout, socket);
    }
  }, SILENT_CHECK_INTERVAL_MS);
  checker.unref();

  const { takeStream } = routes;
  const route = (socket: Socket) => {
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const start = seen.subarray(0, H2_PREFACE_START.length).toString('latin1');
      if (routes.http2 && seen.length < H2_PREFACE_START.length && H2_PREFACE_START.startsWith(start)) return;
      stopRouting();
      if (routes.http2 && start === H2_PREFACE_START) {
        // The h2 session picks the bytes up on its next tick: the socket must not be resumed here.
        socket.pause();
        socket.unshift(seen);
        routes.http2.emit('connection', socket);
        return;
      }
      if (takeStream && takes(takeStream, socket, seen)) return;
      // The h1 parser reads them from the resumed stream.
      socket.pause();
      socket.unshift(seen);
      routes.http1.emit('connection', socket);
      socket.resume();
    };
    const onError = () => socket.destroy();
    const onClose = () => silent.delete(socket);
    const stopRouting = () => {
      silent.delete(socket);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    silent.set(socket, { acceptedAt: Date.now(), stopRouting });
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  };

  /** Whether the stream taker took the socket; an exception of its own must not end the process. */
  const takes = (taker: NonNullable<ConnectionRoutes['takeStream']>, socket: Socket, firstBytes: Buffer): boolean => {
    try {
      return taker(socket, firstBytes);
    } catch (error) {
      routes.onTakeError(error);
      socket.destroy();
      return true;
    }
  };

  return {
    route,
    close: () => {
      clearInterval(checker);
      // They have asked for nothing, so nothing is lost; left open they would hold the shutdown up.
      for (const socket of silent.keys()) socket.destroy();
      silent.clear();
    },
  };
}
