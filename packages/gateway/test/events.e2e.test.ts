/// <reference types="node" />
/**
 * GET /events end to end with real `eventsource` clients (and raw fetch / node:http where the bytes
 * matter) against listening in-process gateways on the embedded engine: order, resume without gaps or
 * duplicates while publishing goes on, multi-topic ids, reset events, retry and heartbeat lines,
 * headers, CORS, /stats and gzip.
 */
import { get as httpGet, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { createGunzip } from 'node:zlib';
import { parsePosition } from '@sse-gateway/publisher-sdk/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type Collector,
  closeAllCollectors,
  closeAllRawStreams,
  collect,
  countOf,
  eventsUrl,
  getJson,
  memoryEngineWithLatency,
  numbers,
  publish,
  publishAll,
  type Received,
  range,
  rawStream,
  startTestGateway,
  stats,
  type TestGateway,
} from './support/gateway.js';
import { rawExchange } from './support/raw-socket.js';
import { waitFor } from './support/wait.js';

const gateways: TestGateway[] = [];
async function gatewayWith(
  overrides: Parameters<typeof startTestGateway>[0] = {},
  options: Parameters<typeof startTestGateway>[1] = {},
): Promise<TestGateway> {
  const started = await startTestGateway(overrides, options);
  gateways.push(started);
  return started;
}

let main: TestGateway;

beforeAll(async () => {
  // History long enough that nothing published here is trimmed, whatever the machine's speed.
  main = await gatewayWith({ historyMaxLength: 200_000 });
});

afterEach(() => {
  closeAllCollectors();
  closeAllRawStreams();
});

afterAll(async () => {
  closeAllCollectors();
  closeAllRawStreams();
  await Promise.all(gateways.map((started) => started.close()));
});

/** Asserts that the ids of `events` strictly increase within one epoch (single-topic ids). */
function expectIncreasingIds(events: readonly Received[]): void {
  let previous: { epoch: string; ms: number; seq: number } | undefined;
  for (const event of events) {
    const position = parsePosition(event.id);
    expect(position, `id ${event.id} is well-formed`).toBeDefined();
    if (!position) return;
    if (previous) {
      expect(position.epoch).toBe(previous.epoch);
      const increasing = position.ms > previous.ms || (position.ms === previous.ms && position.seq > previous.seq);
      expect(increasing, `${event.id} comes after the previous id`).toBe(true);
    }
    previous = position;
  }
}

function resetData(event: Received | undefined): unknown {
  expect(event?.event).toBe('gateway.reset');
  return JSON.parse(event?.data ?? 'null');
}

/** Snapshot of a collector's events taken right after closing it: what that client saw. */
function closeAndTake(client: Collector): Received[] {
  client.close();
  return [...client.events];
}

