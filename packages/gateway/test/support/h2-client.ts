/// <reference types="node" />
/**
 * A real HTTP/2 client for the suites (Node's http2): one session, many SSE streams on it, each parsed by a
 * WHATWG SSE parser. Streams can be paused like a tab whose reader stopped, closed one by one, and report
 * how they ended (END_STREAM, or RST_STREAM with its code).
 */
import { type ClientHttp2Session, type ClientHttp2Stream, connect, constants } from 'node:http2';
import { createGunzip } from 'node:zlib';
import { createParser } from 'eventsource-parser';
import type { Received } from './gateway.js';
import { waitFor } from './wait.js';

export { constants as h2 };

const sessions = new Set<ClientHttp2Session>();

/** Opens a session; TLS certificates are not verified (the suites use a self-signed one). */
export async function openSession(origin: string): Promise<ClientHttp2Session> {
  const session = connect(origin, { rejectUnauthorized: false });
  sessions.add(session);
  session.on('error', () => {});
  session.once('close', () => sessions.delete(session));
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  return session;
}

export function closeAllSessions(): void {
  for (const session of sessions) session.destroy();
  sessions.clear();
}

export interface H2Stream {
  readonly stream: ClientHttp2Stream;
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly events: Received[];
  readonly retries: number[];
  readonly comments: string[];
  /** How it ended: 'end' (END_STREAM) or 'reset' (RST_STREAM, see rstCode); undefined while open. */
  readonly ended: 'end' | 'reset' | undefined;
  readonly rstCode: number | undefined;
  /** Body text so far (decompressed when gzip). */
  readonly text: string;
  readonly finished: Promise<void>;
}

/** GET `path` on the session as an SSE stream; resolves once the response head arrived. */
export async function openStream(
  session: ClientHttp2Session,
  path: string,
  headers: Record<string, string> = {},
): Promise<H2Stream> {
  const stream = session.request({ ':path': path, accept: 'text/event-stream', ...headers });
  const result = {
    stream,
    status: 0,
    headers: {} as Record<string, string | string[] | undefined>,
    events: [] as Received[],
    retries: [] as number[],
    comments: [] as string[],
    ended: undefined as 'end' | 'reset' | undefined,
    rstCode: undefined as number | undefined,
    text: '',
    finished: Promise.resolve(),
  };
  const parser = createParser({
    onEvent: (event) => result.events.push({ id: event.id ?? '', event: event.event ?? 'message', data: event.data }),
    onRetry: (ms) => result.retries.push(ms),
    onComment: (comment) => result.comments.push(comment),
  });
  result.finished = new Promise<void>((resolve) => {
    stream.once('close', () => {
      result.rstCode = stream.rstCode;
      result.ended = stream.rstCode === constants.NGHTTP2_NO_ERROR && stream.readableEnded ? 'end' : 'reset';
      resolve();
    });
  });
  stream.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    stream.once('response', (responseHeaders) => {
      result.status = Number(responseHeaders[':status']);
      result.headers = responseHeaders;
      const body = responseHeaders['content-encoding'] === 'gzip' ? stream.pipe(createGunzip()) : stream;
      body.setEncoding('utf8');
      body.on('data', (chunk: string) => {
        result.text += chunk;
        parser.feed(chunk);
      });
      body.on('error', () => {});
      resolve();
    });
    stream.once('close', () => reject(new Error(`stream closed before a response (code ${stream.rstCode})`)));
  });
  return result;
}

/** A plain request on the session (e.g. POST /publish); resolves with status and body text. */
export function request(
  session: ClientHttp2Session,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': method, ':path': path, ...headers });
    let status = 0;
    let text = '';
    stream.setEncoding('utf8');
    stream.on('response', (responseHeaders) => {
      status = Number(responseHeaders[':status']);
    });
    stream.on('data', (chunk: string) => {
      text += chunk;
    });
    stream.on('end', () => resolve({ status, body: text }));
    stream.on('error', reject);
    stream.end(body);
  });
}

/** Waits until every stream holds at least `count` events. */
export function waitForEvents(streams: readonly H2Stream[], count: number, what: string, timeoutMs = 20_000) {
  return waitFor(() => streams.every((stream) => stream.events.length >= count), { what, timeoutMs });
}
