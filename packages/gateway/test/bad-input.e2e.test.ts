/// <reference types="node" />
/**
 * Every rejected request gets a 4xx and a JSON body `{ "error": { code, message } }`, and no input stops
 * the gateway from serving a subscriber that was connected all along.
 */
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Collector,
  closeAllCollectors,
  collect,
  eventsUrl,
  type JsonResponse,
  publish,
  publishAll,
  readJson,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { withDeadline } from './support/wait.js';

interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

const MAX_BODY_BYTES = 8 * 1024;
const MAX_PAYLOAD_BYTES = 1024;
const TOPIC = 'bad-input/witness';

let gateway: TestGateway;
let witness: Collector;
let witnessed = 0;

beforeAll(async () => {
  gateway = await startTestGateway({
    maxBodyBytes: MAX_BODY_BYTES,
    maxPayloadBytes: MAX_PAYLOAD_BYTES,
    maxBatchSize: 10,
    maxTopicsPerConnection: 4,
    corsOrigins: ['https://app.example.com'],
  });
  witness = collect(eventsUrl(gateway.url, TOPIC));
  await witness.waitForOpen();
});

afterAll(async () => {
  closeAllCollectors();
  await gateway?.close();
});

/** Asserts the error shape and that the connected subscriber still gets a fresh event. */
async function expectRejected(
  response: JsonResponse<unknown>,
  status: number,
  code: string,
): Promise<ErrorBody['error']> {
  expect(response.status, `status of a request answered ${response.text.slice(0, 200)}`).toBe(status);
  expect(response.headers.get('content-type') ?? '(none)', `content type of ${JSON.stringify(response.text)}`).toMatch(
    /^application\/json/,
  );
  const body = response.body as ErrorBody;
  expect(body).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(0);
  // The gateway is still serving: the subscriber connected before gets the next event.
  const [id] = await publishAll(gateway.url, TOPIC, [`still-alive-${witnessed}`]);
  witnessed++;
  await witness.waitForCount(witnessed);
  expect(witness.events.at(-1)).toEqual({ id, event: 'message', data: `still-alive-${witnessed - 1}` });
  return body.error;
}

async function getEvents(query: string, headers: Record<string, string> = {}): Promise<JsonResponse<unknown>> {
  return readJson(
    await fetch(`${gateway.url}/events${query}`, { headers: { accept: 'text/event-stream', ...headers } }),
  );
}

