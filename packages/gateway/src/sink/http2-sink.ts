/**
 * An SSE stream on one HTTP/2 stream. Its session (one TCP connection) carries every other stream of the
 * same browser, so everything here is per stream: the backlog is the stream's own write buffer (it grows
 * when the peer stops granting window), progress is counted from what was written, and ending a stream
 * never touches the session. `response.socket` is the session's socket, and is not used.
 */
import { constants, type Http2ServerResponse, type ServerHttp2Stream } from 'node:http2';
import { encodeRetry } from '../sse/frame.js';
import { onceDrainedOrClosed, type StreamSink } from './stream-sink.js';

/** Headers HTTP/2 forbids (RFC 9113 §8.2.2); Node throws on them, and custom RESPONSE_HEADERS may hold one. */
const CONNECTION_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

export class Http2Sink implements StreamSink {
  readonly #response: Http2ServerResponse;
  readonly #stream: ServerHttp2Stream;
  /** Bytes written into the stream so far. */
  #written = 0;

  constructor(response: Http2ServerResponse) {
    this.#response = response;
    this.#stream = response.stream;
  }

  get started(): boolean {
    return this.#response.headersSent;
  }

  get gone(): boolean {
    return this.#stream.destroyed || this.#stream.closed;
  }

  get bufferedBytes(): number {
    return this.#stream.writableLength;
  }

  get flushedBytes(): number {
    return this.#written - this.#stream.writableLength;
  }

  start(headers: Readonly<Record<string, string>>): void {
    this.#response.writeHead(200, http2Headers(headers));
  }

  write(bytes: Buffer | string): void {
    this.#written += typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
    this.#stream.write(bytes);
  }

  onceWritable(callback: () => void): void {
    onceDrainedOrClosed(this.#stream, callback);
  }

  end(): void {
    this.#response.end();
  }

  abort(): void {
    // RST_STREAM(CANCEL): the peer sees this stream fail (EventSource reconnects); the session lives on.
    if (!this.#stream.destroyed) this.#stream.close(constants.NGHTTP2_CANCEL);
  }

  answerRetryOnly(headers: Readonly<Record<string, string>>, retryMs: number): void {
    this.#response.writeHead(200, http2Headers(headers)).end(encodeRetry(retryMs));
  }
}

function http2Headers(headers: Readonly<Record<string, string>>): Record<string, string> {
  const allowed: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!CONNECTION_HEADERS.has(name.toLowerCase())) allowed[name] = value;
  }
  return allowed;
}
