/**
 * An SSE stream on a cleartext HTTP/1.1 connection the gateway took over right after the request head
 * (http/socket-exchange.ts): no IncomingMessage, ServerResponse or parser stays behind for it. The sink
 * writes its own head (response-head.ts), then every event's bytes go straight to the socket, the writes
 * of one turn in one syscall (tick-cork.ts). As in http1-sink.ts, the body ends when the connection does.
 */
import type { Socket } from 'node:net';
import { encodeRetry } from '../sse/frame.js';
import { responseHead } from './response-head.js';
import { onceDrainedOrClosed, type StreamSink } from './stream-sink.js';
import { corkForThisTurn } from './tick-cork.js';

export class SocketSink implements StreamSink {
  readonly #socket: Socket;
  #started = false;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  get started(): boolean {
    return this.#started;
  }

  get gone(): boolean {
    return this.#socket.destroyed || !this.#socket.writable;
  }

  get bufferedBytes(): number {
    return this.#socket.writableLength;
  }

  get flushedBytes(): number {
    return this.#socket.bytesWritten - this.#socket.writableLength;
  }

  start(headers: Readonly<Record<string, string>>): void {
    // The head and what follows it in this turn (the retry hint, a replay's first chunk) in one syscall.
    corkForThisTurn(this.#socket);
    this.#socket.write(responseHead(200, headers), 'latin1');
    this.#started = true;
  }

  write(bytes: Buffer | string): void {
    corkForThisTurn(this.#socket);
    this.#socket.write(bytes);
  }

  onceWritable(callback: () => void): void {
    onceDrainedOrClosed(this.#socket, callback);
  }

  /** Everything written goes out first; then the connection ends, which is what ends the body. */
  end(): void {
    this.#socket.end();
  }

  abort(): void {
    this.#socket.destroy();
  }

  answerRetryOnly(headers: Readonly<Record<string, string>>, retryMs: number): void {
    this.#socket.end(responseHead(200, headers) + encodeRetry(retryMs), 'latin1');
  }
}
