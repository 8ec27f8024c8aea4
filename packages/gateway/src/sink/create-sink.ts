/** Picks the sink for a response: HTTP/2 stream or HTTP/1.1 response, with gzip in front when asked. */
import type { ServerResponse } from 'node:http';
import { Http2ServerResponse } from 'node:http2';
import { GzipSink } from './gzip-sink.js';
import { Http1Sink } from './http1-sink.js';
import { Http2Sink } from './http2-sink.js';
import type { StreamSink } from './stream-sink.js';

export function createSink(response: ServerResponse | Http2ServerResponse, options: { gzip: boolean }): StreamSink {
  const sink = response instanceof Http2ServerResponse ? new Http2Sink(response) : new Http1Sink(response);
  return options.gzip ? new GzipSink(sink) : sink;
}