describe('order and exactly-once delivery', () => {
  it('delivers thousands of events of one topic in publish order, each once, with increasing ids', async () => {
    const topic = 'order/thousands';
    const client = collect(eventsUrl(main.url, topic));
    await client.waitForOpen();
    const total = 5000;
    const ids = await publishAll(main.url, topic, range(0, total).map(String));
    await client.waitForCount(total);
    expect(numbers(client.events)).toEqual(range(0, total));
    expect(client.events.map((event) => event.id)).toEqual(ids);
    expectIncreasingIds(client.events);
    expect(client.opens).toBe(1);
  });

  it('resumes after dropped connections (Last-Event-ID header, then lastEventId query) while publishing goes on: no gap, no duplicate', async () => {
    const topic = 'resume/concurrent';
    const url = eventsUrl(main.url, topic);
    const minimum = 3000;
    let published = 0;
    let stop = false;
    const first = collect(url);
    await first.waitForOpen();

    const publisher = (async () => {
      while (!stop || published < minimum) {
        const batch = range(published, published + 10).map(String);
        await publishAll(main.url, topic, batch);
        published += batch.length;
      }
    })();
    const publisherFailed = publisher.then(
      () => false,
      () => true,
    );

    await first.waitForCount(500);
    const seenByFirst = closeAndTake(first);
    const resumeFirst = seenByFirst[seenByFirst.length - 1]?.id;
    expect(resumeFirst).toBeDefined();
    const publishedAtFirstDrop = published;

    // Reconnect with the header, as EventSource itself does.
    const second = collect(url, { lastEventId: resumeFirst, lastEventIdVia: 'header' });
    await second.waitForCount(500);
    const seenBySecond = closeAndTake(second);
    const resumeSecond = seenBySecond[seenBySecond.length - 1]?.id;
    expect(resumeSecond).toBeDefined();

    // Reconnect with the query parameter, as a first connect or a polyfill does.
    const third = collect(url, { lastEventId: resumeSecond, lastEventIdVia: 'query' });
    await third.waitForCount(500);
    stop = true;
    await publisher;
    expect(await publisherFailed).toBe(false);
    const total = published;
    expect(total).toBeGreaterThanOrEqual(minimum);
    // The publisher was still going when the first client dropped: the resume raced live publishing.
    expect(publishedAtFirstDrop).toBeLessThan(total);

    await third.waitForCount(total - seenByFirst.length - seenBySecond.length, {
      what: `the rest of ${total} events on the third connection`,
    });
    const all = [...seenByFirst, ...seenBySecond, ...third.events];
    expect(numbers(all)).toEqual(range(0, total));
    expectIncreasingIds(all);
    expect(third.opens).toBe(1);
  });

  it('EventSource resumes by itself when the server ends the stream, sending Last-Event-ID', async () => {
    const recycling = await gatewayWith({ maxConnectionAgeMs: 300, retryMs: 20, historyMaxLength: 100_000 });
    const topic = 'resume/by-itself';
    const client = collect(eventsUrl(recycling.url, topic));
    await client.waitForOpen();
    let published = 0;
    // Publish until the client has been cut (max age) and reconnected at least twice.
    while (client.opens < 3 || published < 300) {
      await publishAll(recycling.url, topic, range(published, published + 5).map(String));
      published += 5;
      if (published > 200_000) throw new Error('the client never reconnected');
    }
    await client.waitForCount(published);
    expect(numbers(client.events)).toEqual(range(0, published));
    expect(client.opens).toBeGreaterThanOrEqual(3);
  });
});

describe('with the round-trip latency of a networked engine', () => {
  it('a resume whose history reads overlap live publishing delivers every event exactly once (replay-then-live handover)', async () => {
    const slowReads = await gatewayWith(
      { historyMaxLength: 100_000 },
      { engine: memoryEngineWithLatency({ readAfterMs: 25 }) },
    );
    const topic = 'latency/handover';
    const url = eventsUrl(slowReads.url, topic);
    // Three pages of history behind the first client, two behind the second.
    const ids = await publishAll(slowReads.url, topic, range(0, 1200).map(String));
    let published = ids.length;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        await publishAll(slowReads.url, topic, range(published, published + 5).map(String));
        published += 5;
      }
    })();
    const early = collect(url, { lastEventId: ids[0] });
    const later = collect(url, { lastEventId: ids[700], lastEventIdVia: 'query' });
    // Well past the replay: live events queued during the history reads have been handed over.
    await early.waitForCount(1500);
    await later.waitForCount(1000);
    stop = true;
    await publisher;
    await early.waitForCount(published - 1);
    await later.waitForCount(published - 701);
    expect(numbers(early.events)).toEqual(range(1, published));
    expect(numbers(later.events)).toEqual(range(701, published));
    expectIncreasingIds(early.events);
  });

  it('an event published as soon as the stream is open reaches the client', async () => {
    const slowSubscribe = await gatewayWith({}, { engine: memoryEngineWithLatency({ subscribeMs: 100, headMs: 100 }) });
    const topic = 'latency/first-event';
    const client = collect(eventsUrl(slowSubscribe.url, topic));
    await client.waitForOpen();
    // The page reacts to `open` by starting the work that publishes (a common pattern).
    const [first] = await publishAll(slowSubscribe.url, topic, ['first']);
    let probes = 0;
    await waitFor(
      async () => {
        if (client.events.length > 0) return true;
        await publishAll(slowSubscribe.url, topic, [`probe-${probes++}`]);
        return false;
      },
      { what: 'any event to arrive', intervalMs: 50 },
    );
    expect(client.events[0], 'the first event after open').toEqual({ id: first, event: 'message', data: 'first' });
  });
});

