/**
 * GET /events straight from Node's request listener, in front of hono: the one route that is hit
 * thousands of times a second in a reconnect storm skips hono's routing, its web Request wrapper and the
 * middleware chain. Same route code (events-route.ts), same errors (`{"error":{code,message}}` with CORS
 * headers, counted in the metrics); every other request, and anything unusual about this one (another
 * method, an absolute-form target), goes on to hono.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../metrics.js';
import type { Cors } from './cors.js';
import { errorBody, GatewayError } from './errors.js';
import type { EventsRoute } from './events-route.js';
import { viewOfNode } from './request-view.js';
import { SECURITY_HEADERS } from './security-headers.js';

type Incoming = IncomingMessage | Http2ServerRequest;
type Outgoing = ServerResponse | Http2ServerResponse;

const PATH = '/events';

/** Returns a handler that serves GET /events and answers true, or answers false for hono to take it. */
export function createEventsFastPath(deps: {
  readonly events: EventsRoute;
  readonly cors: Cors;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
}): (incoming: Incoming, outgoing: Outgoing) => boolean {
  const log = deps.logger.child({ mod: 'http' });
  return (incoming, outgoing) => {
    const url = incoming.url ?? '';
    if (incoming.method !== 'GET' || !url.startsWith(PATH)) return false;
    const rest = url.charCodeAt(PATH.length);
    // Exactly /events, optionally with a query: /events/x, /eventsx and /events#... are hono's (404).
    if (url.length > PATH.length && rest !== 63 /* ? */) return false;
    const search = url.length > PATH.length ? url.slice(PATH.length + 1) : '';
    const view = viewOfNode(incoming, search);
    deps.events.serve(view, incoming, outgoing).catch((error: unknown) => {
      const origin = view.header('origin');
      const cors = deps.cors.responseHeaders(origin);
      if (error instanceof GatewayError) {
        deps.metrics.rejectedRequests.inc({ code: error.code });
        answerJson(outgoing, error.status, errorBody(error.code, error.message), { ...cors, ...error.headers });
        return;
      }
      log.error({ err: error, path: PATH }, 'unhandled error');
      answerJson(outgoing, 500, errorBody('internal_error', 'internal error'), cors);
    });
    return true;
  };
}

function answerJson(outgoing: Outgoing, status: number, body: unknown, headers: Record<string, string>): void {
  if (outgoing.headersSent || outgoing.destroyed) return;
  const text = JSON.stringify(body);
  (outgoing as ServerResponse)
    .writeHead(status, {
      ...SECURITY_HEADERS,
      ...headers,
      'Content-Type': 'application/json',
      'Content-Length': String(Buffer.byteLength(text)),
    })
    .end(text);
}