describe('GET /events', () => {
  it('without a topic: 400 missing_topic', async () => {
    await expectRejected(await getEvents(''), 400, 'missing_topic');
    await expectRejected(await getEvents('?lastEventId=abc:1-0'), 400, 'missing_topic');
  });

  it('with an empty topic: 400 invalid_topic', async () => {
    await expectRejected(await getEvents('?topic='), 400, 'invalid_topic');
    await expectRejected(await getEvents('?topic=ok&topic='), 400, 'invalid_topic');
  });

  it('with a topic longer than 200 characters: 400 invalid_topic', async () => {
    await expectRejected(await getEvents(`?topic=${'a'.repeat(201)}`), 400, 'invalid_topic');
    await expectRejected(await getEvents(`?topic=${'a'.repeat(10_000)}`), 400, 'invalid_topic');
  });

  it.each([
    ['a space', 'a%20b'],
    ['a comma (the id separator)', 'a%2Cb'],
    ['a hash tag', '%7Ba%7D'],
    ['a wildcard', 'orders%2F*'],
    ['a control character', 'a%00b'],
    ['a newline', 'a%0Ab'],
    ['non-ASCII', 'caf%C3%A9'],
    ['malformed percent-encoding', '%E0%A4%A'],
    ['a bare percent sign', '100%'],
  ])('with a topic holding %s: 400 invalid_topic', async (_what, encoded) => {
    await expectRejected(await getEvents(`?topic=${encoded}`), 400, 'invalid_topic');
  });

  it('with more topics than maxTopicsPerConnection: 400 too_many_topics', async () => {
    const query = ['a', 'b', 'c', 'd', 'e'].map((topic) => `topic=${topic}`).join('&');
    await expectRejected(await getEvents(`?${query}`), 400, 'too_many_topics');
    // Duplicates count once: four distinct topics are fine.
    const fine = await fetch(`${gateway.url}/events?topic=a&topic=b&topic=c&topic=d&topic=a`);
    expect(fine.status).toBe(200);
    await fine.body?.cancel();
  });

  it.each([
    ['garbage', 'not-an-id'],
    ['no colon', '1700000000000-0'],
    ['no sequence', 'abc:1700000000000'],
    ['an upper-case epoch', 'ABC:1-0'],
    ['an epoch longer than 16 characters', `${'a'.repeat(17)}:1-0`],
    ['a negative number', 'abc:-1-0'],
    ['a number beyond 2^53', 'abc:99999999999999999-0'],
    ['spaces', 'abc: 1-0'],
    ['an oversized value', `abc:1-${'0'.repeat(5000)}`],
  ])('with a Last-Event-ID holding %s: 400 invalid_last_event_id', async (_what, id) => {
    await expectRejected(await getEvents('?topic=x', { 'last-event-id': id }), 400, 'invalid_last_event_id');
    await expectRejected(
      await getEvents(`?topic=x&lastEventId=${encodeURIComponent(id)}`),
      400,
      'invalid_last_event_id',
    );
  });

  it('with a Last-Event-ID of the wrong number of positions: 400 invalid_last_event_id', async () => {
    await expectRejected(
      await getEvents('?topic=x', { 'last-event-id': 'abc:1-0,abc:2-0' }),
      400,
      'invalid_last_event_id',
    );
    await expectRejected(
      await getEvents('?topic=x&topic=y', { 'last-event-id': 'abc:1-0' }),
      400,
      'invalid_last_event_id',
    );
    await expectRejected(
      await getEvents('?topic=x&topic=y', { 'last-event-id': 'abc:1-0,abc:2-0,abc:3-0' }),
      400,
      'invalid_last_event_id',
    );
    await expectRejected(await getEvents('?topic=x&topic=y', { 'last-event-id': ',' }), 400, 'invalid_last_event_id');
  });
});