describe('multi-topic connections', () => {
  it('ids carry one position per sorted topic and a resume gets exactly the missed events of each topic', async () => {
    const a = 'multi/a';
    const b = 'multi/b';
    await publishAll(main.url, a, ['a0']);
    // Topics in reverse order in the URL: the gateway sorts them, so ids line up on every reconnect.
    const client = collect(eventsUrl(main.url, [b, a]));
    await client.waitForOpen();
    const [a1, a2] = await publishAll(main.url, a, ['a1', 'a2']);
    const [b1] = await publishAll(main.url, b, ['b1']);
    await client.waitForCount(3);
    const seen = closeAndTake(client);
    // b had no history at connect: its part is the origin position until its first event.
    expect(seen).toEqual([
      { id: `${a1},:0-0`, event: 'message', data: 'a1' },
      { id: `${a2},:0-0`, event: 'message', data: 'a2' },
      { id: `${a2},${b1}`, event: 'message', data: 'b1' },
    ]);

    // Missed while disconnected: two events of a, three of b.
    const [, a4] = await publishAll(main.url, a, ['a3', 'a4']);
    const [, , b4] = await publishAll(main.url, b, ['b2', 'b3', 'b4']);

    const resumed = collect(eventsUrl(main.url, [a, b]), { lastEventId: `${a2},${b1}` });
    await resumed.waitForCount(5);
    expect(resumed.events.filter((event) => event.data.startsWith('a')).map((event) => event.data)).toEqual([
      'a3',
      'a4',
    ]);
    expect(resumed.events.filter((event) => event.data.startsWith('b')).map((event) => event.data)).toEqual([
      'b2',
      'b3',
      'b4',
    ]);
    expect(resumed.events.at(-1)?.id).toBe(`${a4},${b4}`);
    // Live after the replay, with the other topic's position carried along.
    const [a5] = await publishAll(main.url, a, ['a5']);
    await resumed.waitForCount(6);
    expect(resumed.events[5]).toEqual({ id: `${a5},${b4}`, event: 'message', data: 'a5' });
    expect(resumed.events).toHaveLength(6);

    // A resume point taken before b existed replays all of b and only the rest of a.
    const fromOrigin = collect(eventsUrl(main.url, [a, b]), { lastEventId: `${a2},:0-0`, lastEventIdVia: 'query' });
    await fromOrigin.waitForCount(7);
    expect(fromOrigin.events.map((event) => event.data).sort()).toEqual(['a3', 'a4', 'a5', 'b1', 'b2', 'b3', 'b4']);
    expect(fromOrigin.events.some((event) => event.event === 'gateway.reset')).toBe(false);
  });

  it('a duplicated topic counts once and takes a single-position id', async () => {
    const topic = 'multi/duplicate';
    const client = collect(eventsUrl(main.url, [topic, topic]));
    await client.waitForOpen();
    const [id] = await publishAll(main.url, topic, ['x']);
    await client.waitForCount(1);
    expect(client.events[0]?.id).toBe(id);
  });
});

