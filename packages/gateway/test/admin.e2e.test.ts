/// <reference types="node" />
/**
 * THE OPERATOR'S PLANE over real HTTP: the private admin listener (and ADMIN_PORT=public/off), who may use
 * the admin API (ADMIN_TOKEN, a JWT admin grant, open mode), and each action as a client sees it: a new
 * retry hint on open and new streams, streams of a topic or of a subject closed with `gateway.closed`
 * first, a test publish, a drain without a signal. The cluster-wide side runs on Redis in cluster-view.e2e.
 */
import { SignJWT } from 'jose';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import {
  closeAllCollectors,
  closeAllRawStreams,
  collect,
  eventsUrl,
  getJson,
  publish,
  rawStream,
  startTestGateway,
  stats,
  type TestGateway,
} from './support/gateway.js';
import { closeAllReplies, send } from './support/http-request.js';
import { waitFor } from './support/wait.js';

const SECRET = 'admin-e2e-secret-0123456789-abcdefghijklmn';
const ADMIN_TOKEN = 'admin-token-0123456789-abcdefghij';
const CLOSED = 'gateway.closed';

const started: TestGateway[] = [];
async function gatewayWith(overrides: Partial<Config> = {}): Promise<TestGateway> {
  const gateway = await startTestGateway({ nodeReportMs: 200, ...overrides });
  started.push(gateway);
  return gateway;
}

afterEach(() => {
  closeAllCollectors();
  closeAllRawStreams();
  closeAllReplies();
});
afterAll(async () => {
  await Promise.all(started.map((gateway) => gateway.close()));
});

