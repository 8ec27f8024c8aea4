/**
 * gzip in front of another sink. SYNC_FLUSH after every write, so each event reaches the client now and not
 * when the deflate window fills. Compressed chunks go straight to the inner sink; the connection's budget
 * covers both buffers (bytes waiting for the compressor, and compressed bytes not yet sent).
 */
import { createGzip, type Gzip, constants as zlibConstants } from 'node:zlib';
import type { StreamSink } from './stream-sink.js';

export class GzipSink implements StreamSink {
  readonly #inner: StreamSink;
  readonly #gzip: Gzip;

  constructor(inner: StreamSink) {
    this.#inner = inner;
    this.#gzip = createGzip({ flush: zlibConstants.Z_SYNC_FLUSH });
    this.#gzip.on('data', (chunk: Buffer) => inner.write(chunk));
    this.#gzip.on('error', () => inner.abort());
  }

  get started(): boolean {
    return this.#inner.started;
  }

  get gone(): boolean {
    return this.#inner.gone;
  }

  get bufferedBytes(): number {
    return this.#inner.bufferedBytes + this.#gzip.writableLength;
  }

  get flushedBytes(): number {
    return this.#inner.flushedBytes;
  }

  start(headers: Readonly<Record<string, string>>): void {
    this.#inner.start({ ...headers, 'Content-Encoding': 'gzip', Vary: varyWith(headers, 'Accept-Encoding') });
  }

  write(bytes: Buffer | string): void {
    this.#gzip.write(bytes);
  }

  onceWritable(callback: () => void): void {
    let called = false;
    const once = () => {
      if (called) return;
      called = true;
      this.#gzip.off('drain', once);
      callback();
    };
    this.#gzip.once('drain', once);
    this.#inner.onceWritable(once);
  }

  end(): void {
    this.#gzip.once('end', () => this.#inner.end());
    this.#gzip.end();
  }

  abort(): void {
    this.#gzip.destroy();
    this.#inner.abort();
  }

  /** Uncompressed: a retry-only answer is a handful of bytes. */
  answerRetryOnly(headers: Readonly<Record<string, string>>, retryMs: number): void {
    this.#gzip.destroy();
    this.#inner.answerRetryOnly(headers, retryMs);
  }
}

/** Adds a header name to Vary without dropping the ones already there (CORS adds `Origin`). */
function varyWith(headers: Readonly<Record<string, string>>, name: string): string {
  const existing = Object.entries(headers).find(([key]) => key.toLowerCase() === 'vary')?.[1];
  return existing ? `${existing}, ${name}` : name;
}
