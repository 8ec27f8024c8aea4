/**
 * Wires one gateway node: config -> engine -> hub -> app -> HTTP server, the operator's plane beside it
 * (admin listener, cluster view reports, control channel), and its graceful shutdown.
 */
import { getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import { createAdminApp, createAdminListenerApp } from './admin/admin-app.js';
import { type AdminServer, startAdminServer } from './admin/admin-server.js';
import { ControlChannel } from './admin/control-channel.js';
import { NodeReporter } from './admin/node-reporter.js';
import type { Config } from './config.js';
import { type ClaimStore, MemoryClaimStore } from './engine/claim-store.js';
import { type Engine, isCountingEngine } from './engine/engine.js';
import { createStorage } from './engine/index.js';
import { MemoryNodeDirectory, type NodeDirectory } from './engine/node-directory.js';
import { createApp } from './http/app.js';
import { createAccess } from './http/auth/create-access.js';
import { errorBody } from './http/errors.js';
import { Hub } from './hub/hub.js';
import { createLogger } from './logger.js';
import { createMetrics, type GatewayMetrics } from './metrics.js';
import { startNodeServer } from './server/node-server.js';

/**
 * The reconnect delay told to streams closed by a drain behind a balancer (DRAIN_DELAY_MS set), before
 * RETRY_JITTER; never more than RETRY_MS.
 */
const DRAINED_RECONNECT_MS = 250;

export interface Gateway {
  readonly config: Config;
  readonly engine: Engine;
  readonly hub: Hub;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The port actually bound (useful with PORT=0). */
  readonly port: number;
  readonly url: string;
  /** The admin listener's URL; undefined with ADMIN_PORT=public (then on `url`) or off. */
  readonly adminUrl: string | undefined;
  /** This node's name in the cluster view (NODE_ID). */
  readonly nodeId: string;
  /** Re-reads TLS_CERT / TLS_KEY for new connections; open streams stay. Throws (and keeps the old pair) if unusable. */
  reloadTls(): void;
  /** Sends a new reconnect hint to every client (with the configured jitter). */
  setRetry(retryMs: number): void;
  /** Readiness off, stop accepting, close streams spread over `drainMs` (default: config), stop the engine. */
  close(drainMs?: number): Promise<void>;
}

export interface GatewayOptions {
  readonly logger?: Logger;
  /** Replaces the engine chosen from config (tests); single-use claims and the cluster view then stay in this process. */
  readonly engine?: Engine;
  /** What the admin API's drain does; default: close() with its drainMs. run-node also exits afterwards. */
  readonly onDrainRequested?: (drainMs: number) => void;
  /** Socket writes per event-loop turn in a large fan-out (tests lower it to exercise slicing). */
  readonly fanOutSliceWrites?: number;
}

export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const { engine, claims, directory } = options.engine
    ? {
        engine: options.engine,
        claims: new MemoryClaimStore() as ClaimStore,
        directory: new MemoryNodeDirectory() as NodeDirectory,
      }
    : createStorage(config, logger);
  const metrics = createMetrics();
  const hub = new Hub({
    engine,
    logger,
    metrics,
    retryMs: config.retryMs,
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
    eventsReceived: () => hub.eventsReceived,
    engineReady: () => engine.isReady(),
    engineStats: () => (isCountingEngine(engine) ? engine.counters() : {}),
  });
  let gateway: Gateway | undefined;
  const control = new ControlChannel({
    engine,
    hub,
    nodeId: config.nodeId,
    logger,
    setRetry: (retryMs) => hub.broadcastRetry(retryMs, () => config.retryJitter * Math.random()),
  });
  hub.reservedSink = (publication) => control.onPublication(publication);
  await hub.start();
  control.start();
  const access = createAccess(config, claims, logger);
  // The URLs are known once the listeners are bound; the reporter reads them at every report.
  const urls: { url: string; adminUrl: string | undefined } = { url: '', adminUrl: undefined };
  const reporter = new NodeReporter({
    directory,
    hub,
    engine,
    metrics,
    logger,
    nodeId: config.nodeId,
    intervalMs: config.nodeReportMs,
    urls,
  });
  const adminDeps = {
    config,
    engine,
    hub,
    metrics,
    access,
    directory,
    reporter,
    control,
    logger,
    drain: (drainMs: number) => {
      if (options.onDrainRequested) options.onDrainRequested(drainMs);
      else void gateway?.close(drainMs);
    },
  };
  const { app, fastPath } = createApp({
    config,
    engine,
    claims,
    hub,
    metrics,
    logger,
    access,
    ...(config.adminPort === 'public' ? { admin: createAdminApp(adminDeps) } : {}),
  });

  const honoListener = requestListener(app.fetch, config);
  // GET /events skips hono (routing, its Request wrapper, middleware); everything else goes through it.
  const listener: typeof honoListener = async (incoming, outgoing) => {
    if (!fastPath.serveNode(incoming, outgoing)) await honoListener(incoming, outgoing);
  };
  const server = await startNodeServer(listener, config, logger, {
    // A plain GET /events on a fresh cleartext connection: served on the socket, node:http never sees it.
    takeStream: fastPath.serveSocket,
  });
  const port = server.port;
  const url = `${server.scheme}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  let admin: AdminServer | undefined;
  if (typeof config.adminPort === 'number') {
    admin = await startAdminServer(createAdminListenerApp(adminDeps), config.adminHost, config.adminPort).catch(
      async (error: unknown) => {
        await server.close();
        await hub.close();
        await engine.close();
        throw error;
      },
    );
  }
  urls.url = url;
  urls.adminUrl = config.adminPort === 'public' ? url : admin?.url;
  reporter.start();
  logger.info(
    { url, adminUrl: urls.adminUrl, node: config.nodeId, protocols: server.protocols, engine: engine.kind },
    'gateway listening',
  );

  let closing: Promise<void> | undefined;
  gateway = {
    config,
    engine,
    hub,
    metrics,
    logger,
    port,
    url,
    adminUrl: admin?.url,
    nodeId: config.nodeId,
    reloadTls() {
      const files = server.reloadTls();
      logger.info({ subject: files.subject, validTo: files.validTo.toISOString() }, 'TLS certificate reloaded');
    },
    setRetry(retryMs) {
      hub.broadcastRetry(retryMs, () => config.retryJitter * Math.random());
    },
    close(drainMs = config.drainMs) {
      closing ??= (async () => {
        if (config.drainDelayMs > 0) {
          // The balancer sees /readyz at 503 and stops sending clients here before any stream is closed, so
          // reconnects go straight to the other nodes instead of to a port that is closing.
          hub.announceLeaving();
          logger.info({ drainDelayMs: config.drainDelayMs }, 'readiness off; serving until the drain starts');
          await reporter.reportNow();
          await new Promise((resolve) => setTimeout(resolve, config.drainDelayMs));
        }
        const serverClosed = server.close();
        // Behind a balancer that has taken the node out (DRAIN_DELAY_MS), a closed stream's reconnect goes
        // to another node: it need not wait RETRY_MS, as the drain's spread over DRAIN_MS paces them already.
        const drained = hub.drain(
          drainMs,
          config.drainDelayMs > 0
            ? () => Math.min(hub.retryMs, DRAINED_RECONNECT_MS * (1 + config.retryJitter * Math.random()))
            : undefined,
        );
        // The cluster view shows the node as draining while its streams leave.
        await reporter.reportNow();
        await drained;
        await hub.close();
        // Streams are closed: idle HTTP/1.1 connections end, HTTP/2 sessions get GOAWAY.
        server.closeIdle();
        await serverClosed;
        await reporter.stop();
        control.stop();
        await admin?.close();
        await engine.close();
      })();
      return closing;
    },
  };
  return gateway;
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
