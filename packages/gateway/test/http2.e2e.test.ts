/// <reference types="node" />
/**
 * HTTP/2 end to end with Node's http2 client: many SSE streams on one session over TLS (h2 via ALPN) and
 * over cleartext h2c, each getting its events exactly once and in order; per-stream slow consumers and
 * write timeouts that leave the session's other streams flowing; refused streams past
 * H2_MAX_CONCURRENT_STREAMS; per-client limits counting streams; drain with GOAWAY and a lossless resume
 * on another node; certificate checks at boot and a reload that keeps open streams.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type ClientHttp2Session, connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Config, ConfigError, loadConfig } from '../src/config.js';
import { createDevCertificate } from '../src/server/dev-certificate.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import {
  closeAllSessions,
  type H2Stream,
  h2,
  openSession,
  openStream,
  request,
  waitForEvents,
} from './support/h2-client.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor } from './support/wait.js';

let dir: string;
let certPath: string;
let keyPath: string;

async function writeCertificate(name: string, options: Parameters<typeof createDevCertificate>[0] = {}) {
  const { cert, key } = await createDevCertificate(options);
  const paths = { cert: join(dir, `${name}-cert.pem`), key: join(dir, `${name}-key.pem`) };
  writeFileSync(paths.cert, cert);
  writeFileSync(paths.key, key);
  return paths;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sse-gateway-h2-'));
  const paths = await writeCertificate('main');
  certPath = paths.cert;
  keyPath = paths.key;
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const gateways: TestGateway[] = [];
afterEach(async () => {
  closeAllSessions();
  await Promise.all(gateways.splice(0).map((gateway) => gateway.close()));
});

async function tlsGateway(overrides: Partial<Config> = {}): Promise<TestGateway> {
  const gateway = await startTestGateway({ tlsCert: certPath, tlsKey: keyPath, ...overrides });
  gateways.push(gateway);
  return gateway;
}

function publish(gateway: TestGateway, topic: string, data: string) {
  return gateway.gateway.engine.publish([{ topic, event: 'message', data }]);
}

async function publishEach(gateway: TestGateway, topic: string, count: number, size = 0): Promise<void> {
  for (let n = 0; n < count; n++) await publish(gateway, topic, `${topic}#${n}${'x'.repeat(size)}`);
}

async function disconnects(gateway: TestGateway, reason: string): Promise<number> {
  const { values } = await gateway.gateway.metrics.disconnects.get();
  return values.find((value) => value.labels.reason === reason)?.value ?? 0;
}

const datas = (stream: H2Stream) => stream.events.map((event) => event.data.replace(/x+$/, ''));
const expected = (topic: string, count: number, from = 0) =>
  Array.from({ length: count }, (_, n) => `${topic}#${n + from}`);

describe('HTTP/2 over TLS', () => {
  it('serves h2 via ALPN and HTTP/1.1 on the same port', async () => {
    const gateway = await tlsGateway();
    expect(gateway.url).toMatch(/^https:/);
    const session = await openSession(gateway.url);
    expect((session.socket as TLSSocket).alpnProtocol).toBe('h2');
    const health = await request(session, 'GET', '/healthz');
    expect(health.status).toBe(200);
    const { request: h1Request } = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      h1Request(`${gateway.url}/healthz`, { rejectUnauthorized: false }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    expect(status).toBe(200);
  });

  it('delivers every event exactly once and in order to 50 streams on one session', async () => {
    const gateway = await tlsGateway();
    const session = await openSession(gateway.url);
    const topics = Array.from({ length: 5 }, (_, n) => `h2/many/${n}`);
    const streams = await Promise.all(
      Array.from({ length: 50 }, (_, n) => openStream(session, `/events?topic=${topics[n % topics.length]}`)),
    );
    expect(streams.every((stream) => stream.status === 200)).toBe(true);
    expect(streams[0]?.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(streams[0]?.headers.connection).toBeUndefined();
    await waitFor(() => gateway.gateway.hub.connectionCount === 50, { what: '50 streams attached' });
    await Promise.all(topics.map((topic) => publishEach(gateway, topic, 40)));
    await waitForEvents(streams, 40, '40 events on every stream');
    streams.forEach((stream, n) => {
      const topic = topics[n % topics.length] as string;
      expect(datas(stream), `stream ${n}`).toEqual(expected(topic, 40));
      expect(new Set(stream.events.map((event) => event.id)).size).toBe(40);
    });
    expect(streams[0]?.retries).toEqual([100]);
  });

  it('cuts off only the stream whose reader stopped (slow consumer); it resumes from history', async () => {
    const gateway = await tlsGateway({ maxBufferedBytes: 64 * 1024, writeTimeoutMs: 60_000 });
    const session = await openSession(gateway.url);
    const stalled = await openStream(session, '/events?topic=h2/slow');
    const flowing = await Promise.all([1, 2, 3].map(() => openStream(session, '/events?topic=h2/slow')));
    await waitFor(() => gateway.gateway.hub.connectionCount === 4, { what: '4 streams attached' });
    // 200 events of 2 KiB, 10 at a time at the pace of the reading streams: far more than the stalled
    // stream's 64 KiB window plus its 64 KiB budget, never more than a reader's window at once.
    for (let batch = 0; batch < 20; batch++) {
      for (let n = batch * 10; n < batch * 10 + 10; n++)
        await publish(gateway, 'h2/slow', `h2/slow#${n}${'x'.repeat(2048)}`);
      await waitForEvents(flowing, batch * 10 + 10, `batch ${batch} on the flowing streams`);
      if (batch === 0) {
        await waitForEvents([stalled], 10, 'the first batch on the stream about to stall');
        stalled.stream.pause();
      }
    }
    await stalled.finished;
    expect(stalled.ended).toBe('reset');
    expect(await disconnects(gateway, 'slow-consumer')).toBe(1);
    for (const stream of flowing) {
      expect(datas(stream)).toEqual(expected('h2/slow', 200));
      expect(stream.ended).toBeUndefined();
    }
    expect(session.closed || session.destroyed).toBe(false);
    const lastSeen = stalled.events.at(-1)?.id;
    expect(lastSeen).toBeTruthy();
    const resumed = await openStream(session, '/events?topic=h2/slow', { 'last-event-id': lastSeen as string });
    const already = stalled.events.length;
    await waitForEvents([resumed], 200 - already, 'the rest from history');
    expect([...datas(stalled), ...datas(resumed)]).toEqual(expected('h2/slow', 200));
  });

  it('times out a stalled stream by its own progress, not the session socket', async () => {
    const gateway = await tlsGateway({ writeTimeoutMs: 400, closeOnWriteTimeout: true });
    const session = await openSession(gateway.url);
    const stalled = await openStream(session, '/events?topic=h2/timeout');
    const flowing = await openStream(session, '/events?topic=h2/timeout');
    await waitFor(() => gateway.gateway.hub.connectionCount === 2, { what: '2 streams attached' });
    stalled.stream.pause();
    // ~100 KiB: past the stalled stream's 64 KiB window, well under its 1 MiB budget.
    await publishEach(gateway, 'h2/timeout', 50, 2048);
    await waitForEvents([flowing], 50, 'the flowing stream');
    // The flowing stream keeps the session socket busy; the stalled one still times out on its own.
    const ticker = setInterval(() => void publish(gateway, 'h2/timeout', 'tick'), 50);
    try {
      await stalled.finished;
    } finally {
      clearInterval(ticker);
    }
    expect(stalled.ended).toBe('reset');
    expect(await disconnects(gateway, 'write-timeout')).toBe(1);
    expect(await disconnects(gateway, 'slow-consumer')).toBe(0);
    expect(flowing.ended).toBeUndefined();
  });

  it('closing one stream leaves the others on the session', async () => {
    const gateway = await tlsGateway();
    const session = await openSession(gateway.url);
    const streams = await Promise.all([0, 1, 2].map(() => openStream(session, '/events?topic=h2/close')));
    await waitFor(() => gateway.gateway.hub.connectionCount === 3, { what: '3 streams attached' });
    streams[0]?.stream.close(h2.NGHTTP2_CANCEL);
    await waitFor(() => gateway.gateway.hub.connectionCount === 2, { what: 'the closed stream to leave the hub' });
    await publishEach(gateway, 'h2/close', 5);
    await waitForEvents(streams.slice(1), 5, 'events on the remaining streams');
    expect(streams[0]?.events).toEqual([]);
  });

  it('refuses streams past H2_MAX_CONCURRENT_STREAMS and keeps serving', async () => {
    const gateway = await tlsGateway({ h2MaxConcurrentStreams: 4 });
    // Six requests in the first flight, before the client has heard the server's limit: a well-behaved client
    // queues once it knows, so this is the only way past it; the server must refuse, never crash.
    const session = connect(gateway.url, { rejectUnauthorized: false });
    session.on('error', () => {});
    const outcomes = await Promise.all(
      Array.from(
        { length: 6 },
        () =>
          new Promise<number | 'open'>((resolve) => {
            const stream = session.request({ ':path': '/events?topic=h2/refused', accept: 'text/event-stream' });
            stream.on('error', () => {});
            stream.once('response', () => resolve('open'));
            stream.once('close', () => resolve(stream.rstCode ?? -1));
          }),
      ),
    );
    try {
      expect(outcomes.filter((outcome) => outcome === 'open')).toHaveLength(4);
      expect(outcomes.filter((outcome) => outcome === h2.NGHTTP2_REFUSED_STREAM)).toHaveLength(2);
      await waitFor(() => gateway.gateway.hub.connectionCount === 4, { what: '4 streams attached' });
      const again = await openSession(gateway.url);
      expect((await request(again, 'GET', '/healthz')).status).toBe(200);
    } finally {
      session.destroy();
    }
  });

  it('counts streams, not connections, against MAX_CONNECTIONS_PER_CLIENT', async () => {
    const gateway = await tlsGateway({ maxConnectionsPerClient: 3 });
    const session = await openSession(gateway.url);
    const streams = await Promise.all([0, 1, 2].map(() => openStream(session, '/events?topic=h2/limit')));
    expect(streams.map((stream) => stream.status)).toEqual([200, 200, 200]);
    const fourth = await request(session, 'GET', '/events?topic=h2/limit', undefined, { accept: 'application/json' });
    expect(fourth.status).toBe(429);
    expect(JSON.parse(fourth.body).error.code).toBe('too_many_connections');
  });

  it('ends an idle stream by its own idle timeout while a busy one on the same session stays', async () => {
    const gateway = await tlsGateway({ idleTimeoutMs: 600 });
    const session = await openSession(gateway.url);
    const idle = await openStream(session, '/events?topic=h2/idle/quiet');
    const busy = await openStream(session, '/events?topic=h2/idle/busy');
    await waitFor(() => gateway.gateway.hub.connectionCount === 2, { what: '2 streams attached' });
    const ticker = setInterval(() => void publish(gateway, 'h2/idle/busy', 'tick'), 100);
    try {
      await idle.finished;
      expect(idle.ended).toBe('end');
      expect(await disconnects(gateway, 'idle-timeout')).toBe(1);
      const before = busy.events.length;
      await waitFor(() => busy.events.length > before + 3, { what: 'the busy stream to keep receiving' });
      expect(busy.ended).toBeUndefined();
    } finally {
      clearInterval(ticker);
    }
  });

  it('sends heartbeats and gzip per stream', async () => {
    const gateway = await tlsGateway({ heartbeatMs: 100, gzip: true });
    const session = await openSession(gateway.url);
    const plain = await openStream(session, '/events?topic=h2/gzip');
    const zipped = await openStream(session, '/events?topic=h2/gzip', { 'accept-encoding': 'gzip' });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(plain.headers['content-encoding']).toBeUndefined();
    await waitFor(() => plain.comments.length > 0 && zipped.comments.length > 0, { what: 'heartbeats on both' });
    await waitFor(() => gateway.gateway.hub.connectionCount === 2, { what: '2 streams attached' });
    await publishEach(gateway, 'h2/gzip', 10);
    await waitForEvents([plain, zipped], 10, 'events on both');
    expect(datas(zipped)).toEqual(expected('h2/gzip', 10));
  });
});

describe('cleartext h2c (H2C=true)', () => {
  it('speaks h2 with prior knowledge and HTTP/1.1 on the same plain port', async () => {
    const gateway = await startTestGateway({ h2c: true });
    gateways.push(gateway);
    expect(gateway.url).toMatch(/^http:/);
    const session = await openSession(gateway.url);
    const streams = await Promise.all([0, 1].map(() => openStream(session, '/events?topic=h2c/t')));
    await waitFor(() => gateway.gateway.hub.connectionCount === 2, { what: '2 streams attached' });
    await publishEach(gateway, 'h2c/t', 5);
    await waitForEvents(streams, 5, 'events over h2c');
    const response = await fetch(`${gateway.url}/healthz`);
    expect(response.status).toBe(200);
  });
});

describe('drain over HTTP/2', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
  });

  it('closes every stream over DRAIN_MS, sends GOAWAY, and the clients resume on another node losing nothing', async () => {
    const prefix = uniquePrefix('h2-drain');
    const shared = { redisUrl: redis.url, redisPrefix: prefix, tlsCert: certPath, tlsKey: keyPath };
    const draining = await startTestGateway(shared);
    const other = await startTestGateway(shared);
    gateways.push(other);
    const session = await openSession(draining.url);
    let goaway = false;
    session.once('goaway', () => {
      goaway = true;
    });
    const topics = ['h2/drain/a', 'h2/drain/b'];
    const streams = await Promise.all(
      Array.from({ length: 10 }, (_, n) => openStream(session, `/events?topic=${topics[n % 2]}`)),
    );
    await waitFor(() => draining.gateway.hub.connectionCount === 10, { what: '10 streams attached' });
    for (const topic of topics) await publishEach(other, topic, 20);
    await waitForEvents(streams, 20, 'the first 20 events');
    const closed = draining.gateway.close(500);
    await Promise.all(streams.map((stream) => stream.finished));
    expect(streams.every((stream) => stream.ended === 'end')).toBe(true);
    await closed;
    await waitFor(() => goaway || session.closed, { what: 'GOAWAY on the drained session' });
    for (const topic of topics) await publishEach(other, topic, 20, 0).then(() => undefined);
    const elsewhere = await openSession(other.url);
    const resumed = await Promise.all(
      streams.map((stream, n) =>
        openStream(elsewhere, `/events?topic=${topics[n % 2]}`, { 'last-event-id': stream.events.at(-1)?.id ?? '' }),
      ),
    );
    await waitForEvents(resumed, 20, 'the events published during and after the drain');
    streams.forEach((stream, n) => {
      const topic = topics[n % 2] as string;
      expect([...datas(stream), ...datas(resumed[n] as H2Stream)]).toEqual([
        ...expected(topic, 20),
        ...expected(topic, 20),
      ]);
    });
  }, 60_000);
});

describe('TLS certificates', () => {
  const env = (cert: string, key: string) => ({ TLS_CERT: cert, TLS_KEY: key });
  const problemsOf = (values: Record<string, string>) => {
    try {
      loadConfig(values);
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return [...error.problems];
    }
  };

  it('refuses at boot an expired certificate, a key of another certificate, a missing file, half a pair', async () => {
    const expired = await writeCertificate('expired', {
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const other = await writeCertificate('other');
    expect(problemsOf(env(expired.cert, expired.key)).join()).toMatch(/TLS_CERT .*expired on/);
    expect(problemsOf(env(certPath, other.key)).join()).toMatch(/TLS_KEY .* is not the private key of the certificate/);
    expect(problemsOf(env(join(dir, 'nope.pem'), keyPath)).join()).toMatch(/TLS_CERT .*cannot be read \(ENOENT\)/);
    expect(problemsOf({ TLS_CERT: certPath }).join()).toMatch(/TLS_CERT needs TLS_KEY/);
    expect(problemsOf({ ...env(certPath, keyPath), H2C: 'true' }).join()).toMatch(/H2C is for plain ports/);
    expect(problemsOf(env(certPath, keyPath))).toEqual([]);
  });

  it('reloads the certificate for new connections while open streams keep flowing', async () => {
    const first = await writeCertificate('reload', { commonName: 'first.localhost' });
    const gateway = await startTestGateway({ tlsCert: first.cert, tlsKey: first.key });
    gateways.push(gateway);
    const peerName = (session: ClientHttp2Session) => (session.socket as TLSSocket).getPeerCertificate().subject.CN;
    const before = await openSession(gateway.url);
    expect(peerName(before)).toBe('first.localhost');
    const open = await openStream(before, '/events?topic=h2/reload');
    await waitFor(() => gateway.gateway.hub.connectionCount === 1, { what: 'the stream attached' });

    const renewed = await createDevCertificate({ commonName: 'second.localhost' });
    writeFileSync(first.cert, renewed.cert);
    writeFileSync(first.key, renewed.key);
    gateway.gateway.reloadTls();
    const after = await openSession(gateway.url);
    expect(peerName(after)).toBe('second.localhost');

    writeFileSync(first.key, (await createDevCertificate()).key);
    expect(() => gateway.gateway.reloadTls()).toThrow(/is not the private key/);
    const still = await openSession(gateway.url);
    expect(peerName(still)).toBe('second.localhost');

    await publishEach(gateway, 'h2/reload', 3);
    await waitForEvents([open], 3, 'events on the stream opened before the reload');
  });
});
