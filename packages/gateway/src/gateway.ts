/** Wires one gateway node: config -> engine -> hub -> app -> HTTP server, and its graceful shutdown. */
import { createServer, STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener, type ServerType, type serve } from '@hono/node-server';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { type ClaimStore, MemoryClaimStore } from './engine/claim-store.js';
import { type Engine, isCountingEngine } from './engine/engine.js';
import { createStorage } from './engine/index.js';
import { createApp } from './http/app.js';
import { errorBody } from './http/errors.js';
import { Hub } from './hub/hub.js';
import { createLogger } from './logger.js';
import { createMetrics, type GatewayMetrics } from './metrics.js';

export interface Gateway {
  readonly config: Config;
  readonly engine: Engine;
  readonly hub: Hub;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The port actually bound (useful with PORT=0). */
  readonly port: number;
  readonly url: string;
  /** Sends a new reconnect hint to every client (with the configured jitter). */
  setRetry(retryMs: number): void;
  /** Readiness off, stop accepting, close streams spread over `drainMs` (default: config), stop the engine. */
  close(drainMs?: number): Promise<void>;
}

export interface GatewayOptions {
  readonly logger?: Logger;
  /** Replaces the engine chosen from config (tests); single-use claims then stay in this process. */
  readonly engine?: Engine;
  /** Socket writes per event-loop turn in a large fan-out (tests lower it to exercise slicing). */
  readonly fanOutSliceWrites?: number;
}

/** Node's default would keep idle keep-alive sockets (and thus shutdown) waiting; SSE does not need them. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/**
 * Pending connections the kernel queues before accept (capped by net.core.somaxconn). Node's 511 overflows
 * in a reconnect storm, and every dropped SYN costs the client a 1-3 s retransmit.
 */
const LISTEN_BACKLOG = 4096;

export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const { engine, claims } = options.engine
    ? { engine: options.engine, claims: new MemoryClaimStore() as ClaimStore }
    : createStorage(config, logger);
  const metrics = createMetrics();
  const hub = new Hub({
    engine,
    logger,
    metrics,
    heartbeatMs: config.heartbeatMs,
    writeTimeoutMs: config.writeTimeoutMs,
    closeOnWriteTimeout: config.closeOnWriteTimeout,
    idleTimeoutMs: config.idleTimeoutMs,
    maxBufferedBytes: config.maxBufferedBytes,
    ...(options.fanOutSliceWrites ? { fanOutSliceWrites: options.fanOutSliceWrites } : {}),
  });
  metrics.observe({
    connections: () => hub.connectionCount,
    topics: () => hub.topicCount,
    engineReady: () => engine.isReady(),
    engineStats: () => (isCountingEngine(engine) ? engine.counters() : {}),
  });
  await hub.start();
  const app = createApp({ config, engine, claims, hub, metrics, logger });

  const server = await listen(app.fetch, config);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Requests Node's parser refuses never reach hono: answer them with the same JSON error shape.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: import('node:stream').Duplex) => {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'headers_too_large', 'the request line and headers are too large']
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'request_timeout', 'the request did not arrive in time']
          : [400, 'bad_request', 'the request is not valid HTTP'];
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`,
    );
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, engine: engine.kind }, 'gateway listening');

  let closing: Promise<void> | undefined;
  return {
    config,
    engine,
    hub,
    metrics,
    logger,
    port,
    url,
    setRetry(retryMs) {
      hub.broadcastRetry(retryMs, () => config.retryJitter * Math.random());
    },
    close(drainMs = config.drainMs) {
      closing ??= (async () => {
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        await hub.drain(drainMs);
        await hub.close();
        server.closeIdleConnections?.();
        await serverClosed;
        await engine.close();
      })();
      return closing;
    },
  };
}

function listen(
  fetch: Parameters<typeof serve>[0]['fetch'],
  config: Config,
): Promise<ServerType & import('node:http').Server> {
  return new Promise((resolve, reject) => {
    // Requests the adapter cannot turn into a URL (backslash in the path, `*`, a bad Host) get JSON too.
    const listener = getRequestListener(fetch, {
      hostname: config.host,
      errorHandler: (error) =>
        Response.json(
          (error as Error | undefined)?.name === 'RequestError'
            ? errorBody('bad_request', 'the request target or Host header is not valid')
            : errorBody('internal_error', 'internal error'),
          { status: (error as Error | undefined)?.name === 'RequestError' ? 400 : 500 },
        ),
    });
    const server = createServer(
      {
        headersTimeout: config.headersTimeoutMs,
        requestTimeout: config.requestTimeoutMs,
        connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
        // Node's own answer to a missing Host has no body: let the adapter default it to our host instead.
        requireHostHeader: false,
      },
      listener,
    ) as ServerType & import('node:http').Server;
    server.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG });
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}
