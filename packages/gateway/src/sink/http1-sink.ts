/** An SSE stream on an HTTP/1.1 response: the stream owns its TCP connection for as long as it lasts. */
import type { ServerResponse } from 'node:http';
import { encodeRetry } from '../sse/frame.js';
import { onceDrainedOrClosed, type StreamSink } from './stream-sink.js';

export class Http1Sink implements StreamSink {
  readonly #response: ServerResponse;

  constructor(response: ServerResponse) {
    this.#response = response;
  }

  get started(): boolean {
    return this.#response.headersSent;
  }

  get gone(): boolean {
    return this.#response.destroyed || this.#response.socket?.destroyed !== false;
  }

  get bufferedBytes(): number {
    return this.#response.writableLength;
  }

  /** Bytes the kernel accepted on the socket: an SSE stream is the only exchange on its connection. */
  get flushedBytes(): number {
    const socket = this.#response.socket;
    return socket ? socket.bytesWritten - socket.writableLength : 0;
  }

  start(headers: Readonly<Record<string, string>>): void {
    this.#response.writeHead(200, headers);
  }

  write(bytes: Buffer | string): void {
    this.#response.write(bytes);
  }

  onceWritable(callback: () => void): void {
    onceDrainedOrClosed(this.#response, callback);
  }

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