describe('POST /publish', () => {
  const post = (body: string | unknown, headers: Record<string, string> = {}) =>
    publish<unknown>(gateway.url, body, headers);

  it('with a body that is not declared JSON: 415 json_required (text/plain, a form, none)', async () => {
    const body = '{"topic":"bad/type","data":"x"}';
    for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
      await expectRejected(await post(body, { 'content-type': type }), 415, 'json_required');
    }
    const untyped = await fetch(new URL('/publish', gateway.url), { method: 'POST', body: new Blob([body]) });
    await expectRejected(await readJson(untyped), 415, 'json_required');
  });

  it('with invalid JSON: 400 invalid_json', async () => {
    await expectRejected(await post('{"topic":'), 400, 'invalid_json');
    await expectRejected(await post(''), 400, 'invalid_json');
    await expectRejected(await post('\u0000'), 400, 'invalid_json');
  });

  it.each([
    ['a number', '42'],
    ['a string', '"hello"'],
    ['null', 'null'],
    ['true', 'true'],
    ['an array holding a non-object', '[{"topic":"a","data":"x"}, 5]'],
    ['a nested array', '[[{"topic":"a","data":"x"}]]'],
  ])('with %s instead of an event object: 400 invalid_body', async (_what, body) => {
    await expectRejected(await post(body), 400, 'invalid_body');
  });

  it('with an empty batch: 400 empty_batch', async () => {
    await expectRejected(await post('[]'), 400, 'empty_batch');
  });

  it('with a batch over maxBatchSize: 413 batch_too_large', async () => {
    const batch = Array.from({ length: 11 }, (_, n) => ({ topic: 'a', data: String(n) }));
    await expectRejected(await post(batch), 413, 'batch_too_large');
  });

  it('with a body over maxBodyBytes: 413 body_too_large (declared length and chunked)', async () => {
    const big = JSON.stringify({ topic: 'a', data: 'x'.repeat(MAX_BODY_BYTES) });
    await expectRejected(await post(big), 413, 'body_too_large');
    // Without Content-Length (chunked), the limit holds while streaming.
    const chunked = await new Promise<JsonResponse<unknown>>((resolve, reject) => {
      const request = httpRequest(
        `${gateway.url}/publish`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            text += chunk;
          });
          response.on('end', () => {
            const headers = new Headers();
            for (const [name, value] of Object.entries(response.headers)) {
              if (typeof value === 'string') headers.set(name, value);
            }
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch {
              body = undefined;
            }
            resolve({ status: response.statusCode ?? 0, headers, body, text });
          });
        },
      );
      request.on('error', reject);
      for (let at = 0; at < big.length; at += 1024) request.write(big.slice(at, at + 1024));
      request.end();
    });
    await expectRejected(chunked, 413, 'body_too_large');
  });

  it('with data over maxPayloadBytes: 413 payload_too_large (bytes, not characters)', async () => {
    await expectRejected(await post({ topic: 'a', data: 'x'.repeat(MAX_PAYLOAD_BYTES + 1) }), 413, 'payload_too_large');
    // 400 two-byte characters: 800 bytes fit; 600 (1200 bytes) do not.
    expect((await post({ topic: 'a', data: 'é'.repeat(400) })).status).toBe(200);
    await expectRejected(await post({ topic: 'a', data: 'é'.repeat(600) }), 413, 'payload_too_large');
    // JSON data counts by its serialised size.
    await expectRejected(
      await post({ topic: 'a', data: { text: 'x'.repeat(MAX_PAYLOAD_BYTES) } }),
      413,
      'payload_too_large',
    );
  });

  it.each([
    ['a CR', 'tick\rdata: forged'],
    ['a LF', 'tick\ndata: forged'],
    ['a CRLF', 'tick\r\nid: 1'],
    ['a NUL', 'tick\u0000'],
    ['the reserved gateway. prefix', 'gateway.reset'],
    ['the reserved prefix alone', 'gateway.'],
    ['nothing', ''],
    ['more than 128 characters', 'e'.repeat(129)],
    ['a number', 5],
  ])('with an event name holding %s: 400 invalid_event', async (_what, event) => {
    await expectRejected(await post({ topic: 'a', event, data: 'x' }), 400, 'invalid_event');
  });

  it('with an unknown field: 400 unknown_field', async () => {
    const error = await expectRejected(await post({ topic: 'a', data: 'x', retry: 5 }), 400, 'unknown_field');
    expect(error.message).toContain('retry');
    await expectRejected(
      await post([
        { topic: 'a', data: 'x' },
        { topic: 'a', id: '1', data: 'x' },
      ]),
      400,
      'unknown_field',
    );
  });

  it('with a missing or invalid topic: 400 invalid_topic', async () => {
    await expectRejected(await post({ data: 'x' }), 400, 'invalid_topic');
    await expectRejected(await post({ topic: 7, data: 'x' }), 400, 'invalid_topic');
    await expectRejected(await post({ topic: 'a b', data: 'x' }), 400, 'invalid_topic');
    await expectRejected(await post({ topic: '', data: 'x' }), 400, 'invalid_topic');
  });

  it('a batch with one bad event stores none of it', async () => {
    const topic = 'bad-input/atomic';
    const probe = collect(eventsUrl(gateway.url, topic));
    await probe.waitForOpen();
    await expectRejected(
      await post([
        { topic, data: 'first' },
        { topic, event: 'gateway.reset', data: 'forged' },
      ]),
      400,
      'invalid_event',
    );
    await publishAll(gateway.url, topic, ['after']);
    await probe.waitForCount(1);
    expect(probe.events.map((event) => event.data)).toEqual(['after']);
    probe.close();
  });
});

