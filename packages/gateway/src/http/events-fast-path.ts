/**
 * GET /events in front of hono: the one route that is hit thousands of times a second in a reconnect storm
 * skips hono's routing, its web Request wrapper and the middleware chain. Same route code (events-route.ts),
 * same errors (`{"error":{code,message}}` with CORS headers, counted in the metrics), whether the request
 * came through Node's request listener or on a socket taken over after its head (socket-exchange.ts);
 * every other request, and anything unusual about this one (another method, an absolute-form target), goes
 * on to hono.
 */
import { type IncomingMessage, maxHeaderSize, type ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../metrics.js';
import type { Cors } from './cors.js';
import { errorBody, GatewayError } from './errors.js';
import { type EventsExchange, nodeExchange } from './events-exchange.js';
import type { EventsRoute } from './events-route.js';
import { parseRequestHead } from './request-head.js';
import { viewOfHead, viewOfNode } from './request-view.js';
import { socketExchange } from './socket-exchange.js';

type Incoming = IncomingMessage | Http2ServerRequest;
type Outgoing = ServerResponse | Http2ServerResponse;

const PATH = '/events';

/**
 * The query string (without `?`) of a request target naming exactly /events, optionally with a query;
 * undefined for any other target: /events/x, /eventsx and /events#... are hono's (404).
 */
export function eventsQuery(target: string): string | undefined {
  if (!target.startsWith(PATH)) return undefined;
  if (target.length === PATH.length) return '';
  return target.charCodeAt(PATH.length) === 63 /* ? */ ? target.slice(PATH.length + 1) : undefined;
}

export interface EventsFastPath {
  /** Serves a GET /events exchange, rendering any refusal as the route's JSON error. */
  serveExchange(exchange: EventsExchange): void;
  /** Node's request listener side: serves GET /events and answers true, or answers false for hono to take it. */
  serveNode(incoming: Incoming, outgoing: Outgoing): boolean;
  /**
   * A cleartext connection's first bytes: if they are exactly one plain GET /events head (request-head.ts),
   * serves the stream on the socket itself and answers true; false leaves the connection to node:http.
   */
  serveSocket(socket: Socket, firstBytes: Buffer): boolean;
}

export function createEventsFastPath(deps: {
  readonly events: EventsRoute;
  readonly cors: Cors;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
}): EventsFastPath {
  const log = deps.logger.child({ mod: 'http' });
  const serveExchange = (exchange: EventsExchange) => {
    deps.events.serve(exchange).catch((error: unknown) => {
      const cors = deps.cors.responseHeaders(exchange.view.header('origin'));
      if (error instanceof GatewayError) {
        deps.metrics.rejectedRequests.inc({ code: error.code });
        exchange.answerJson(error.status, errorBody(error.code, error.message), { ...cors, ...error.headers });
        return;
      }
      log.error({ err: error, path: PATH }, 'unhandled error');
      exchange.answerJson(500, errorBody('internal_error', 'internal error'), cors);
    });
  };
  return {
    serveExchange,
    serveNode: (incoming, outgoing) => {
      if (incoming.method !== 'GET') return false;
      const query = eventsQuery(incoming.url ?? '');
      if (query === undefined) return false;
      serveExchange(nodeExchange(viewOfNode(incoming, query), incoming, outgoing));
      return true;
    },
    serveSocket: (socket, firstBytes) => {
      const head = parseRequestHead(firstBytes, maxHeaderSize);
      const query = head && eventsQuery(head.target);
      if (!head || query === undefined) return false;
      serveExchange(socketExchange(socket, viewOfHead(head, query)));
      return true;
    },
  };
}
