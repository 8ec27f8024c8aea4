/**
 * A Redis that stops answering while its sockets stay open (kill -STOP: what a network partition looks like
 * from the node). The node must notice within a few seconds, refuse publishes and new streams fast with
 * answers a caller can act on, and on recovery lose nothing for the clients that stayed connected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closeAllCollectors,
  collect,
  eventsUrl,
  getJson,
  publish,
  rawStream,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor } from './support/wait.js';

/** The scenario of the issue: Redis frozen for 8 s. */
const FREEZE_MS = 8000;
const HEALTH_TIMEOUT_MS = 1000;

let redis: TestRedis;
let node: TestGateway;

beforeAll(async () => {
  redis = await startRedis();
  node = await startTestGateway({
    redisUrl: redis.url,
    redisPrefix: uniquePrefix('unresponsive'),
    redisHealthTimeoutMs: HEALTH_TIMEOUT_MS,
  });
});

afterAll(async () => {
  closeAllCollectors();
  if (redis?.pid) process.kill(redis.pid, 'SIGCONT');
  await node?.close();
  await redis?.stop().catch(() => {});
});

const sharedServer = Boolean(process.env.REDIS_URL);

describe.skipIf(sharedServer)('a frozen Redis (kill -STOP for 8 s, then -CONT)', () => {
  it('turns the node unready within seconds, answers 504/503 fast, and loses nothing for connected clients', async () => {
    const pid = redis.pid as number;
    const topic = 'frozen';
    const client = collect(eventsUrl(node.url, [topic]));
    await waitFor(() => client.opens > 0, { what: 'the stream to open' });
    const before = Array.from({ length: 20 }, (_, index) => `before-${index}`);
    for (const data of before) expect((await publish(node.url, { topic, data })).status).toBe(200);
    await waitFor(() => client.events.length === before.length, { what: 'the events before the freeze' });

    process.kill(pid, 'SIGSTOP');
    const frozenAt = Date.now();
    try {
      // Sent before the node can know: Redis may still apply it once it wakes, so the answer says "unknown".
      const inFlight = await publish(node.url, { topic, data: 'uncertain' }, { 'idempotency-key': 'uncertain-1' });
      expect(inFlight.status).toBe(504);
      expect(inFlight.body).toMatchObject({ error: { code: 'outcome_unknown' } });

      await waitFor(async () => (await getJson(`${node.url}/readyz`)).status === 503, {
        what: '/readyz to turn 503',
        timeoutMs: 4 * HEALTH_TIMEOUT_MS,
      });
      const noticedMs = Date.now() - frozenAt;
      expect(noticedMs).toBeLessThan(4 * HEALTH_TIMEOUT_MS);

      const refusedAt = Date.now();
      const refused = await publish(node.url, { topic, data: 'refused' });
      expect(refused.status).toBe(503);
      expect(refused.body).toMatchObject({ error: { code: 'engine_unavailable' } });
      expect(Date.now() - refusedAt).toBeLessThan(1000);

      // A browser's EventSource gets a retry hint, never a status that would make it give up.
      const fresh = await rawStream(eventsUrl(node.url, [topic]), { accept: 'text/event-stream' });
      await fresh.finished;
      expect(fresh.status).toBe(200);
      expect(fresh.text).toMatch(/^retry: \d+\n/);

      await waitFor(() => Date.now() - frozenAt >= FREEZE_MS, { what: 'the freeze to last', timeoutMs: FREEZE_MS * 2 });
    } finally {
      process.kill(pid, 'SIGCONT');
    }

    const thawedAt = Date.now();
    await waitFor(async () => (await getJson(`${node.url}/readyz`)).status === 200, { what: '/readyz to recover' });
    const recoveredMs = Date.now() - thawedAt;

    // Retried with the same key: stored once, whether or not the frozen Redis applied the first attempt.
    const retried = await publish(node.url, { topic, data: 'uncertain' }, { 'idempotency-key': 'uncertain-1' });
    expect(retried.status).toBe(200);
    const after = Array.from({ length: 20 }, (_, index) => `after-${index}`);
    for (const data of after) expect((await publish(node.url, { topic, data })).status).toBe(200);

    const expected = [...before, 'uncertain', ...after];
    await waitFor(() => client.events.length >= expected.length, { what: 'every event on the connected client' });
    expect(client.events.map((event) => event.data)).toEqual(expected);
    expect(client.events.map((event) => event.event)).not.toContain('gateway.reset');
    expect(recoveredMs).toBeLessThan(15_000);
  });
});
