/** Wires one gateway node: config -> engine -> hub -> app -> HTTP server, and its graceful shutdown. */
import { getRequestListener } from '@hono/node-server';
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
import { startNodeServer } from './server/node-server.js';

export interface Gateway {
  readonly config: Config;
  readonly engine: Engine;
  readonly hub: Hub;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The port actually bound (useful with PORT=0). */
  readonly port: number;
  readonly url: string;
  /** Re-reads TLS_CERT / TLS_KEY for new connections; open streams stay. Throws (and keeps the old pair) if unusable. */
  reloadTls(): void;
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
    eventsDelivered: () => hub.eventsDelivered,
    engineReady: () => engine.isReady(),
    engineStats: () => (isCountingEngine(engine) ? engine.counters() : {}),
  });
  await hub.start();
  const { app, fastPath } = createApp({ config, engine, claims, hub, metrics, logger });

  const honoListener = requestListener(app.fetch, config);
  // GET /events skips hono (routing, its Request wrapper, middleware); everything else goes through it.
  const listener: typeof honoListener = async (incoming, outgoing) => {
    if (!fastPath(incoming, outgoing)) await honoListener(incoming, outgoing);
  };
  const server = await startNodeServer(listener, config, logger);
  const port = server.port;
  const url = `${server.scheme}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, protocols: server.protocols, engine: engine.kind }, 'gateway listening');

  let closing: Promise<void> | undefined;
  return {
    config,
    engine,
    hub,
    metrics,
    logger,
    port,
    url,
    reloadTls() {
      const files = server.reloadTls();
      logger.info({ subject: files.subject, validTo: files.validTo.toISOString() }, 'TLS certificate reloaded');
    },
    setRetry(retryMs) {
      hub.broadcastRetry(retryMs, () => config.retryJitter * Math.random());
    },
    close(drainMs = config.drainMs) {
      closing ??= (async () => {
        const serverClosed = server.close();
        await hub.drain(drainMs);
        await hub.close();
        // Streams are closed: idle HTTP/1.1 connections end, HTTP/2 sessions get GOAWAY.
        server.closeIdle();
        await serverClosed;
        await engine.close();
      })();
      return closing;
    },
  };
}

/** hono's Node adapter; requests it cannot turn into a URL (backslash in the path, `*`, a bad Host) get JSON too. */
function requestListener(fetch: Parameters<typeof getRequestListener>[0], config: Config) {
  return getRequestListener(fetch, {
    hostname: config.host,
    errorHandler: (error) =>
      Response.json(
        (error as Error | undefined)?.name === 'RequestError'
          ? errorBody('bad_request', 'the request target or Host header is not valid')
          : errorBody('internal_error', 'internal error'),
        { status: (error as Error | undefined)?.name === 'RequestError' ? 400 : 500 },
      ),
  });
}