describe('reset events', () => {
  let short: TestGateway;
  beforeAll(async () => {
    short = await gatewayWith({ historyMaxLength: 5 });
  });

  it('resuming from a trimmed id starts with gateway.reset "trimmed", then the history that is left, then live', async () => {
    const topic = 'reset/trimmed';
    const ids = await publishAll(short.url, topic, range(0, 20).map(String));
    const client = collect(eventsUrl(short.url, topic), { lastEventId: ids[2] });
    await client.waitForCount(6);
    expect(resetData(client.events[0])).toEqual({ topic, reason: 'trimmed' });
    // The reset's id is the newest trimmed position: resuming from it is exact.
    expect(client.events[0]?.id).toBe(ids[14]);
    expect(client.events.slice(1).map((event) => event.data)).toEqual(['15', '16', '17', '18', '19']);
    expect(client.events.slice(1).map((event) => event.id)).toEqual(ids.slice(15));
    const [live] = await publishAll(short.url, topic, ['20']);
    await client.waitForCount(7);
    expect(client.events[6]).toEqual({ id: live, event: 'message', data: '20' });
    expect(client.events).toHaveLength(7);
  });

  it('an engine gap notice (events lost while the Redis subscriber was away) reaches live clients as a reset', async () => {
    const topic = 'reset/gap';
    const ids = await publishAll(short.url, topic, ['0', '1']);
    const single = collect(eventsUrl(short.url, topic));
    const multi = collect(eventsUrl(short.url, [topic, 'reset/gap-other']));
    await single.waitForOpen();
    await multi.waitForOpen();
    const [live] = await publishAll(short.url, topic, ['2']);
    await single.waitForCount(1);
    await multi.waitForCount(1);
    // What the Redis engine reports when a refill finds the missed events trimmed away.
    const gapAt = { epoch: live?.split(':')[0] ?? '', ms: Number.MAX_SAFE_INTEGER - 1, seq: 0 };
    short.gateway.hub.onGap(topic, 'trimmed', gapAt);
    await single.waitForCount(2);
    await multi.waitForCount(2);
    expect(single.events[1]).toMatchObject({ event: 'gateway.reset', id: `${gapAt.epoch}:${gapAt.ms}-0` });
    expect(resetData(single.events[1])).toEqual({ topic, reason: 'trimmed' });
    // The multi-topic id moves only this topic's position.
    expect(multi.events[1]?.id.split(',')[0]).toBe(`${gapAt.epoch}:${gapAt.ms}-0`);
    expect(ids).toHaveLength(2);
  });

  it('resuming from the reset id or from inside history gives no reset', async () => {
    const topic = 'reset/exact';
    const ids = await publishAll(short.url, topic, range(0, 20).map(String));
    const fromReset = collect(eventsUrl(short.url, topic), { lastEventId: ids[14] });
    const fromInside = collect(eventsUrl(short.url, topic), { lastEventId: ids[16] });
    await fromReset.waitForCount(5);
    await fromInside.waitForCount(3);
    expect(fromReset.events.map((event) => event.data)).toEqual(['15', '16', '17', '18', '19']);
    expect(fromInside.events.map((event) => event.data)).toEqual(['17', '18', '19']);
  });

  it('an id from another epoch (a lost or recreated history) gets gateway.reset "stream-lost", then all history', async () => {
    const topic = 'reset/stale-epoch';
    const ids = await publishAll(main.url, topic, ['0', '1', '2']);
    const epoch = ids[0]?.split(':')[0] ?? '';
    const stale = `${epoch === 'zzzz' ? 'yyyy' : 'zzzz'}:1700000000000-0`;
    const client = collect(eventsUrl(main.url, topic), { lastEventId: stale });
    await client.waitForCount(4);
    expect(resetData(client.events[0])).toEqual({ topic, reason: 'stream-lost' });
    expect(client.events[0]?.id).toBe(`${epoch}:0-0`);
    expect(client.events.slice(1).map((event) => event.data)).toEqual(['0', '1', '2']);
    expect(client.events.slice(1).map((event) => event.id)).toEqual(ids);
  });

  it('a stale id of a topic without history gets "stream-lost", then live events', async () => {
    const topic = 'reset/stale-empty';
    const client = collect(eventsUrl(main.url, topic), { lastEventId: 'abc:1700000000000-3' });
    await client.waitForCount(1);
    expect(resetData(client.events[0])).toEqual({ topic, reason: 'stream-lost' });
    const [id] = await publishAll(main.url, topic, ['first']);
    await client.waitForCount(2);
    expect(client.events[1]).toEqual({ id, event: 'message', data: 'first' });
  });

  it('an id ahead of history gets gateway.reset "ahead", then live events', async () => {
    const topic = 'reset/ahead';
    const ids = await publishAll(main.url, topic, ['0', '1']);
    const epoch = ids[0]?.split(':')[0] ?? '';
    const client = collect(eventsUrl(main.url, topic), { lastEventId: `${epoch}:9999999999999-0` });
    await client.waitForCount(1);
    expect(resetData(client.events[0])).toEqual({ topic, reason: 'ahead' });
    expect(client.events[0]?.id).toBe(ids[1]);
    const [id] = await publishAll(main.url, topic, ['2']);
    await client.waitForCount(2);
    expect(client.events[1]).toEqual({ id, event: 'message', data: '2' });
    expect(client.events).toHaveLength(2);
  });
});

