/// <reference types="node" />
/**
 * Every limit answers with its documented status and JSON error (and Retry-After where the client should
 * come back), and a normal subscriber connected meanwhile keeps receiving events: streams per node, per
 * client (IP address, or token subject), new streams per second, topics per stream, topic and event
 * names, payload, batch and body sizes, and slowloris clients; while a long stream outlives
 * REQUEST_TIMEOUT_MS.
 */
import { connect } from 'node:net';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import {
  type Collector,
  closeAllCollectors,
  collect,
  eventsUrl,
  metric,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { closeAllReplies, expectError, type Reply, send } from './support/http-request.js';
import { waitFor } from './support/wait.js';

const SECRET = 'limits-e2e-secret-0123456789-abcdefghijklm';

function subscribe(base: string, topics: string | readonly string[], headers: Record<string, string> = {}) {
  return send('GET', eventsUrl(base, topics), { headers: { accept: 'text/event-stream', ...headers } });
}

function publishBody(base: string, body: unknown, headers: Record<string, string> = {}) {
  return send('POST', new URL('/publish', base).href, {
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

async function expectStream(reply: Reply): Promise<void> {
  expect(reply.status, `a stream was expected, got ${reply.status} ${reply.text}`).toBe(200);
  await waitFor(() => reply.text.includes('retry:'), { what: 'the retry hint' });
}

/** Retries `attempt` until it returns a stream (the client honours Retry-After / waits for a release). */
async function eventuallyAdmitted(attempt: () => Promise<Reply>, what: string): Promise<Reply> {
  return waitFor(
    async () => {
      const reply = await attempt();
      if (reply.status === 200) return reply;
      return undefined;
    },
    { what, intervalMs: 100, timeoutMs: 30_000 },
  );
}

const token = (sub: string, subscribe: readonly string[] = ['**']) =>
  new SignJWT({ sub, sse: { subscribe, publish: ['**'] } })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(new TextEncoder().encode(SECRET));

const started: TestGateway[] = [];

async function gatewayWith(overrides: Partial<Config>): Promise<TestGateway> {
  const gateway = await startTestGateway(overrides);
  started.push(gateway);
  return gateway;
}

/** A subscriber of `topic` opened before the limit is hit; `check` proves it still gets new events. */
async function witness(gateway: TestGateway, topic: string, headers: Record<string, string> = {}) {
  const client: Collector = collect(eventsUrl(gateway.url, topic), { headers });
  await client.waitForOpen();
  let sent = 0;
  const publishHeaders: Record<string, string> = gateway.gateway.config.authJwtSecret
    ? { authorization: `Bearer ${await token('publisher')}` }
    : {};
  return {
    client,
    async check(): Promise<void> {
      const data = `alive-${sent++}`;
      const reply = await publishBody(gateway.url, { topic, data }, publishHeaders);
      expect(reply.status, reply.text).toBe(200);
      await client.waitForCount(sent);
      expect(client.events.map((event) => event.data)).toEqual(Array.from({ length: sent }, (_, i) => `alive-${i}`));
      expect(client.opens).toBe(1);
    },
  };
}

afterEach(() => {
  closeAllReplies();
});

afterAll(async () => {
  closeAllCollectors();
  await Promise.all(started.map((gateway) => gateway.close()));
});

// ---------------------------------------------------------------------------------------------------
// Streams per node, per client, per second
// ---------------------------------------------------------------------------------------------------

describe('MAX_CONNECTIONS', () => {
  it('a full node answers 503 node_full with Retry-After, and admits again once a stream ends', async () => {
    const gateway = await gatewayWith({ maxConnections: 3 });
    const normal = await witness(gateway, 'full/witness');
    const a = await subscribe(gateway.url, 'full/a');
    const b = await subscribe(gateway.url, 'full/b');
    await expectStream(a);
    await expectStream(b);
    // A client that is not an EventSource gets the JSON error.
    const refused = await send('GET', eventsUrl(gateway.url, 'full/c'));
    expectError(refused, 503, 'node_full');
    expect(refused.headers['retry-after']).toBe('2');
    // An EventSource would give up for good on a 503: it gets an empty stream with a retry hint instead.
    const paced = await subscribe(gateway.url, 'full/c');
    expect(paced.status).toBe(200);
    await waitFor(() => paced.ended, { what: 'the retry-only answer to end' });
    const hint = Number(/^retry: (\d+)\n\n$/.exec(paced.text)?.[1]);
    expect(hint).toBeGreaterThanOrEqual(1000);
    expect(hint).toBeLessThanOrEqual(2 * Math.max(1000, gateway.gateway.config.retryMs));
    expect(await metric(gateway.adminUrl, 'sse_gateway_rejected_requests_total', { code: 'node_full' })).toBe(2);
    await normal.check();
    // Publishing and probes are not streams and are not limited.
    expect((await send('GET', `${gateway.url}/readyz`)).status).toBe(200);
    a.close();
    await expectStream(await eventuallyAdmitted(() => subscribe(gateway.url, 'full/c'), 'a stream after one ended'));
    await normal.check();
  });
});

describe('MAX_CONNECTIONS_PER_CLIENT', () => {
  it('per IP address: the third stream is 429, X-Forwarded-For is ignored without TRUST_PROXY', async () => {
    const gateway = await gatewayWith({ maxConnectionsPerClient: 2, trustProxy: false });
    const first = await subscribe(gateway.url, 'ip/a', { 'x-forwarded-for': '10.0.0.1' });
    await expectStream(first);
    await expectStream(await subscribe(gateway.url, 'ip/b', { 'x-forwarded-for': '10.0.0.2' }));
    const refused = await subscribe(gateway.url, 'ip/c', { 'x-forwarded-for': '10.0.0.3' });
    const error = expectError(refused, 429, 'too_many_connections');
    expect(error.message).toContain('2');
    first.close();
    await expectStream(await eventuallyAdmitted(() => subscribe(gateway.url, 'ip/c'), 'a stream after one ended'));
  });

  it('behind a trusted proxy: keyed by the last X-Forwarded-For entry; other clients are unaffected', async () => {
    const gateway = await gatewayWith({ maxConnectionsPerClient: 2, trustProxy: true });
    const normal = await witness(gateway, 'proxy/witness', { 'x-forwarded-for': '10.0.0.1' });
    await expectStream(await subscribe(gateway.url, 'proxy/a', { 'x-forwarded-for': '10.0.0.2' }));
    await expectStream(await subscribe(gateway.url, 'proxy/b', { 'x-forwarded-for': '192.0.2.1, 10.0.0.2' }));
    // Entries before the last one are whatever the client claimed: they do not make a new client.
    expectError(
      await subscribe(gateway.url, 'proxy/c', { 'x-forwarded-for': '203.0.113.9, 10.0.0.2' }),
      429,
      'too_many_connections',
    );
    expectError(
      await subscribe(gateway.url, 'proxy/c', { 'x-forwarded-for': '10.0.0.2' }),
      429,
      'too_many_connections',
    );
    await normal.check();
    await expectStream(await subscribe(gateway.url, 'proxy/d', { 'x-forwarded-for': '10.0.0.3' }));
    await normal.check();
  });

  it('per token subject: one user is limited, another user at the same address is not', async () => {
    const gateway = await gatewayWith({ authJwtSecret: SECRET, authClockSkewS: 0, maxConnectionsPerClient: 2 });
    const normal = await witness(gateway, 'sub/witness', { authorization: `Bearer ${await token('witness')}` });
    const alice = { authorization: `Bearer ${await token('alice')}` };
    const first = await subscribe(gateway.url, 'sub/a', alice);
    await expectStream(first);
    await expectStream(await subscribe(gateway.url, 'sub/b', alice));
    expectError(await subscribe(gateway.url, 'sub/c', alice), 429, 'too_many_connections');
    // A ticket carries the subject: it does not get around the limit.
    const minted = await send('POST', `${gateway.url}/tickets`, {
      headers: alice,
      body: JSON.stringify({ topics: ['sub/c'] }),
    });
    expect(minted.status, minted.text).toBe(200);
    const { ticket } = minted.json as { ticket: string };
    const viaTicket = await send('GET', eventsUrl(gateway.url, 'sub/c', { ticket }), {
      headers: { accept: 'text/event-stream' },
    });
    expectError(viaTicket, 429, 'too_many_connections');
    // Bob, from the same address, and the witness are unaffected.
    const bob = { authorization: `Bearer ${await token('bob')}` };
    await expectStream(await subscribe(gateway.url, 'sub/a', bob));
    await expectStream(await subscribe(gateway.url, 'sub/b', bob));
    await normal.check();
    first.close();
    await expectStream(
      await eventuallyAdmitted(() => subscribe(gateway.url, 'sub/c', alice), 'alice after one of her streams ended'),
    );
    await normal.check();
  });
});

describe('MAX_NEW_CONNECTIONS_PER_SECOND', () => {
  it('a burst of EventSources is paced: the refused get retry hints spread at the admission rate, and all get in', async () => {
    const gateway = await gatewayWith({ maxNewConnectionsPerSecond: 4 });
    const normal = await witness(gateway, 'paced/witness');
    // 12 at once against a bucket of 4 refilling at 4/s.
    const sources = Array.from({ length: 12 }, (_, i) => collect(eventsUrl(gateway.url, `paced/${i}`)));
    await waitFor(() => sources.every((source) => source.opens >= 1 && source.source.readyState === 1), {
      timeoutMs: 30_000,
      what: 'every EventSource of the burst admitted in the end',
    });
    // None gave up: the refused ones reconnected at their hint, none saw an error status.
    expect(sources.filter((source) => source.errorCodes.some((code) => code !== undefined))).toEqual([]);
    const refusals = await metric(gateway.adminUrl, 'sse_gateway_rejected_requests_total', { code: 'rate_limited' });
    expect(refusals).toBeGreaterThan(0);
    await normal.check();

    // The hints themselves: one return per token, 1/rate apart, the first at least a second away.
    const hints: number[] = [];
    const askedAt: number[] = [];
    for (let i = 0; i < 8; i++) {
      const before = await metric(gateway.adminUrl, 'sse_gateway_rejected_requests_total', { code: 'rate_limited' });
      const reply = await subscribe(gateway.url, `paced/hint-${i}`);
      await waitFor(() => reply.text.includes('retry:'), { what: 'an answer' });
      // Counted before it is answered: a refusal, not an admitted stream.
      if ((await metric(gateway.adminUrl, 'sse_gateway_rejected_requests_total', { code: 'rate_limited' })) > before) {
        hints.push(Number(/^retry: (\d+)/.exec(reply.text)?.[1]));
        askedAt.push(performance.now());
      }
    }
    expect(hints.length).toBeGreaterThan(2);
    for (const hint of hints) expect(hint).toBeGreaterThanOrEqual(1000);
    // Return times (ask time + hint) are 1/rate = 250 ms apart, plus up to one spacing of jitter each.
    const returns = hints.map((hint, i) => (askedAt[i] as number) + hint);
    const spread = (returns.at(-1) as number) - (returns[0] as number);
    expect(spread).toBeGreaterThanOrEqual((hints.length - 1) * 250 - 250 - 50);
  });

  it('a burst of other clients gets 503 rate_limited with Retry-After; a client honouring it gets in', async () => {
    const gateway = await gatewayWith({ maxNewConnectionsPerSecond: 2 });
    const normal = await witness(gateway, 'rate/witness');
    // 16 at once against a bucket of 2 refilling at 2/s: unless the burst is spread over ~7 s, some are refused.
    const burst = await Promise.all(
      Array.from({ length: 16 }, (_, i) => send('GET', eventsUrl(gateway.url, `rate/${i}`))),
    );
    const refused = burst.filter((reply) => reply.status !== 200);
    const admitted = burst.filter((reply) => reply.status === 200);
    expect(refused.length).toBeGreaterThan(0);
    for (const reply of refused) {
      expectError(reply, 503, 'rate_limited');
      expect(reply.headers['retry-after']).toBe('1');
    }
    for (const reply of admitted) await expectStream(reply);
    await normal.check();
    await expectStream(
      await eventuallyAdmitted(() => send('GET', eventsUrl(gateway.url, 'rate/late')), 'a stream after the refill'),
    );
    await normal.check();
  });
});

// ---------------------------------------------------------------------------------------------------
// Request shape limits
// ---------------------------------------------------------------------------------------------------

describe('request limits', () => {
  const MAX_BODY = 8192;
  const MAX_PAYLOAD = 1024;
  let gateway: TestGateway;
  let normal: Awaited<ReturnType<typeof witness>>;

  beforeAll(async () => {
    gateway = await gatewayWith({
      maxTopicsPerConnection: 3,
      maxPayloadBytes: MAX_PAYLOAD,
      maxBatchSize: 5,
      maxBodyBytes: MAX_BODY,
    });
    normal = await witness(gateway, 'shape/witness');
  });

  it('MAX_TOPICS_PER_CONNECTION: one topic too many is 400 too_many_topics; duplicates do not count', async () => {
    expectError(await subscribe(gateway.url, ['t/1', 't/2', 't/3', 't/4']), 400, 'too_many_topics');
    await expectStream(await subscribe(gateway.url, ['t/1', 't/2', 't/3']));
    await expectStream(await subscribe(gateway.url, ['t/1', 't/2', 't/3', 't/1']));
    await normal.check();
  });

  it('topic length and charset: 400 invalid_topic on /events and /publish', async () => {
    const longest = `t/${'x'.repeat(198)}`;
    await expectStream(await subscribe(gateway.url, longest));
    expect((await publishBody(gateway.url, { topic: longest, data: 1 })).status).toBe(200);
    for (const topic of [`${longest}x`, 'a b', 'a*', 'a/**', 'a{b}', 'a,b', 'a\tb', 'é', '']) {
      expectError(await subscribe(gateway.url, topic), 400, 'invalid_topic');
      expectError(await publishBody(gateway.url, { topic, data: 1 }), 400, 'invalid_topic');
    }
    expectError(await publishBody(gateway.url, { topic: 42, data: 1 }), 400, 'invalid_topic');
    expectError(await send('GET', `${gateway.url}/events`), 400, 'missing_topic');
    await normal.check();
  });

  it('event names: 400 invalid_event when too long, reserved, or with a line break', async () => {
    expect((await publishBody(gateway.url, { topic: 'e/1', event: 'x'.repeat(128), data: 1 })).status).toBe(200);
    for (const event of [
      'x'.repeat(129),
      'gateway.reset',
      'gateway.token-expired',
      'a\nid: 1',
      'a\rb',
      'a\u0000b',
      '',
      7,
    ]) {
      expectError(await publishBody(gateway.url, { topic: 'e/1', event, data: 1 }), 400, 'invalid_event');
    }
    await normal.check();
  });

  it('MAX_PAYLOAD_BYTES: 413 payload_too_large, counted in bytes', async () => {
    expect((await publishBody(gateway.url, { topic: 'p/1', data: 'x'.repeat(MAX_PAYLOAD) })).status).toBe(200);
    expectError(
      await publishBody(gateway.url, { topic: 'p/1', data: 'x'.repeat(MAX_PAYLOAD + 1) }),
      413,
      'payload_too_large',
    );
    // 513 two-byte characters: 1026 bytes.
    expectError(await publishBody(gateway.url, { topic: 'p/1', data: 'é'.repeat(513) }), 413, 'payload_too_large');
    // JSON data is measured as the JSON text sent on the wire.
    expectError(
      await publishBody(gateway.url, { topic: 'p/1', data: { s: 'x'.repeat(MAX_PAYLOAD) } }),
      413,
      'payload_too_large',
    );
    const error = expectError(
      await publishBody(gateway.url, [
        { topic: 'p/1', data: 1 },
        { topic: 'p/1', data: 'x'.repeat(MAX_PAYLOAD + 1) },
      ]),
      413,
      'payload_too_large',
    );
    expect(error.message).toContain('[1]');
    await normal.check();
  });

  it('MAX_BATCH_SIZE: 413 batch_too_large', async () => {
    const batch = (n: number) => Array.from({ length: n }, (_, i) => ({ topic: 'b/1', data: i }));
    const ok = await publishBody(gateway.url, batch(5));
    expect(ok.status, ok.text).toBe(200);
    expectError(await publishBody(gateway.url, batch(6)), 413, 'batch_too_large');
    expectError(await publishBody(gateway.url, []), 400, 'empty_batch');
    await normal.check();
  });

  it('MAX_BODY_BYTES: 413 body_too_large, with Content-Length or chunked', async () => {
    const atLimit = JSON.stringify({ topic: 'body/1', data: 'x'.repeat(MAX_PAYLOAD) }).padEnd(MAX_BODY, ' ');
    expect((await publishBody(gateway.url, atLimit)).status).toBe(200);
    expectError(await publishBody(gateway.url, `${atLimit} `), 413, 'body_too_large');
    const chunked = await send('POST', `${gateway.url}/publish`, {
      headers: { 'content-type': 'application/json' },
      chunks: Array.from({ length: 10 }, () => Buffer.alloc(1024, 0x20)),
    });
    expectError(chunked, 413, 'body_too_large');
    await normal.check();
  });
});

// ---------------------------------------------------------------------------------------------------
// Slow clients: headers and body in time, streams for as long as they like
// ---------------------------------------------------------------------------------------------------

describe('HEADERS_TIMEOUT_MS and REQUEST_TIMEOUT_MS', () => {
  const HEADERS_TIMEOUT = 500;
  const REQUEST_TIMEOUT = 1000;
  let gateway: TestGateway;
  let normal: Awaited<ReturnType<typeof witness>>;

  beforeAll(async () => {
    gateway = await gatewayWith({
      headersTimeoutMs: HEADERS_TIMEOUT,
      requestTimeoutMs: REQUEST_TIMEOUT,
      heartbeatMs: 200,
    });
    normal = await witness(gateway, 'slow/witness');
  });

  /**
   * Opens a raw socket, sends `head` at once, then one byte of `drip` every 100 ms (never finishing).
   * Resolves when the server closes the socket, with what it answered and how long that took.
   */
  function slowClient(head: string, drip: string): Promise<{ answer: string; elapsedMs: number; dripped: number }> {
    return new Promise((resolve, reject) => {
      const startedAt = performance.now();
      const socket = connect({ host: '127.0.0.1', port: gateway.gateway.port });
      let answer = '';
      let dripped = 0;
      let timer: NodeJS.Timeout | undefined;
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        answer += chunk;
      });
      socket.on('error', () => {});
      socket.once('connect', () => {
        socket.write(head);
        timer = setInterval(() => {
          if (socket.destroyed || !socket.writable) return;
          socket.write(drip[dripped % drip.length] as string);
          dripped++;
        }, 100);
      });
      socket.once('close', () => {
        clearInterval(timer);
        resolve({ answer, elapsedMs: performance.now() - startedAt, dripped });
      });
      // Far beyond any timeout of the gateway: the test fails rather than hangs.
      setTimeout(() => {
        if (!socket.destroyed) {
          clearInterval(timer);
          socket.destroy();
          reject(new Error(`the slow client was not cut off within 30 s; it got ${JSON.stringify(answer)}`));
        }
      }, 30_000).unref();
    });
  }

  it('a client sending its headers byte by byte is cut off after HEADERS_TIMEOUT_MS (408)', async () => {
    const { answer, elapsedMs, dripped } = await slowClient(
      'GET /events?topic=slow/loris HTTP/1.1\r\nHost: 127.0.0.1\r\n',
      'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    );
    expect(dripped).toBeGreaterThan(0);
    expect(elapsedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT - 50);
    // Node checks the timeouts once a second; the rest is slack for a loaded machine.
    expect(elapsedMs).toBeLessThan(HEADERS_TIMEOUT + 15_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    await normal.check();
  });

  it('a client that connects and sends nothing is cut off after HEADERS_TIMEOUT_MS (408)', async () => {
    const startedAt = performance.now();
    const socket = connect({ host: '127.0.0.1', port: gateway.gateway.port });
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('error', () => {});
    await waitFor(() => socket.destroyed, { what: 'the silent connection to be closed', timeoutMs: 30_000 });
    const elapsedMs = performance.now() - startedAt;
    expect(elapsedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT - 50);
    expect(elapsedMs).toBeLessThan(HEADERS_TIMEOUT + 15_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { code: 'request_timeout', message: expect.any(String) },
    });
    await normal.check();
  });

  it('a client sending its body byte by byte is cut off after REQUEST_TIMEOUT_MS (408)', async () => {
    const { answer, elapsedMs } = await slowClient(
      'POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n',
      '{"topic":"slow/body","data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    );
    expect(elapsedMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT - 50);
    expect(elapsedMs).toBeLessThan(REQUEST_TIMEOUT + 15_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    await normal.check();
  });

  it('a stream is not cut by REQUEST_TIMEOUT_MS: open for 3x the timeout, with heartbeats', async () => {
    const openedAt = Date.now();
    const stream = await subscribe(gateway.url, 'slow/long');
    await expectStream(stream);
    const heartbeats = () => stream.text.split(':\n\n').length - 1;
    await waitFor(() => stream.ended || (Date.now() - openedAt >= 3 * REQUEST_TIMEOUT && heartbeats() >= 5), {
      what: `a stream ${3 * REQUEST_TIMEOUT} ms old with heartbeats`,
    });
    expect(stream.ended).toBe(false);
    expect(heartbeats()).toBeGreaterThanOrEqual(5);
    // Still delivering.
    const reply = await publishBody(gateway.url, { topic: 'slow/long', data: 'late' });
    expect(reply.status).toBe(200);
    await waitFor(() => stream.text.includes('data: late'), { what: 'an event on the old stream' });
    expect(stream.ended).toBe(false);
    await normal.check();
  });
});