describe('requests refused by the HTTP parser itself', () => {
  /** Writes raw bytes on a fresh socket and resolves with everything the gateway answered before closing. */
  async function rawExchange(bytes: string): Promise<string> {
    const { port } = new URL(gateway.url);
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('error', () => {});
    const closed = once(socket, 'close');
    socket.write(bytes);
    await withDeadline(closed, { what: 'the gateway to answer and close' });
    return answer;
  }

  function parseRaw(answer: string): JsonResponse<unknown> {
    const [head = '', text = ''] = answer.split('\r\n\r\n', 2);
    const [statusLine = '', ...lines] = head.split('\r\n');
    const headers = new Headers();
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: Number(statusLine.split(' ')[1]), headers, body, text };
  }

  // Node answers these before any route runs, with a bare status line and no body (see the report).
  it('a request head over the 16 KiB header limit: 431 with a JSON error body', async () => {
    const answer = await rawExchange(
      `GET /events?topic=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`,
    );
    await expectRejected(parseRaw(answer), 431, 'headers_too_large');
  });

  it('a malformed request line: 400 with a JSON error body', async () => {
    await expectRejected(parseRaw(await rawExchange('NOT HTTP AT ALL\r\n\r\n')), 400, 'bad_request');
  });
});

describe('security headers', () => {
  it('every non-stream answer carries nosniff, DENY framing and no-referrer; the demo page a CSP', async () => {
    for (const path of ['/healthz', '/readyz', '/stats', '/nope', '/events', '/demo']) {
      const response = await fetch(`${gateway.url}${path}`);
      await response.body?.cancel();
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(response.headers.get('x-frame-options'), path).toBe('DENY');
      expect(response.headers.get('referrer-policy'), path).toBe('no-referrer');
    }
    const demo = await fetch(`${gateway.url}/demo`);
    await demo.body?.cancel();
    expect(demo.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
  });
});

describe('methods, routes and CORS', () => {
  it.each([
    ['POST', '/events', 'GET, OPTIONS'],
    ['PUT', '/events', 'GET, OPTIONS'],
    ['GET', '/publish', 'POST, OPTIONS'],
    ['DELETE', '/publish', 'POST, OPTIONS'],
    ['POST', '/healthz', 'GET, OPTIONS'],
    ['POST', '/readyz', 'GET, OPTIONS'],
  ])('%s %s: 405 method_not_allowed with Allow', async (method, path, allow) => {
    const response = await readJson(
      await fetch(`${gateway.url}${path}?topic=x`, { method, body: method === 'GET' ? undefined : '{}' }),
    );
    await expectRejected(response, 405, 'method_not_allowed');
    expect(response.headers.get('allow')).toBe(allow);
  });

  it.each(['/', '/nope', '/events/extra', '/publish/', '/%2e%2e/etc/passwd'])('GET %s: 404 not_found', async (path) => {
    await expectRejected(await readJson(await fetch(`${gateway.url}${path}`)), 404, 'not_found');
  });

  it('OPTIONS without an allowed origin: 403 origin_not_allowed', async () => {
    await expectRejected(
      await readJson(await fetch(`${gateway.url}/events`, { method: 'OPTIONS' })),
      403,
      'origin_not_allowed',
    );
    await expectRejected(
      await readJson(
        await fetch(`${gateway.url}/publish`, { method: 'OPTIONS', headers: { origin: 'https://evil.example.com' } }),
      ),
      403,
      'origin_not_allowed',
    );
  });

  it('the witness subscriber saw every probe event on a single connection', () => {
    expect(witness.events).toHaveLength(witnessed);
    expect(witness.opens).toBe(1);
    expect(witness.events.map((event) => event.data)).toEqual(
      Array.from({ length: witnessed }, (_, n) => `still-alive-${n}`),
    );
  });
});