describe('retry and heartbeat lines', () => {
  let beating: TestGateway;
  beforeAll(async () => {
    beating = await gatewayWith({ heartbeatMs: 200, retryMs: 1000, retryJitter: 0.5 });
  });

  const retryValues = (text: string) => [...text.matchAll(/^retry: (\d+)$/gm)].map((match) => Number(match[1]));

  it('starts every stream with a retry line jittered within [retryMs, retryMs * (1 + jitter)]', async () => {
    const streams = await Promise.all(range(0, 8).map(() => rawStream(eventsUrl(beating.url, 'beat/retry'))));
    const values: number[] = [];
    for (const stream of streams) {
      await waitFor(() => /^retry: \d+\n\n/.test(stream.text), { what: 'the retry line' });
      const first = /^retry: (\d+)\n\n/.exec(stream.text);
      const value = Number(first?.[1]);
      expect(value).toBeGreaterThanOrEqual(1000);
      expect(value).toBeLessThanOrEqual(1500);
      values.push(value);
    }
    // Jitter: eight connections do not all get the same hint.
    expect(new Set(values).size).toBeGreaterThan(1);
  });

  it('sends comment heartbeats on an idle stream', async () => {
    const stream = await rawStream(eventsUrl(beating.url, 'beat/idle'));
    await waitFor(() => countOf(stream.text, ':\n\n') >= 3, { what: 'three heartbeats', timeoutMs: 15_000 });
    expect(stream.text).toMatch(/^retry: \d+\n\n(:\n\n)+$/);
    expect(stream.ended).toBe(false);
  });

  it('gateway.setRetry sends every open stream a new retry line', async () => {
    const stream = await rawStream(eventsUrl(beating.url, 'beat/set-retry'));
    await waitFor(() => retryValues(stream.text).length === 1, { what: 'the first retry line' });
    beating.gateway.setRetry(5000);
    await waitFor(() => retryValues(stream.text).length === 2, { what: 'a second retry line' });
    const second = retryValues(stream.text)[1] ?? 0;
    expect(second).toBeGreaterThanOrEqual(5000);
    expect(second).toBeLessThanOrEqual(7500);
    // Still a valid stream: an event after it is delivered.
    await publishAll(beating.url, 'beat/set-retry', ['after']);
    await waitFor(() => stream.text.includes('data: after\n\n'), { what: 'the event after setRetry' });
  });
});

