/**
 * Decides, from a cleartext connection's first bytes, which server takes it. The HTTP/2 connection preface
 * starts with `PRI `, which no HTTP/1.1 method does.
 */
import type { Server as Http1Server } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';

/** The HTTP/2 connection preface starts with these bytes; no HTTP/1.1 method does. */
const H2_PREFACE_START = 'PRI ';

/**
 * Hands a cleartext connection to the HTTP/2 server if it opens with the h2 preface, else to HTTP/1.1.
 * The bytes read to decide are put back first: the h2 session picks them up on its next tick (so the socket
 * must not be resumed here), the h1 parser from the resumed stream.
 */
export function routeByPreface(socket: Socket, http1: Http1Server, http2: Http2Server): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const head = seen.subarray(0, H2_PREFACE_START.length).toString('latin1');
    if (seen.length < H2_PREFACE_START.length && H2_PREFACE_START.startsWith(head)) return; // undecided yet
    socket.off('data', onData);
    socket.off('error', onError);
    socket.pause();
    socket.unshift(seen);
    if (head === H2_PREFACE_START) {
      http2.emit('connection', socket);
    } else {
      http1.emit('connection', socket);
      socket.resume();
    }
  };
  const onError = () => socket.destroy();
  socket.on('data', onData);
  socket.on('error', onError);
}
