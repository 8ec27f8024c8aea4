/**
 * GET /events on a cleartext HTTP/1.1 connection taken over right after its head: the head arrived whole
 * in the connection's first bytes and request-head.ts read it, so node:http never sees the connection, and
 * a stream keeps only its socket (no IncomingMessage, ServerResponse or parser: about a third of the memory
 * of a stream through node:http, and a faster accept). Everything it answers owns the connection and ends
 * it: the stream, a retry-only answer, a JSON error.
 */
import type { Socket } from 'node:net';
import { GzipSink } from '../sink/gzip-sink.js';
import { responseHead } from '../sink/response-head.js';
import { SocketSink } from '../sink/socket-sink.js';
import { type EventsExchange, jsonAnswerHeaders } from './events-exchange.js';
import type { RequestView } from './request-view.js';

export function socketExchange(socket: Socket, view: RequestView): EventsExchange {
  // From now on nobody else listens: a reset while the request is checked must not be thrown.
  socket.on('error', ignoreError);
  return {
    view,
    remoteAddress: socket.remoteAddress,
    get gone() {
      return socket.destroyed;
    },
    sink: (options) => {
      const sink = new SocketSink(socket);
      return options.gzip ? new GzipSink(sink) : sink;
    },
    onEnd: (callback) => {
      socket.on('close', callback);
    },
    answerJson: (status, body, headers) => {
      if (socket.destroyed || socket.bytesWritten > 0) return;
      const text = JSON.stringify(body);
      const head = responseHead(status, jsonAnswerHeaders(headers, Buffer.byteLength(text)));
      socket.end(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(text)]));
    },
  };
}

function ignoreError(): void {}
