/// <reference types="node" />
/**
 * Raw HTTP requests for tests that must see exactly what the gateway answers (status, headers, body),
 * each on a fresh connection, with event streams kept open and collected until closed.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { expect } from 'vitest';

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The whole body, or for an event stream, what arrived so far. */
  readonly text: string;
  /** Parsed JSON body (undefined for streams and non-JSON). */
  readonly json: unknown;
  /** Event streams only: true once the server ended the stream. */
  readonly ended: boolean;
  close(): void;
}

const openReplies = new Set<Reply>();

/**
 * Sends one request on a fresh connection. JSON and other bodies are read to the end; an event stream
 * resolves at once and keeps collecting its text until closed. `chunks` sends the body piece by piece.
 */
export function send(
  method: string,
  url: string,
  options: { headers?: Record<string, string>; body?: string | Buffer; chunks?: readonly Buffer[] } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: options.headers ?? {}, agent: false }, (res) => {
      let text = '';
      let ended = false;
      res.setEncoding('utf8');
      const stream = /^text\/event-stream/.test(res.headers['content-type'] ?? '');
      const reply: Reply = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        get text() {
          return text;
        },
        get json() {
          if (stream) return undefined;
          try {
            return JSON.parse(text);
          } catch {
            return undefined;
          }
        },
        get ended() {
          return ended;
        },
        close() {
          res.destroy();
          req.destroy();
          openReplies.delete(reply);
        },
      };
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('error', () => {});
      res.on('end', () => {
        ended = true;
        if (!stream) resolve(reply);
      });
      if (stream) {
        openReplies.add(reply);
        resolve(reply);
      }
    });
    // The server may answer (413) and close before the whole body is sent.
    req.on('error', reject);
    if (options.chunks) {
      for (const chunk of options.chunks) req.write(chunk);
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** Closes every event stream `send` left open (for afterEach). */
export function closeAllReplies(): void {
  for (const reply of [...openReplies]) reply.close();
}

/** A JSON error: status, `{ error: { code, message } }`, application/json. */
export function expectError(reply: Reply, status: number, code: string): ErrorBody['error'] {
  expect(reply.status, `expected ${status} ${code}, got ${reply.status} ${reply.text}`).toBe(status);
  expect(reply.headers['content-type']).toMatch(/^application\/json/);
  const body = reply.json as ErrorBody;
  expect(body).toEqual({ error: { code, message: expect.any(String) } });
  expect(body.error.message.length).toBeGreaterThan(0);
  return body.error;
}
