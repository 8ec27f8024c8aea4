/**
 * An SSE stream on an HTTP/1.1 response: the stream owns its TCP connection for as long as it lasts, so
 * its body needs no framing. The head says `Connection: close` and no `Transfer-Encoding` (the body ends
 * when the connection does, RFC 9112 section 6.3), and after the head every event's bytes go straight to
 * the socket: no chunk-size line and CRLF around each write, no trip through ServerResponse.write, and
 * the writes of one turn leave in one syscall (tick-cork.ts).
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { encodeRetry } from '../sse/frame.js';
import { onceDrainedOrClosed, type StreamSink } from './stream-sink.js';
import { corkForThisTurn } from './tick-cork.js';

/** ServerResponse fields Node documents loosely; both decide how the head frames the body. */
interface FramedResponse extends ServerResponse {
  shouldKeepAlive: boolean;
  useChunkedEncodingByDefault: boolean;
}

export class Http1Sink implements StreamSink {
  readonly #response: ServerResponse;
  /** The connection, once the head went out: from then on the body is written to it directly. */
  #socket: Socket | undefined;

  constructor(response: ServerResponse) {
    this.#response = response;
  }

  get started(): boolean {
    return this.#response.headersSent;
  }

  /** By the request's socket: a pipelined response has none of its own until the ones before it are sent. */
  get gone(): boolean {
    return this.#response.destroyed || this.#response.req.socket?.destroyed !== false;
  }

  get bufferedBytes(): number {
    return this.#socket ? this.#socket.writableLength : this.#response.writableLength;
  }

  /** Bytes the kernel accepted on the socket: an SSE stream is the only exchange on its connection. */
  get flushedBytes(): number {
    const socket = this.#response.socket;
    return socket ? socket.bytesWritten - socket.writableLength : 0;
  }

  start(headers: Readonly<Record<string, string>>): void {
    const response = this.#response as FramedResponse;
    const socket = response.socket;
    // Body delimited by the end of the connection: Node then writes `Connection: close` and no
    // `Transfer-Encoding`, and leaves the body's bytes as they are.
    response.shouldKeepAlive = false;
    response.useChunkedEncodingByDefault = false;
    // The head and what follows it in this turn (the retry hint, a replay's first chunk) in one syscall.
    if (socket) corkForThisTurn(socket);
    response.writeHead(200, headers);
    response.flushHeaders();
    // Only once the head is on the socket (it is, for a server response with its socket attached).
    if (socket && response.writableLength === socket.writableLength) this.#socket = socket;
  }

  write(bytes: Buffer | string): void {
    const socket = this.#socket;
    if (socket) {
      corkForThisTurn(socket);
      socket.write(bytes);
    } else this.#response.write(bytes);
  }

  onceWritable(callback: () => void): void {
    onceDrainedOrClosed(this.#socket ?? this.#response, callback);
  }

  /** Everything written goes out first; then the connection ends, which is what ends the body. */
  end(): void {
    const response = this.#response;
    response.once('finish', () => response.socket?.end());
    response.end();
  }

  abort(): void {
    this.#response.destroy();
  }

  answerRetryOnly(headers: Readonly<Record<string, string>>, retryMs: number): void {
    const response = this.#response;
    response.once('finish', () => response.socket?.end());
    response.writeHead(200, headers).end(encodeRetry(retryMs));
  }
}