describe('response headers and CORS', () => {
  const allowed = 'https://app.example.com';
  let cors: TestGateway;
  let anyOrigin: TestGateway;
  beforeAll(async () => {
    cors = await gatewayWith({
      responseHeaders: { 'X-Frame-Options': 'DENY', 'X-Custom-Header': 'hello' },
      corsOrigins: [allowed],
    });
    anyOrigin = await gatewayWith({ corsOrigins: ['*'] });
  });

  it('stream headers stop proxies from buffering or transforming, plus the configured custom headers', async () => {
    const stream = await rawStream(eventsUrl(cors.url, 'headers/a'));
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream\b/);
    expect(stream.headers.get('cache-control')).toBe('no-cache, no-transform');
    expect(stream.headers.get('x-accel-buffering')).toBe('no');
    expect(stream.headers.get('content-encoding')).toBeNull();
    expect(stream.headers.get('content-length')).toBeNull();
    expect(stream.headers.get('x-frame-options')).toBe('DENY');
    expect(stream.headers.get('x-custom-header')).toBe('hello');
    // No Origin header: no CORS headers.
    expect(stream.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('an allowed origin gets its own origin back with credentials', async () => {
    const stream = await rawStream(eventsUrl(cors.url, 'headers/a'), { origin: allowed });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('access-control-allow-origin')).toBe(allowed);
    expect(stream.headers.get('access-control-allow-credentials')).toBe('true');
    expect(stream.headers.get('vary') ?? '').toMatch(/origin/i);
  });

  it('a disallowed origin gets the stream without any CORS header', async () => {
    const stream = await rawStream(eventsUrl(cors.url, 'headers/a'), { origin: 'https://evil.example.com' });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('access-control-allow-origin')).toBeNull();
    expect(stream.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('a preflight from an allowed origin is 204 with the allowed methods and headers', async () => {
    const response = await fetch(eventsUrl(cors.url, 'headers/a'), {
      method: 'OPTIONS',
      headers: {
        origin: allowed,
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'last-event-id',
      },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe(allowed);
    expect(response.headers.get('access-control-allow-credentials')).toBe('true');
    expect(response.headers.get('access-control-allow-methods')).toMatch(/GET/);
    expect(response.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('last-event-id');
  });

  it('a preflight from a disallowed origin is 403 with a JSON error', async () => {
    const response = await getJson<{ error: { code: string; message: string } }>(eventsUrl(cors.url, 'headers/a'), {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'GET' },
    });
    expect(response.status).toBe(403);
    expect(response.headers.get('content-type')).toMatch(/application\/json/);
    expect(response.body.error.code).toBe('origin_not_allowed');
    expect(response.body.error.message).toEqual(expect.any(String));
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('publish answers carry the CORS headers of an allowed origin', async () => {
    const response = await publish(cors.url, { topic: 'headers/a', data: 'x' }, { origin: allowed });
    expect(response.status).toBe(200);
    expect(response.headers.get('access-control-allow-origin')).toBe(allowed);
  });

  it('"*" allows any origin without credentials', async () => {
    const stream = await rawStream(eventsUrl(anyOrigin.url, 'headers/any'), { origin: 'https://anywhere.example' });
    expect(stream.headers.get('access-control-allow-origin')).toBe('*');
    expect(stream.headers.get('access-control-allow-credentials')).toBeNull();
  });
});

describe('HTTP/1.1 framing', () => {
  it('a stream is delimited by its connection: Connection: close, no chunked framing in the body', async () => {
    const { port } = new URL(main.url);
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    let bytes = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      bytes += chunk;
    });
    socket.write('GET /events?topic=framing/a HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n');
    await waitFor(() => bytes.includes('retry:'), { what: 'the stream head and retry hint' });
    await publishAll(main.url, 'framing/a', ['one', 'two', 'three']);
    await waitFor(() => bytes.includes('data: three\n\n'), { what: 'three events' });
    socket.destroy();
    const [head, body] = bytes.split('\r\n\r\n') as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head).toMatch(/\r\nConnection: close(\r\n|$)/i);
    expect(head).not.toMatch(/transfer-encoding/i);
    // Nothing but SSE lines: no chunk-size line, no CRLF.
    expect(body).not.toContain('\r');
    expect(body).toMatch(/^retry: \d+\n\nid: \S+\ndata: one\n\nid: \S+\ndata: two\n\nid: \S+\ndata: three\n\n$/);
  });
});

/** A raw exchange with the gateway at `base` (support/raw-socket.ts). */
const rawHttp = (base: string, parts: readonly string[], done?: (text: string) => boolean) =>
  rawExchange(Number(new URL(base).port), parts, done ? { done } : {});

/** A head without its Date line (the only field that differs between two answers a second apart). */
const withoutDate = (head: string) => head.replace(/\r\nDate: [^\r]*/i, '');

describe('the socket fast path and node:http answer alike', () => {
  // A plain head: served on the socket itself. With an (empty) body announced, the fast path's head
  // reader declines it and node:http reads it: the same request through the other path, every time.
  const plain = (request: string) => [request];
  const viaNode = (request: string) => [request.replace('\r\n\r\n', '\r\nContent-Length: 0\r\n\r\n')];
  const request = (target: string, fields: readonly string[] = []) =>
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;

  it('the same stream head and bytes, whichever path reads the request', async () => {
    const topic = 'paths/stream';
    const open = (parts: string[]) => rawHttp(main.url, parts, (bytes) => bytes.includes('data: two\n\n'));
    const streams = [
      open(plain(request(`/events?topic=${topic}`))),
      open(viaNode(request(`/events?topic=${topic}`))),
    ] as const;
    await waitFor(async () => (await stats(main.adminUrl, [topic])).consumers[topic] === 2, {
      what: 'both streams attached',
    });
    await publishAll(main.url, topic, ['one', 'two']);
    const [fast, node] = await Promise.all(streams);
    for (const { socket } of [fast, node]) socket.destroy();
    expect(fast.head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(fast.head).toMatch(/\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
    expect(withoutDate(fast.head)).toBe(withoutDate(node.head));
    expect(fast.body.replace(/id: \S+/g, 'id')).toBe(node.body.replace(/id: \S+/g, 'id'));
    expect(fast.body).toMatch(/^retry: \d+\n\nid: \S+\ndata: one\n\nid: \S+\ndata: two\n\n$/);
  });

  it('the same JSON error, with CORS and security headers, and the connection ends', async () => {
    const cors = await gatewayWith({ corsOrigins: ['https://app.example'] });
    const bad = request('/events?topic=bad%20topic', ['Origin: https://app.example']);
    const answered = (bytes: string) => bytes.endsWith('}}');
    const [fast, node] = await Promise.all([
      rawHttp(cors.url, plain(bad), answered),
      rawHttp(cors.url, viaNode(bad), answered),
    ]);
    node.socket.destroy();
    await waitFor(() => fast.socket.destroyed, { what: 'the fast path to end the connection' });
    expect(fast.head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(fast.head).toMatch(/\r\naccess-control-allow-origin: https:\/\/app\.example\r\n/i);
    expect(fast.head).toMatch(/\r\nx-content-type-options: nosniff\r\n/i);
    expect(fast.head).toMatch(/\r\ncontent-type: application\/json\r\n/i);
    expect(JSON.parse(fast.body)).toEqual({ error: { code: 'invalid_topic', message: expect.any(String) } });
    expect(fast.body).toBe(node.body);
    const fields = (head: string) =>
      withoutDate(head)
        .split('\r\n')
        .filter((line) => !/^(connection|keep-alive):/i.test(line))
        .sort();
    expect(fields(fast.head)).toEqual(fields(node.head));
  });

  it('what the fast path leaves to node:http still streams: HTTP/1.0, 120 header fields, a pipelined request first', async () => {
    const topic = 'paths/fallback';
    const got = (bytes: string) => bytes.includes('data: hello\n\n');
    const streams = [
      rawHttp(main.url, [`GET /events?topic=${topic} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n`], got),
      rawHttp(
        main.url,
        plain(
          request(
            `/events?topic=${topic}`,
            range(0, 120).map((i) => `X-Field-${i}: ${i}`),
          ),
        ),
        got,
      ),
      rawHttp(main.url, [`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n${request(`/events?topic=${topic}`)}`], got),
    ];
    await waitFor(async () => (await stats(main.adminUrl, [topic])).consumers[topic] === 3, {
      what: 'three streams attached',
    });
    await publishAll(main.url, topic, ['hello']);
    for (const stream of await Promise.all(streams)) {
      stream.socket.destroy();
      expect(stream.body).toContain('data: hello\n\n');
    }
  });
});

describe('/stats', () => {
  it('counts consumers per topic and connections in total, and forgets closed ones', async () => {
    const counted = await gatewayWith();
    const one = collect(eventsUrl(counted.url, 'stats/a'));
    const two = collect(eventsUrl(counted.url, 'stats/a'));
    const both = collect(eventsUrl(counted.url, ['stats/a', 'stats/b']));
    await Promise.all([one.waitForOpen(), two.waitForOpen(), both.waitForOpen()]);
    expect(await stats(counted.adminUrl, ['stats/a', 'stats/b', 'stats/none'])).toMatchObject({
      connections: 3,
      topics: 2,
      consumers: { 'stats/a': 3, 'stats/b': 1, 'stats/none': 0 },
    });
    both.close();
    await waitFor(async () => (await stats(counted.adminUrl)).connections === 2, { what: 'two connections left' });
    expect(await stats(counted.adminUrl, ['stats/a', 'stats/b'])).toMatchObject({
      connections: 2,
      topics: 1,
      consumers: { 'stats/a': 2, 'stats/b': 0 },
    });
    one.close();
    two.close();
    await waitFor(async () => (await stats(counted.adminUrl)).connections === 0, { what: 'no connection left' });
    expect((await stats(counted.adminUrl)).topics).toBe(0);
  });
});

describe('gzip', () => {
  interface GzipStream {
    readonly response: IncomingMessage;
    readonly text: () => string;
    close(): void;
  }

  /** GET with node:http (no automatic decompression), inflating the body as it arrives when gzipped. */
  function openStream(url: string, headers: Record<string, string>): Promise<GzipStream> {
    return new Promise((resolve, reject) => {
      const request = httpGet(url, { headers: { accept: 'text/event-stream', ...headers } }, (response) => {
        let text = '';
        const body = response.headers['content-encoding'] === 'gzip' ? response.pipe(createGunzip()) : response;
        body.setEncoding('utf8');
        body.on('data', (chunk: string) => {
          text += chunk;
        });
        body.on('error', () => {});
        resolve({ response, text: () => text, close: () => request.destroy() });
      });
      request.on('error', reject);
    });
  }

  let zipped: TestGateway;
  const opened: GzipStream[] = [];
  beforeAll(async () => {
    // No heartbeat within the test's lifetime: the exact-bytes assertion below holds even on a slow machine.
    zipped = await gatewayWith({ gzip: true, heartbeatMs: 3_600_000 });
  });
  afterEach(() => {
    for (const stream of opened.splice(0)) stream.close();
  });

  it('gzips the stream for a client that accepts it, flushing every event while the stream stays open', async () => {
    const topic = 'gzip/on';
    const stream = await openStream(eventsUrl(zipped.url, topic), { 'accept-encoding': 'gzip' });
    opened.push(stream);
    expect(stream.response.statusCode).toBe(200);
    expect(stream.response.headers['content-encoding']).toBe('gzip');
    expect(stream.response.headers.vary ?? '').toMatch(/accept-encoding/i);
    await waitFor(() => stream.text().startsWith('retry: '), { what: 'the inflated retry line' });
    for (const word of ['one', 'two', 'three']) {
      await publishAll(zipped.url, topic, [word]);
      await waitFor(() => stream.text().includes(`data: ${word}\n\n`), { what: `the inflated event "${word}"` });
      expect(stream.response.complete).toBe(false);
    }
    expect(stream.text()).toMatch(
      /^retry: \d+\n\nid: \S+\ndata: one\n\nid: \S+\ndata: two\n\nid: \S+\ndata: three\n\n$/,
    );
  });

  it('does not gzip for a client that does not accept it', async () => {
    const stream = await openStream(eventsUrl(zipped.url, 'gzip/plain'), { 'accept-encoding': 'identity' });
    opened.push(stream);
    expect(stream.response.headers['content-encoding']).toBeUndefined();
    await waitFor(() => stream.text().startsWith('retry: '), { what: 'the plain retry line' });
  });

  it('does not gzip when gzip is off, even if the client accepts it', async () => {
    const stream = await openStream(eventsUrl(main.url, 'gzip/off'), { 'accept-encoding': 'gzip, deflate, br' });
    opened.push(stream);
    expect(stream.response.headers['content-encoding']).toBeUndefined();
    await publishAll(main.url, 'gzip/off', ['plain']);
    await waitFor(() => stream.text().includes('data: plain\n\n'), { what: 'the plain event' });
  });

  it('an EventSource (fetch decompresses) receives live events over a gzipped stream', async () => {
    const topic = 'gzip/eventsource';
    const client = collect(eventsUrl(zipped.url, topic));
    await client.waitForOpen();
    const ids = await publishAll(zipped.url, topic, range(0, 200).map(String));
    await client.waitForCount(200);
    expect(client.events.map((event) => event.id)).toEqual(ids);
    expect(numbers(client.events)).toEqual(range(0, 200));
  });
});
