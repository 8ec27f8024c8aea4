/**
 * GET /events: validates the request, then hands the stream to the hub with its exchange's sink (the
 * socket itself, or Node's response: never hono's web-stream SSE helper, which costs a promise per write
 * per connection). Refusals are GatewayErrors, or retry-only answers for an EventSource.
 */
import type { Http2Bindings, HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { ORIGIN } from '@sse-gateway/publisher-sdk/protocol';
import type { Context } from 'hono';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Engine } from '../engine/engine.js';
import { Connection } from '../hub/connection.js';
import type { Hub } from '../hub/hub.js';
import { SSE_HEADERS } from '../sse/headers.js';
import type { Access } from './auth/access.js';
import type { ConnectionLimits } from './connection-limits.js';
import type { Cors } from './cors.js';
import { GatewayError } from './errors.js';
import { type EventsExchange, nodeExchange } from './events-exchange.js';
import { type RequestView, viewOfContext } from './request-view.js';
import { parseLastEventId, parseTopics } from './subscribe-request.js';

export interface EventsRouteDeps {
  readonly config: Config;
  readonly hub: Hub;
  readonly engine: Engine;
  readonly cors: Cors;
  readonly access: Access;
  readonly limits: ConnectionLimits;
  readonly logger: Logger;
  /** Random source for retry and max-age jitter (injectable for tests). */
  readonly random: () => number;
  /** Told of each refusal answered with a paced retry hint (for the metrics). */
  readonly onPacedRefusal?: (code: string) => void;
}

/** Limits whose refusal an EventSource gets as a paced retry hint instead of an error status. */
const PACED_REFUSALS = new Set(['rate_limited', 'node_full']);
/** A refused EventSource waits at least this long (or the retry hint, if longer) before it comes back. */
const PACED_MIN_RETRY_MS = 1000;

/** EventSource always sends `Accept: text/event-stream`; a client that does not gets JSON errors. */
function acceptsEventStream(c: RequestView): boolean {
  return /\btext\/event-stream\b/.test(c.header('accept') ?? '');
}

/** Share of MAX_CONNECTION_AGE_MS taken off at random, so connections opened together do not all close together. */
const MAX_AGE_JITTER = 0.1;

export type EventsRoute = ReturnType<typeof createEventsRoute>;

export function createEventsRoute(deps: EventsRouteDeps) {
  const { config, hub, engine, cors, access, limits } = deps;
  const log = deps.logger.child({ mod: 'events' });
  // Shared by every connection without CORS headers (the common case): one object, not one per stream.
  const baseHeaders = Object.freeze({ ...config.responseHeaders, ...SSE_HEADERS });
  const streamHeaders = (corsHeaders: Record<string, string>) =>
    Object.keys(corsHeaders).length === 0 ? baseHeaders : { ...config.responseHeaders, ...corsHeaders, ...SSE_HEADERS };
  let nextConnectionId = 1;
  /** RETRY_MS plus this connection's random share of RETRY_JITTER. */
  const retryHintMs = () => hub.retryMs * (1 + config.retryJitter * deps.random());

  /** An empty event stream holding only a `retry:` hint: what an EventSource gets instead of a 503. */
  const answerRetryOnly = (exchange: EventsExchange, hintMs: number) =>
    exchange
      .sink({ gzip: false })
      .answerRetryOnly(streamHeaders(cors.responseHeaders(exchange.view.header('origin'))), hintMs);

  /**
   * Serves one GET /events: validates it, and either hands the stream to the hub or throws a
   * GatewayError (rendered by the caller). Every other answer goes out on the exchange itself.
   */
  const serve = async (exchange: EventsExchange): Promise<void> => {
    const c = exchange.view;
    const unavailable = hub.refusingStreams
      ? new GatewayError(503, 'draining', 'this node is shutting down; reconnect to another', { 'Retry-After': '1' })
      : !engine.isReady()
        ? new GatewayError(503, 'engine_unavailable', 'the event store is unreachable; retry shortly', {
            'Retry-After': '1',
          })
        : undefined;
    if (unavailable) {
      // EventSource gives up for good on any error status: it gets an empty stream with a retry hint and
      // comes back (through the balancer, to another node) by itself. Other clients get the 503.
      if (!acceptsEventStream(c)) throw unavailable;
      answerRetryOnly(exchange, retryHintMs());
      return;
    }
    const topics = parseTopics(c.queries('topic'), config.maxTopicsPerConnection);
    const resume = parseLastEventId(c.header('last-event-id') ?? c.query('lastEventId'), topics);
    const { principal, commit } = await access.authorizeSubscribe(c, topics);

    if (exchange.gone) return;
    const address = clientAddress(exchange, config.trustProxy);
    let release: () => void;
    try {
      release = limits.admit(principal?.sub ? `sub:${principal.sub}` : `ip:${address}`);
    } catch (error) {
      if (!(error instanceof GatewayError) || !PACED_REFUSALS.has(error.code) || !acceptsEventStream(c)) throw error;
      // An EventSource gives up for good on an error status: it gets an empty stream and a paced retry hint.
      deps.onPacedRefusal?.(error.code);
      answerRetryOnly(exchange, limits.retryHintMs(error.code, Math.max(hub.retryMs, PACED_MIN_RETRY_MS), deps.random));
      return;
    }
    try {
      await commit(); // spends a ticket only now that the stream is admitted
    } catch (error) {
      release();
      throw error;
    }
    const useGzip = config.gzip && /\bgzip\b/.test(c.header('accept-encoding') ?? '');
    const sink = exchange.sink({ gzip: useGzip });
    if (exchange.gone || sink.gone) {
      // The client left while its credentials were checked: no 'close' will come for listeners added now.
      release();
      return;
    }
    const origin = c.header('origin');
    const now = Date.now();
    const connection = new Connection({
      id: nextConnectionId++,
      topics,
      positions: resume ? [...resume] : topics.map(() => ORIGIN),
      sink,
      maxBufferedBytes: config.maxBufferedBytes,
      now,
      closeAt:
        config.maxConnectionAgeMs > 0
          ? now + config.maxConnectionAgeMs * (1 - MAX_AGE_JITTER * deps.random())
          : Infinity,
      remoteAddress: address,
      subject: principal?.sub,
      expiresAt: principal?.expiresAt ?? Number.POSITIVE_INFINITY,
      retryHintMs: retryHintMs(),
      headers: streamHeaders(cors.responseHeaders(origin)),
    });
    exchange.onEnd(() => {
      release();
      connection.close('client-closed');
    });
    log.info(
      {
        conn: connection.id,
        topics,
        resumed: resume !== undefined,
        ip: connection.remoteAddress,
        sub: principal?.sub,
        auth: principal?.source,
      },
      'connection opened',
    );
    void hub.open(connection, resume, () => connection.start());
  };

  return {
    serve,
    /** The hono route: the same, for requests that come through the app. */
    route: async (c: Context<{ Bindings: HttpBindings | Http2Bindings }>) => {
      await serve(nodeExchange(viewOfContext(c), c.env.incoming, c.env.outgoing));
      return RESPONSE_ALREADY_SENT;
    },
  };
}

/** The peer address, or the address the (trusted) load balancer saw: the last X-Forwarded-For entry. */
function clientAddress(exchange: EventsExchange, trustProxy: boolean): string | undefined {
  const forwarded = trustProxy ? exchange.view.header('x-forwarded-for') : undefined;
  if (forwarded) {
    const last = forwarded.slice(forwarded.lastIndexOf(',') + 1).trim();
    if (last) return last;
  }
  return exchange.remoteAddress;
}
