/**
 * THE OPERATOR'S PLANE, served on the private admin listener (ADMIN_PORT) or, with ADMIN_PORT=public, on
 * the public port: metrics, stats (this node and the cluster), the live dashboard and its stream, and the
 * admin API. Reads are open to whoever reaches the listener (keep it private); every action needs the
 * admin credential once the gateway has keys or an ADMIN_TOKEN, and is logged once with who asked.
 */
import { formatPosition, topicProblem } from '@sse-gateway/publisher-sdk/protocol';
import { type Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { NodeDirectory } from '../engine/node-directory.js';
import { type Access, requireJsonBody } from '../http/auth/access.js';
import { errorBody, GatewayError } from '../http/errors.js';
import { parsePublishBody } from '../http/publish-request.js';
import { viewOfContext } from '../http/request-view.js';
import { SECURITY_HEADERS } from '../http/security-headers.js';
import type { Hub } from '../hub/hub.js';
import type { GatewayMetrics } from '../metrics.js';
import type { ControlChannel } from './control-channel.js';
import { DASHBOARD_CSP, DASHBOARD_PAGE } from './dashboard-page.js';
import type { NodeReporter } from './node-reporter.js';
import { nodeCounters, stats } from './stats.js';

export interface AdminDeps {
  readonly config: Config;
  readonly engine: Engine;
  readonly hub: Hub;
  readonly metrics: GatewayMetrics;
  readonly access: Access;
  readonly directory: NodeDirectory;
  readonly reporter: NodeReporter;
  readonly control: ControlChannel;
  readonly logger: Logger;
  /** Drains this node and stops it (what SIGTERM does). */
  readonly drain: (drainMs: number) => void;
}

/** Longest and shortest retry hint an operator may set, in ms. */
const MAX_RETRY_MS = 10 * 60 * 1000;
const MIN_RETRY_MS = 100;
/** Interval of the dashboard stream's frames. */
const STREAM_INTERVAL_MS = 1000;
/** Largest admin request body, in bytes. */
const MAX_ADMIN_BODY_BYTES = 64 * 1024;

export function createAdminApp(deps: AdminDeps): Hono {
  const { config, hub, metrics, access, control } = deps;
  const log = deps.logger.child({ mod: 'admin' });
  const app = new Hono();
  const statsDeps = { hub, reporter: deps.reporter, directory: deps.directory };

  app.use('*', async (c, next) => {
    await next();
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.header(name, value);
    c.header('Cache-Control', 'no-store');
  });

  app.get('/metrics', async (c) => {
    c.header('Content-Type', metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });
  app.get('/stats', async (c) => c.json(await stats(statsDeps, topicsOf(c))));
  app.get('/dashboard', (c) => {
    c.header('Content-Security-Policy', DASHBOARD_CSP);
    return c.html(DASHBOARD_PAGE);
  });
  app.get('/admin/stream', (c) =>
    streamSSE(c, async (stream) => {
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      while (open) {
        const frame = { at: Date.now(), ...(await stats(statsDeps, [])), counters: await nodeCounters(metrics) };
        await stream.writeSSE({ event: 'stats', data: JSON.stringify(frame) });
        await stream.sleep(STREAM_INTERVAL_MS);
      }
    }),
  );

  /** Checks the caller, then reads the JSON body: an anonymous caller learns nothing from validation. */
  const action = async (c: Context) => {
    const by = await access.authenticateAdmin(viewOfContext(c), config.adminToken);
    requireJsonBody(viewOfContext(c));
    const text = await c.req.text();
    if (Buffer.byteLength(text) > MAX_ADMIN_BODY_BYTES) {
      throw new GatewayError(413, 'body_too_large', `the request body is larger than ${MAX_ADMIN_BODY_BYTES} bytes`);
    }
    let body: unknown;
    try {
      body = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      throw new GatewayError(400, 'invalid_json', 'the request body is not valid JSON');
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw new GatewayError(400, 'invalid_body', 'the request body must be a JSON object');
    }
    return { by, body: body as Record<string, unknown>, text };
  };

  app.post('/admin/retry', async (c) => {
    const { by, body } = await action(c);
    const retryMs = body.retryMs;
    if (!Number.isInteger(retryMs) || (retryMs as number) < MIN_RETRY_MS || (retryMs as number) > MAX_RETRY_MS) {
      throw new GatewayError(
        400,
        'invalid_retry',
        `retryMs must be a whole number of milliseconds from ${MIN_RETRY_MS} to ${MAX_RETRY_MS}`,
      );
    }
    await sendOrFail(() => control.send({ kind: 'retry', retryMs: retryMs as number }, by));
    log.info({ by, action: 'retry', retryMs }, 'admin action');
    return c.json({ status: 'sent', scope: 'cluster', retryMs });
  });

  app.post('/admin/close', async (c) => {
    const { by, body } = await action(c);
    const { topic, subject } = body;
    if ((topic === undefined) === (subject === undefined)) {
      throw new GatewayError(400, 'invalid_body', 'give exactly one of "topic" or "subject"');
    }
    if (topic !== undefined) {
      const problem = topicProblem(topic);
      if (problem) throw new GatewayError(400, 'invalid_topic', problem);
      await sendOrFail(() => control.send({ kind: 'close-topic', topic: topic as string }, by));
      log.info({ by, action: 'close-topic', topic }, 'admin action');
      return c.json({ status: 'sent', scope: 'cluster', topic });
    }
    if (typeof subject !== 'string' || subject.length === 0 || subject.length > 1024) {
      throw new GatewayError(400, 'invalid_subject', 'subject must be a non-empty string (a token sub)');
    }
    await sendOrFail(() => control.send({ kind: 'close-subject', subject }, by));
    log.info({ by, action: 'close-subject', subject }, 'admin action');
    return c.json({ status: 'sent', scope: 'cluster', subject });
  });

  app.post('/admin/drain', async (c) => {
    const { by, body } = await action(c);
    const drainMs = body.drainMs ?? config.drainMs;
    if (!Number.isInteger(drainMs) || (drainMs as number) < 0 || (drainMs as number) > 10 * 60 * 1000) {
      throw new GatewayError(400, 'invalid_drain', 'drainMs must be a whole number of milliseconds up to 600000');
    }
    if (hub.draining) throw new GatewayError(409, 'already_draining', 'this node is draining already');
    log.info({ by, action: 'drain', drainMs }, 'admin action');
    deps.drain(drainMs as number);
    return c.json({ status: 'draining', scope: 'node', node: config.nodeId, drainMs }, 202);
  });

  app.post('/admin/publish', async (c) => {
    const { by, text } = await action(c);
    const parsed = parsePublishBody(text, config);
    if (parsed.batch) throw new GatewayError(400, 'invalid_body', 'the admin API publishes one event at a time');
    if (!deps.engine.isReady()) {
      throw new GatewayError(503, 'engine_unavailable', 'the event store is unreachable; nothing was stored');
    }
    const event = parsed.events[0];
    if (!event) throw new GatewayError(400, 'invalid_body', 'no event to publish');
    const [position] = await sendOrFail(() => deps.engine.publish([event]));
    metrics.eventsPublished.inc();
    const id = position ? formatPosition(position) : undefined;
    log.info({ by, action: 'publish', topic: event.topic, event: event.event, id }, 'admin action');
    return c.json({ status: 'published', topic: event.topic, id });
  });

  const routes: Record<string, string> = {
    '/metrics': 'GET',
    '/stats': 'GET',
    '/dashboard': 'GET',
    '/admin/stream': 'GET',
    '/admin/retry': 'POST',
    '/admin/close': 'POST',
    '/admin/drain': 'POST',
    '/admin/publish': 'POST',
  };
  for (const [path, method] of Object.entries(routes)) {
    app.all(path, (c) => {
      throw new GatewayError(405, 'method_not_allowed', `${c.req.method} is not allowed on ${path}; use ${method}`, {
        Allow: method,
      });
    });
  }
  app.onError((error, c) => {
    if (error instanceof GatewayError) return c.json(errorBody(error.code, error.message), error.status, error.headers);
    log.error({ err: error, path: c.req.path }, 'unhandled admin error');
    return c.json(errorBody('internal_error', 'internal error'), 500);
  });
  return app;
}

/** The admin app alone on its listener: also answers /, /healthz and unknown paths. */
export function createAdminListenerApp(deps: AdminDeps): Hono {
  const app = new Hono();
  if (isLoopback(deps.config.adminHost)) {
    // A listener on loopback serves this machine only. A web page the operator opens could still reach it
    // by rebinding its own host name to 127.0.0.1 (DNS rebinding) and read /stats as same-origin: only
    // requests naming a loopback host are served.
    app.use('*', async (c, next) => {
      const host = (c.req.header('host') ?? '').toLowerCase();
      if (!LOOPBACK_HOST.test(host)) {
        return c.json(
          errorBody(
            'host_not_allowed',
            'the admin listener on loopback only serves requests for localhost or 127.0.0.1',
          ),
          403,
        );
      }
      await next();
    });
  }
  app.get('/', (c) => c.redirect('/dashboard'));
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.route('/', createAdminApp(deps));
  app.notFound((c) => c.json(errorBody('not_found', `no admin route for ${c.req.method} ${c.req.path}`), 404));
  return app;
}

/** `localhost`, `127.x.y.z` or `[::1]`, with or without a port. */
const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$/;

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

function topicsOf(c: Context): string[] {
  const topics = c.req.queries('topic') ?? [];
  for (const topic of topics) {
    const problem = topicProblem(topic);
    if (problem) throw new GatewayError(400, 'invalid_topic', problem);
  }
  return topics;
}

/** An engine failure during an action: nothing was applied, say so (the caller may retry). */
async function sendOrFail<T>(send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch {
    throw new GatewayError(503, 'engine_unavailable', 'the event store did not take the action; retry shortly', {
      'Retry-After': '1',
    });
  }
}
