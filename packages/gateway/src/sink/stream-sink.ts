/**
 * Where one SSE stream's bytes go. The Connection keeps positions, queue, budget and ids; a sink knows its
 * transport: how to send the head, how much is still buffered, how much the peer has taken, and how to end
 * the way a close reason requires. One sink per transport (http1-sink.ts, http2-sink.ts) and gzip in front
 * of either (gzip-sink.ts); create-sink.ts picks them for a response.
 */

export interface StreamSink {
  /** Whether the response head went out; before it, nothing may be written. */
  readonly started: boolean;
  /** Whether the stream is gone (the peer left, or it was ended or aborted). */
  readonly gone: boolean;
  /** Bytes this stream accepted that its transport has not taken yet (per stream, also over HTTP/2). */
  readonly bufferedBytes: number;
  /** Ever-growing count of this stream's bytes its transport took: the write timeout's progress measure. */
  readonly flushedBytes: number;
  /** Sends the 200 head with `headers` (plus the sink's own content coding). */
  start(headers: Readonly<Record<string, string>>): void;
  /** Hot path: hands pre-encoded bytes to the transport, no copy and no encoding. */
  write(bytes: Buffer | string): void;
  /** Calls `callback` once, when the backlog drained or the stream closed. */
  onceWritable(callback: () => void): void;
  /**
   * Ends after the backlog is flushed. Over HTTP/1.1 its TCP connection ends too, so a reconnect cannot
   * reuse it (it would reach this node again through a connection-level balancer).
   */
  end(): void;
  /** Drops the backlog and ends at once: nothing more can or should reach this client. */
  abort(): void;
  /**
   * Before `start` only: an empty event stream holding only a `retry:` hint. EventSource gives up for good
   * on an error status, but reconnects after this (elsewhere, where a balancer picks per request).
   */
  answerRetryOnly(headers: Readonly<Record<string, string>>, retryMs: number): void;
}

/** Calls `callback` once, on the emitter's first 'drain' or 'close', and drops the other listener. */
export function onceDrainedOrClosed(emitter: NodeJS.EventEmitter, callback: () => void): void {
  const done = () => {
    emitter.off('drain', done);
    emitter.off('close', done);
    callback();
  };
  emitter.once('drain', done);
  emitter.once('close', done);
}
