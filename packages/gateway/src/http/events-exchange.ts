/**
 * One GET /events exchange, whatever carries it: Node's request and response (HTTP/1.1 through node:http,
 * HTTP/2, TLS), or a cleartext socket the gateway took over right after the request head
 * (socket-exchange.ts). The events route reads the request and answers through this alone.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { createSink } from '../sink/create-sink.js';
import type { StreamSink } from '../sink/stream-sink.js';
import type { RequestView } from './request-view.js';
import { SECURITY_HEADERS } from './security-headers.js';

export interface EventsExchange {
  readonly view: RequestView;
  /** The peer's address (the load balancer's, behind one). */
  readonly remoteAddress: string | undefined;
  /** Whether the client left already. */
  readonly gone: boolean;
  /** Where the stream's bytes go; asked for once, to start the stream or to answer retry-only. */
  sink(options: { gzip: boolean }): StreamSink;
  /** Calls `callback` once the exchange ended, whatever ended it (errors after that are ignored). */
  onEnd(callback: () => void): void;
  /** An error answer with a JSON body, unless something was sent already or the client left. */
  answerJson(status: number, body: unknown, headers: Readonly<Record<string, string>>): void;
}

/** The JSON error answer's headers, in the order both transports send them. */
export function jsonAnswerHeaders(
  headers: Readonly<Record<string, string>>,
  bodyBytes: number,
): Record<string, string> {
  return {
    ...SECURITY_HEADERS,
    ...headers,
    'Content-Type': 'application/json',
    'Content-Length': String(bodyBytes),
  };
}

/** The exchange of a request Node's HTTP servers parsed. */
export function nodeExchange(
  view: RequestView,
  incoming: IncomingMessage | Http2ServerRequest,
  outgoing: ServerResponse | Http2ServerResponse,
): EventsExchange {
  return {
    view,
    remoteAddress: incoming.socket.remoteAddress,
    // Not incoming.destroyed: a request without a body can be read to its end and destroyed while its
    // client still waits (a pipelined request is).
    get gone() {
      return outgoing instanceof Http2ServerResponse ? outgoing.stream.destroyed : incoming.socket.destroyed;
    },
    sink: (options) => createSink(outgoing, options),
    // The response's 'close' fires once whatever ended the exchange (it follows any socket error), so one
    // listener covers a hang-up; errors need a listener only so they are not thrown. Plain `on`: `once`
    // would wrap each listener in a bound function and a state object.
    onEnd: (callback) => {
      outgoing.on('close', callback);
      incoming.on('error', ignoreError);
      outgoing.on('error', ignoreError);
    },
    answerJson: (status, body, headers) => {
      if (outgoing.headersSent || outgoing.destroyed) return;
      const text = JSON.stringify(body);
      (outgoing as ServerResponse).writeHead(status, jsonAnswerHeaders(headers, Buffer.byteLength(text))).end(text);
    },
  };
}

function ignoreError(): void {}
