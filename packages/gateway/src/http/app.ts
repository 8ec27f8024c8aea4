/**
 * THE EDGE: hono routes, CORS, body limits, and every error mapped to `{ "error": { code, message } }` once;
 * GET /events also has a fast path in front of hono (events-fast-path.ts) running the same route code.
 */
import type { HttpBindings } from '@hono/node-server';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ClaimStore } from '../engine/claim-store.js';
import type { Engine } from '../engine/engine.js';
import type { Hub } from '../hub/hub.js';
import type { GatewayMetrics } from '../metrics.js';
import type { Access } from './auth/access.js';
import { createAccess } from './auth/create-access.js';
import { ConnectionLimits } from './connection-limits.js';
import { Cors } from './cors.js';
import { DEMO_PAGE } from './demo-page.js';
import { errorBody, GatewayError } from './errors.js';
import { createEventsFastPath, type EventsFastPath } from './events-fast-path.js';
import { createEventsRoute } from './events-route.js';
import { createPublishRoute } from './publish-route.js';
import { requestHeader } from './request-header.js';
import { viewOfContext } from './request-view.js';
import { SECURITY_HEADERS } from './security-headers.js';
import { parseTicketTopics } from './subscribe-request.js';

export interface AppDeps {
  readonly config: Config;
  readonly engine: Engine;
  /** Single-use ticket claims. */
  readonly claims: ClaimStore;
  readonly hub: Hub;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly random?: () => number;
  /** Replaces the access policy built from config (tests). */
  readonly access?: Access;
  /** The operator's routes, mounted here when ADMIN_PORT=public. */
  readonly admin?: Hono;
}

type Env = { Bindings: HttpBindings };

const DEMO_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

export interface GatewayApp {
  readonly app: Hono<Env>;
  /** Serves GET /events before hono sees it. */
  readonly fastPath: EventsFastPath;
}

export function createApp(deps: AppDeps): GatewayApp {
  const { config, engine, hub, metrics } = deps;
  const log = deps.logger.child({ mod: 'http' });
  const cors = new Cors(config);
  const access = deps.access ?? createAccess(config, deps.claims, deps.logger);
  const limits = new ConnectionLimits(config);
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const origin = requestHeader(c, 'origin');
    if (c.req.method === 'OPTIONS') {
      if (!origin || !cors.isAllowed(origin)) {
        throw new GatewayError(403, 'origin_not_allowed', 'this origin is not allowed by CORS_ORIGINS');
      }
      return c.body(null, 204, cors.preflightHeaders(origin, requestHeader(c, 'access-control-request-headers')));
    }
    await next();
    for (const [name, value] of Object.entries(cors.responseHeaders(origin))) c.header(name, value);
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.header(name, value);
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', (c) => {
    if (hub.draining) return c.json({ status: 'draining' }, 503);
    if (!engine.isReady()) return c.json({ status: 'engine-unavailable', engine: engine.kind }, 503);
    return c.json({ status: 'ready', engine: engine.kind });
  });
  // ADMIN_PORT=public: /metrics, /stats, the dashboard and the admin API on this port too.
  if (deps.admin) app.route('/', deps.admin);
  if (config.demoPage) {
    app.get('/demo', (c) => {
      // Its own inline script and style, and requests to this origin only.
      c.header('Content-Security-Policy', DEMO_CSP);
      return c.html(DEMO_PAGE);
    });
  }
  const events = createEventsRoute({
    config,
    hub,
    engine,
    cors,
    access,
    limits,
    logger: deps.logger,
    random: deps.random ?? Math.random,
    onPacedRefusal: (code) => metrics.rejectedRequests.inc({ code }),
  });
  app.get('/events', events.route);
  app.post(
    '/publish',
    bodyLimit({
      maxSize: config.maxBodyBytes,
      onError: () => {
        throw new GatewayError(413, 'body_too_large', `the request body is larger than ${config.maxBodyBytes} bytes`);
      },
    }),
    createPublishRoute({ config, engine, metrics, access, logger: deps.logger }),
  );
  app.post('/tickets', async (c) => {
    const { ticket, expiresAt } = await access.mintTicket(viewOfContext(c), async () =>
      parseTicketTopics(await c.req.text(), config.maxTopicsPerConnection),
    );
    c.header('Cache-Control', 'no-store');
    return c.json({ ticket, expiresAt: new Date(expiresAt).toISOString() });
  });

  const routes: Record<string, string> = {
    '/healthz': 'GET',
    '/readyz': 'GET',
    '/events': 'GET',
    '/publish': 'POST',
    '/tickets': 'POST',
    ...(config.demoPage ? { '/demo': 'GET' } : {}),
  };
  for (const [path, method] of Object.entries(routes)) {
    app.all(path, (c) => {
      throw new GatewayError(405, 'method_not_allowed', `${c.req.method} is not allowed on ${path}; use ${method}`, {
        Allow: `${method}, OPTIONS`,
      });
    });
  }

  app.notFound((c) => {
    metrics.rejectedRequests.inc({ code: 'not_found' });
    return c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404);
  });

  app.onError((error, c) => {
    if (error instanceof GatewayError) {
      metrics.rejectedRequests.inc({ code: error.code });
      return c.json(errorBody(error.code, error.message), error.status, error.headers);
    }
    if (error instanceof HTTPException) {
      const status = error.status;
      metrics.rejectedRequests.inc({ code: 'bad_request' });
      return c.json(errorBody('bad_request', error.message || 'bad request'), status);
    }
    // The client went away mid-request (or was cut off by REQUEST_TIMEOUT_MS): nobody to answer, nothing wrong here.
    if ((error as NodeJS.ErrnoException).code === 'ECONNRESET' || c.env.incoming?.destroyed) {
      log.debug({ path: c.req.path }, 'client closed the request');
      return c.json(errorBody('client_closed', 'the client closed the request'), 400);
    }
    log.error({ err: error, path: c.req.path }, 'unhandled error');
    return c.json(errorBody('internal_error', 'internal error'), 500);
  });

  return { app, fastPath: createEventsFastPath({ events, cors, metrics, logger: deps.logger }) };
}