async function token(claims: Record<string, unknown>, sub?: string): Promise<string> {
  const jwt = new SignJWT({ sse: claims }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h');
  if (sub) jwt.setSubject(sub);
  return jwt.sign(new TextEncoder().encode(SECRET));
}

/** POSTs a JSON action to the admin API. */
function act(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  return getJson<{ error?: { code: string; message: string }; [key: string]: unknown }>(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

describe('the admin listener', () => {
  it('serves /metrics, /stats and the dashboard on ADMIN_PORT, and none of them on the public port', async () => {
    const gateway = await gatewayWith();
    expect(gateway.adminUrl).not.toBe(gateway.url);
    for (const path of ['/metrics', '/stats', '/dashboard', '/admin/stream']) {
      const response = await getJson(`${gateway.url}${path}`);
      expect(response.status, path).toBe(404);
      expect((response.body as { error: { code: string } }).error.code).toBe('not_found');
    }
    const metrics = await fetch(`${gateway.adminUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('sse_gateway_connections');
    const dashboard = await fetch(`${gateway.adminUrl}/dashboard`);
    expect(dashboard.headers.get('content-type')).toContain('text/html');
    expect(dashboard.headers.get('content-security-policy')).toContain("connect-src 'self'");
    expect(dashboard.headers.get('x-frame-options')).toBe('DENY');
    expect(await dashboard.text()).toContain('<title>sse-gateway dashboard</title>');
    const unknown = await getJson(`${gateway.adminUrl}/nope`);
    expect(unknown.status).toBe(404);
    expect(await getJson(`${gateway.adminUrl}/healthz`)).toMatchObject({ status: 200, body: { status: 'ok' } });
  });

  it('answers /stats with this node and the cluster view (one node on the embedded engine)', async () => {
    const gateway = await gatewayWith();
    const a = collect(eventsUrl(gateway.url, 'stats/a'));
    const b = collect(eventsUrl(gateway.url, ['stats/a', 'stats/b']));
    await Promise.all([a.waitForOpen(), b.waitForOpen()]);
    const seen = await waitFor(
      async () => {
        const body = await stats(gateway.adminUrl, ['stats/a', 'stats/b']);
        return (body as unknown as ClusterStats).cluster.connections === 2
          ? (body as unknown as ClusterStats)
          : undefined;
      },
      { what: 'the cluster view counting both streams' },
    );
    expect(seen).toMatchObject({
      node: gateway.gateway.nodeId,
      connections: 2,
      topics: 2,
      consumers: { 'stats/a': 2, 'stats/b': 1 },
      cluster: {
        connections: 2,
        consumers: {
          'stats/a': { total: 2, nodes: { [gateway.gateway.nodeId]: 2 } },
          'stats/b': { total: 1, nodes: { [gateway.gateway.nodeId]: 1 } },
        },
        busiestTopics: [
          { topic: 'stats/a', consumers: 2 },
          { topic: 'stats/b', consumers: 1 },
        ],
      },
    });
    expect(seen.cluster.nodes).toHaveLength(1);
    expect(seen.cluster.nodes[0]).toMatchObject({
      id: gateway.gateway.nodeId,
      url: gateway.url,
      adminUrl: gateway.adminUrl,
      pid: process.pid,
      draining: false,
      engineReady: true,
    });
    const invalid = await getJson(`${gateway.adminUrl}/stats?topic=${encodeURIComponent('bad topic')}`);
    expect(invalid.status).toBe(400);
  });

  it('on loopback, refuses requests naming another host (DNS rebinding), with a JSON 403', async () => {
    const gateway = await gatewayWith();
    const { port } = new URL(gateway.adminUrl);
    const reply = await send('GET', `http://127.0.0.1:${port}/stats`, { headers: { host: 'evil.example:8081' } });
    expect(reply.status).toBe(403);
    expect(JSON.parse(reply.text)).toMatchObject({ error: { code: 'host_not_allowed' } });
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, 'localhost']) {
      expect((await send('GET', `http://127.0.0.1:${port}/stats`, { headers: { host } })).status, host).toBe(200);
    }
  });

  it('ADMIN_PORT=public serves the admin routes on the public port; off serves them nowhere', async () => {
    const onPublic = await gatewayWith({ adminPort: 'public' });
    expect(onPublic.gateway.adminUrl).toBeUndefined();
    expect((await fetch(`${onPublic.url}/metrics`)).status).toBe(200);
    expect((await getJson(`${onPublic.url}/stats`)).status).toBe(200);
    expect((await act(onPublic.url, '/admin/retry', { retryMs: 1500 })).status).toBe(200);
    const off = await gatewayWith({ adminPort: 'off' });
    expect(off.gateway.adminUrl).toBeUndefined();
    expect((await getJson(`${off.url}/stats`)).status).toBe(404);
  });
});

describe('who may use the admin API', () => {
  it('open mode without ADMIN_TOKEN: anyone who reaches the admin port', async () => {
    const gateway = await gatewayWith();
    expect((await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 })).status).toBe(200);
  });

  it('with ADMIN_TOKEN: that bearer token only (401 without it or with another one)', async () => {
    const gateway = await gatewayWith({ adminToken: ADMIN_TOKEN });
    const none = await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 });
    expect(none.status).toBe(401);
    expect(none.body.error?.code).toBe('unauthorized');
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    const wrong = await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 }, { authorization: 'Bearer nope' });
    expect(wrong.status).toBe(401);
    const right = await act(
      gateway.adminUrl,
      '/admin/retry',
      { retryMs: 2000 },
      { authorization: `Bearer ${ADMIN_TOKEN}` },
    );
    expect(right.status).toBe(200);
    // Reads stay open on the private listener.
    expect((await getJson(`${gateway.adminUrl}/stats`)).status).toBe(200);
  });

  it('with auth keys: a JWT with {"sse":{"admin":true}} (403 for one without the grant), or ADMIN_TOKEN', async () => {
    const gateway = await gatewayWith({ authJwtSecret: SECRET, adminToken: ADMIN_TOKEN });
    expect((await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 })).status).toBe(401);
    const reader = await token({ subscribe: ['**'], publish: ['**'] }, 'alice');
    const refused = await act(
      gateway.adminUrl,
      '/admin/retry',
      { retryMs: 2000 },
      { authorization: `Bearer ${reader}` },
    );
    expect(refused.status).toBe(403);
    expect(refused.body.error?.code).toBe('forbidden');
    const admin = await token({ admin: true }, 'ops');
    expect(
      (await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 }, { authorization: `Bearer ${admin}` })).status,
    ).toBe(200);
    expect(
      (await act(gateway.adminUrl, '/admin/retry', { retryMs: 2000 }, { authorization: `Bearer ${ADMIN_TOKEN}` }))
        .status,
    ).toBe(200);
  });

  it('checks the caller before the body, and the body is JSON (415), with clear 4xx errors', async () => {
    const gateway = await gatewayWith({ authJwtSecret: SECRET });
    // An anonymous caller learns nothing about what would pass.
    const anonymous = await getJson(`${gateway.adminUrl}/admin/retry`, { method: 'POST', body: 'not json' });
    expect(anonymous.status).toBe(401);
    const admin = { authorization: `Bearer ${await token({ admin: true }, 'ops')}` };
    const plain = await getJson(`${gateway.adminUrl}/admin/retry`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'text/plain' },
      body: '{"retryMs":1000}',
    });
    expect(plain.status).toBe(415);
    const cases: Array<[string, unknown, string]> = [
      ['/admin/retry', { retryMs: 5 }, 'invalid_retry'],
      ['/admin/retry', { retryMs: '1000' }, 'invalid_retry'],
      ['/admin/close', {}, 'invalid_body'],
      ['/admin/close', { topic: 'a', subject: 'b' }, 'invalid_body'],
      ['/admin/close', { topic: 'bad topic' }, 'invalid_topic'],
      ['/admin/close', { subject: '' }, 'invalid_subject'],
      ['/admin/drain', { drainMs: -1 }, 'invalid_drain'],
      ['/admin/publish', { data: 'no topic' }, 'invalid_topic'],
      ['/admin/publish', [1, 2], 'invalid_body'],
    ];
    for (const [path, body, code] of cases) {
      const reply = await act(gateway.adminUrl, path, body, admin);
      expect(reply.status, `${path} ${JSON.stringify(body)}`).toBe(400);
      expect(reply.body.error?.code, `${path} ${JSON.stringify(body)}`).toBe(code);
    }
    const broken = await getJson(`${gateway.adminUrl}/admin/close`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: '{"topic":',
    });
    expect(broken).toMatchObject({ status: 400, body: { error: { code: 'invalid_json' } } });
    const wrongMethod = await getJson(`${gateway.adminUrl}/admin/close`);
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
  });
});

