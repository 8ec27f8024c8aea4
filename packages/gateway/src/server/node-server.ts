/**
 * The listening socket and the HTTP versions on it:
 * - plain: HTTP/1.1 (the default);
 * - plain with H2C: HTTP/1.1 and cleartext HTTP/2 with prior knowledge on the same port, told apart by the
 *   connection's first bytes (for proxies that speak h2 to their backends; browsers never use h2c);
 * - TLS_CERT/TLS_KEY: HTTPS with ALPN offering h2 and http/1.1 on the same port.
 * Request handling is the same listener for all of them, except that a cleartext connection whose first
 * bytes are a plain GET /events head can be taken over by the stream fast path before node:http sees it
 * (connection-router.ts). HTTP/2 sessions are tracked so shutdown can send GOAWAY once their streams have
 * drained.
 */
import { createServer as createHttp1Server, type Server as Http1Server, STATUS_CODES } from 'node:http';
import {
  createServer as createHttp2Server,
  createSecureServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2Session,
} from 'node:http2';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { type ConnectionRouter, createConnectionRouter } from './connection-router.js';
import { loadTlsFiles, type TlsFiles } from './tls-files.js';

type RequestListener = Parameters<typeof createHttp1Server>[1] & Parameters<typeof createSecureServer>[1];

export interface NodeServer {
  readonly scheme: 'http' | 'https';
  readonly port: number;
  /** What this port speaks, for the log: e.g. ['h2', 'http/1.1']. */
  readonly protocols: readonly string[];
  /** Stops accepting; resolves once every connection has closed. */
  close(): Promise<void>;
  /** Ends idle HTTP/1.1 keep-alive connections and sends GOAWAY to every HTTP/2 session. */
  closeIdle(): void;
  /** Re-reads TLS_CERT / TLS_KEY; new handshakes use them, open streams keep theirs. Throws if they are unusable. */
  reloadTls(): TlsFiles;
}

/** Node's default would keep idle keep-alive sockets (and thus shutdown) waiting; SSE does not need them. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/**
 * Pending connections the kernel queues before accept (capped by net.core.somaxconn). Node's 511 overflows
 * in a reconnect storm, and every dropped SYN costs the client a 1-3 s retransmit.
 */
const LISTEN_BACKLOG = 4096;

export interface NodeServerOptions {
  /**
   * Offered each cleartext connection's first bytes (see connection-router.ts); true when it took the
   * socket. Not used with TLS, where node's HTTP servers take every connection.
   */
  readonly takeStream?: (socket: Socket, firstBytes: Buffer) => boolean;
}

export async function startNodeServer(
  listener: RequestListener,
  config: Config,
  logger: Logger,
  options: NodeServerOptions = {},
): Promise<NodeServer> {
  const sessions = new Set<Http2Session>();
  const trackSessions = (server: Http2Server | Http2SecureServer) => {
    server.on('session', (session: Http2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      // A peer's protocol error ends its own session only.
      session.on('error', (error) => logger.debug({ err: error }, 'HTTP/2 session error'));
    });
  };
  const http2Settings = {
    maxConcurrentStreams: config.h2MaxConcurrentStreams,
    initialWindowSize: config.h2InitialWindowSize,
  };

  let acceptor: NetServer;
  let http1: Http1Server | Http2SecureServer;
  let scheme: 'http' | 'https' = 'http';
  let protocols: string[];
  let router: ConnectionRouter | undefined;
  if (config.tlsCert && config.tlsKey) {
    const files = loadTlsFiles(config.tlsCert, config.tlsKey);
    const secure = createSecureServer(
      { cert: files.cert, key: files.key, allowHTTP1: true, settings: http2Settings },
      listener,
    );
    trackSessions(secure);
    acceptor = secure;
    http1 = secure;
    scheme = 'https';
    protocols = ['h2', 'http/1.1'];
    logger.info({ subject: files.subject, validTo: files.validTo.toISOString() }, 'TLS certificate loaded');
  } else {
    const plain = createHttp1Server(
      {
        // Node's own answer to a missing Host has no body: let the adapter default it to our host instead.
        requireHostHeader: false,
      },
      listener,
    );
    http1 = plain;
    const cleartext = config.h2c ? createHttp2Server({ settings: http2Settings }, listener) : undefined;
    if (cleartext) trackSessions(cleartext);
    router = createConnectionRouter({
      http1: plain,
      ...(cleartext ? { http2: cleartext } : {}),
      ...(options.takeStream ? { takeStream: options.takeStream } : {}),
      silentTimeoutMs: config.headersTimeoutMs,
      onTakeError: (error) => logger.error({ err: error }, 'unhandled error taking a connection'),
    });
    const route = router.route;
    // Nagle off, as node:http sets it for its own connections: a stream's events must not wait for ACKs.
    acceptor = createNetServer({ noDelay: true }, route);
    protocols = cleartext ? ['h2c', 'http/1.1'] : ['http/1.1'];
  }
  configureHttp1(http1, config);
  answerParserErrorsWithJson(http1);

  await new Promise<void>((resolve, reject) => {
    acceptor.once('error', reject);
    acceptor.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG }, () => {
      acceptor.off('error', reject);
      resolve();
    });
  });
  // The h1 server behind the sniffing acceptor never listens itself: start its timeout checks (slowloris)
  // and connection tracking (closeIdleConnections) the way its own 'listening' would.
  if (acceptor !== http1) http1.emit('listening');
  const address = acceptor.address();
  const port = typeof address === 'object' && address ? address.port : config.port;

  return {
    scheme,
    port,
    protocols,
    close: () =>
      new Promise<void>((resolve) => {
        router?.close();
        acceptor.close(() => resolve());
        // The h1 server behind the sniffing acceptor holds its connections itself.
        if (acceptor !== http1) (http1 as Http1Server).close();
      }),
    closeIdle: () => {
      (http1 as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      for (const session of sessions) if (!session.closed) session.close();
    },
    reloadTls: () => {
      if (!(config.tlsCert && config.tlsKey) || !('setSecureContext' in acceptor)) {
        throw new Error('TLS is not configured (TLS_CERT / TLS_KEY)');
      }
      const files = loadTlsFiles(config.tlsCert, config.tlsKey);
      (acceptor as Http2SecureServer).setSecureContext({ cert: files.cert, key: files.key });
      return files;
    },
  };
}

/** Timeouts against slow clients (slowloris) on the HTTP/1.1 side; a stream's own lifetime is not limited. */
function configureHttp1(server: Http1Server | Http2SecureServer, config: Config): void {
  const settable = server as unknown as {
    headersTimeout: number;
    requestTimeout: number;
    keepAliveTimeout: number;
    connectionsCheckingInterval: number;
  };
  settable.headersTimeout = config.headersTimeoutMs;
  settable.requestTimeout = config.requestTimeoutMs;
  settable.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  settable.connectionsCheckingInterval = TIMEOUT_CHECK_INTERVAL_MS;
}

/** Requests Node's HTTP/1.1 parser refuses never reach hono: answer them with the same JSON error shape. */
function answerParserErrorsWithJson(server: Http1Server | Http2SecureServer): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
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
}