describe('admin actions as clients see them', () => {
  it('a new retry hint reaches open streams and new ones', async () => {
    const gateway = await gatewayWith({ retryMs: 1000 });
    const before = await rawStream(eventsUrl(gateway.url, 'retry/a'));
    await waitFor(() => before.text.includes('retry: 1000'), { what: 'the first retry hint' });
    expect((await act(gateway.adminUrl, '/admin/retry', { retryMs: 4321 })).body).toMatchObject({
      status: 'sent',
      retryMs: 4321,
    });
    await waitFor(() => before.text.includes('retry: 4321'), { what: 'the new hint on the open stream' });
    const after = await rawStream(eventsUrl(gateway.url, 'retry/a'));
    await waitFor(() => after.text.includes('retry: 4321'), { what: 'the new hint on a new stream' });
    expect(after.text).not.toContain('retry: 1000');
  });

  it('closing a topic ends its streams with gateway.closed first; other topics stay', async () => {
    const gateway = await gatewayWith();
    const doomed = await rawStream(eventsUrl(gateway.url, 'close/doomed'));
    const both = collect(eventsUrl(gateway.url, ['close/doomed', 'close/kept']), { events: [CLOSED] });
    const kept = collect(eventsUrl(gateway.url, 'close/kept'), { events: [CLOSED] });
    await Promise.all([both.waitForOpen(), kept.waitForOpen()]);
    await waitFor(() => doomed.text.includes('retry:'), { what: 'the doomed stream open' });
    const reply = await act(gateway.adminUrl, '/admin/close', { topic: 'close/doomed' });
    expect(reply.body).toMatchObject({ status: 'sent', scope: 'cluster', topic: 'close/doomed' });
    await doomed.finished;
    expect(doomed.ended).toBe(true);
    expect(doomed.text).toContain(`event: ${CLOSED}\ndata: {"reason":"closed-by-operator","scope":"topic"}\n\n`);
    await waitFor(() => both.events.some((event) => event.event === CLOSED), { what: 'gateway.closed on both' });
    // The stream of the kept topic alone still gets events.
    await publish(gateway.url, { topic: 'close/kept', data: 'still here' });
    await kept.waitForCount(1);
    expect(kept.events).toEqual([expect.objectContaining({ event: 'message', data: 'still here' })]);
    await waitFor(async () => (await stats(gateway.adminUrl, ['close/doomed'])).consumers['close/doomed'] === 0, {
      what: 'no consumer of the closed topic',
    });
  });

  it('closing a subject ends the streams of that token subject only', async () => {
    const gateway = await gatewayWith({ authJwtSecret: SECRET, publicTopics: [] });
    const subscribe = async (sub: string) =>
      rawStream(eventsUrl(gateway.url, 'subject/news'), {
        authorization: `Bearer ${await token({ subscribe: ['subject/**'] }, sub)}`,
      });
    const mallory = [await subscribe('mallory'), await subscribe('mallory')];
    const alice = await subscribe('alice');
    for (const stream of [...mallory, alice]) {
      expect(stream.status).toBe(200);
      await waitFor(() => stream.text.includes('retry:'), { what: 'stream open' });
    }
    const admin = { authorization: `Bearer ${await token({ admin: true }, 'ops')}` };
    expect((await act(gateway.adminUrl, '/admin/close', { subject: 'mallory' }, admin)).status).toBe(200);
    await Promise.all(mallory.map((stream) => stream.finished));
    for (const stream of mallory) {
      expect(stream.text).toContain(`event: ${CLOSED}\ndata: {"reason":"closed-by-operator","scope":"subject"}\n\n`);
    }
    expect(alice.ended).toBe(false);
    expect(alice.text).not.toContain(CLOSED);
  });

  it('publishes a test event through the engine', async () => {
    const gateway = await gatewayWith();
    const listener = collect(eventsUrl(gateway.url, 'admin/test'), { events: ['ping'] });
    await listener.waitForOpen();
    const reply = await act(gateway.adminUrl, '/admin/publish', { topic: 'admin/test', event: 'ping', data: 'hello' });
    expect(reply.status).toBe(200);
    expect(reply.body).toMatchObject({ status: 'published', topic: 'admin/test' });
    await listener.waitForCount(1);
    expect(listener.events[0]).toMatchObject({ event: 'ping', data: 'hello', id: reply.body.id });
  });

  it('drains the node without a signal: streams end and readiness goes off', async () => {
    const gateway = await startTestGateway({ drainMs: 300 });
    const stream = await rawStream(eventsUrl(gateway.url, 'drain/a'));
    await waitFor(() => stream.text.includes('retry:'), { what: 'stream open' });
    const reply = await act(gateway.adminUrl, '/admin/drain', { drainMs: 300 });
    expect(reply.status).toBe(202);
    expect(reply.body).toMatchObject({ status: 'draining', scope: 'node', drainMs: 300 });
    await stream.finished;
    expect(stream.ended).toBe(true);
    await waitFor(async () => (await fetch(`${gateway.url}/readyz`).catch(() => undefined))?.status !== 200, {
      what: 'readiness off',
    });
  });
});

interface ClusterStats {
  readonly cluster: {
    readonly connections: number;
    readonly nodes: ReadonlyArray<Record<string, unknown>>;
  };
}
