/// <reference types="node" />
/**
 * A bounded, deterministic fuzz of the HTTP surface of a gateway with auth on, over real sockets:
 * random methods, paths, query strings, headers and bodies. Whatever arrives, the gateway never answers
 * 5xx (503 only as a documented JSON error), every 4xx carries `{ "error": { code, message } }`, nothing is
 * logged as an error, no stream leaks, and a subscriber connected all along receives every event published
 * meanwhile, in order, on its first connection.
 *
 * Requests the HTTP parser or the hono adapter refuse before the app sees them (a backslash in the path,
 * a bad Host) are kept out of the random mix and checked one by one below, so a failure names its cause.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configWith } from '../src/config.js';
import { type Gateway, startGateway } from '../src/gateway.js';
import { type Collector, closeAllCollectors, collect, eventsUrl } from './support/gateway.js';
import { waitFor, withDeadline } from './support/wait.js';

const SEED = 20_260_527;
const RUNS = 600;
/** A witness event is published after every this many fuzz requests. */
const PUBLISH_EVERY = 10;
const SECRET = 'fuzz-e2e-secret-0123456789-abcdefghijklmnopq';
const ORIGIN = 'https://app.example.com';
const WITNESS_TOPIC = 'witness/main';
const MAX_BODY_BYTES = 16 * 1024;
/** 503s the gateway documents (all JSON, all with Retry-After). */
const DOCUMENTED_503 = new Set(['engine_unavailable', 'draining', 'node_full', 'rate_limited']);

// ---------------------------------------------------------------------------------------------------
// The gateway under test, with a log we can read
// ---------------------------------------------------------------------------------------------------

const logLines: string[] = [];
let gateway: Gateway;
let witness: Collector;
let publisherToken: string;
let fuzzToken: string;
const tickets: string[] = [];
const tokens: Record<string, string> = {};

function sign(payload: Record<string, unknown>, expSeconds = 3600, secret = SECRET): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expSeconds)
    .sign(new TextEncoder().encode(secret));
}

/** Log lines at level error (50) or fatal (60) since `from`. */
function errorLogs(from = 0): string[] {
  return logLines.slice(from).filter((line) => {
    try {
      return (JSON.parse(line) as { level: number }).level >= 50;
    } catch {
      return true;
    }
  });
}

beforeAll(async () => {
  const config = configWith({
    port: 0,
    host: '127.0.0.1',
    redisUrl: undefined,
    retryMs: 100,
    retryJitter: 0,
    drainMs: 0,
    heartbeatMs: 1000,
    authJwtSecret: SECRET,
    authClockSkewS: 0,
    publicTopics: ['public/**'],
    corsOrigins: [ORIGIN],
    maxBodyBytes: MAX_BODY_BYTES,
    maxPayloadBytes: 4096,
    maxBatchSize: 20,
  });
  const logger = pino({ level: 'warn' }, { write: (line: string) => void logLines.push(line) });
  gateway = await startGateway(config, { logger });

  publisherToken = await sign({ sub: 'publisher', sse: { publish: [WITNESS_TOPIC] } });
  // What the fuzz may use: it can read and write junk/** only, never the witness topic.
  fuzzToken = await sign({ sub: 'fuzzer', sse: { subscribe: ['junk/**', 'public/**'], publish: ['junk/**'] } });
  tokens.fuzz = fuzzToken;
  tokens.expired = await sign({ sub: 'fuzzer', sse: { subscribe: ['**'] } }, -60);
  tokens.otherSecret = await sign({ sse: { subscribe: ['**'], publish: ['**'] } }, 3600, `x${SECRET}`);
  tokens.noGrants = await sign({ sub: 'nobody' });
  tokens.weirdClaims = await sign({ sub: 'a/b', sse: { subscribe: 'user/{sub}/**', publish: [1, null, {}, '**/x'] } });
  for (let i = 0; i < 12; i++) {
    // Tickets are bound to topics: some of the topics the requests below pick.
    const topics = [['junk/1'], ['junk/x/y'], ['public/a', 'junk/1']][i % 3];
    const response = await fetch(`${gateway.url}/tickets`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fuzzToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ topics }),
    });
    if (response.status !== 200) throw new Error(`could not mint a ticket: ${await response.text()}`);
    tickets.push(((await response.json()) as { ticket: string }).ticket);
  }

  witness = collect(eventsUrl(gateway.url, WITNESS_TOPIC), {
    events: ['tick'],
    headers: { authorization: `Bearer ${await sign({ sub: 'witness', sse: { subscribe: [WITNESS_TOPIC] } })}` },
  });
  await witness.waitForOpen();
});

afterAll(async () => {
  closeAllCollectors();
  await gateway?.close(0);
});

// ---------------------------------------------------------------------------------------------------
// Raw-ish HTTP
// ---------------------------------------------------------------------------------------------------

interface FuzzRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | undefined;
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly stream: boolean;
}

/** Sends one request on a fresh connection; a 200 stream is closed as soon as its headers arrive. */
function perform(request: FuzzRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: gateway.port,
        method: request.method,
        path: request.path,
        headers: request.headers,
        agent: false,
      },
      (res) => {
        const stream = /^text\/event-stream/.test(res.headers['content-type'] ?? '');
        if (stream || (request.method === 'HEAD' && res.statusCode === 200)) {
          res.destroy();
          req.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '', stream });
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            stream,
          }),
        );
      },
    );
    // The server may answer (413, 401) and close before the whole body is written: that is fine.
    req.on('error', reject);
    req.end(request.body);
  });
}

/** Percent-encodes every byte of the UTF-8 form of `text` except unreserved characters (lone surrogates too). */
function pct(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const char = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A header value as a client sends unicode: its UTF-8 bytes; bytes HTTP cannot carry become `?`. */
function headerValue(text: string): string {
  return Buffer.from(text, 'utf8')
    .toString('latin1')
    .replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
}

// ---------------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------------

/** Printable ASCII the request line may carry as is (no backslash: see the adapter tests below). */
const RAW_CHARS = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).filter(
  (char) => char !== '\\',
);
const rawArb = (maxLength: number) => fc.string({ unit: fc.constantFrom(...RAW_CHARS), maxLength });

const junkArb = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom(
    '',
    ' ',
    '%',
    '%00',
    '%ZZ',
    '..',
    '/',
    '\u0000',
    '\r\n',
    'null',
    '{}',
    '[]',
    '🙂',
    'é',
    '\uFEFF',
    '\uD800',
    '*',
    '**',
    '{sub}',
  ),
);

const validTopicArb = fc.constantFrom(
  WITNESS_TOPIC,
  'public/a',
  'public/a/b',
  'junk/1',
  'junk/x/y',
  'orders/1',
  'user/fuzzer/x',
);
const topicishArb = fc.oneof(
  { weight: 3, arbitrary: validTopicArb },
  { weight: 3, arbitrary: junkArb },
  { weight: 1, arbitrary: fc.integer({ min: 190, max: 260 }).map((n) => 'junk/'.padEnd(n, 'x')) },
);

const ticketArb = fc.oneof(
  fc.integer({ min: 0, max: 11 }).map((i) => tickets[i] as string),
  fc.constantFrom('fuzz', 'expired', 'otherSecret').map((name) => tokens[name] as string),
  junkArb,
  fc.integer({ min: 8000, max: 9000 }).map((n) => 'a'.repeat(n)),
);

const idArb = fc.oneof(
  fc.stringMatching(/^[0-9a-z]{0,16}:[0-9]{1,16}-[0-9]{1,16}$/),
  fc
    .array(fc.stringMatching(/^[0-9a-z]{0,4}:[0-9]{1,5}-[0-9]{1,3}$/), { minLength: 2, maxLength: 4 })
    .map((ids) => ids.join(',')),
  junkArb,
  fc.integer({ min: 100, max: 3000 }).map((n) => 'é'.repeat(n)),
  fc.integer({ min: 50, max: 3000 }).map((n) => '1'.repeat(n)),
);

const queryArb = fc
  .array(
    fc.tuple(
      fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom('topic', 'ticket', 'lastEventId') },
        { weight: 1, arbitrary: junkArb },
      ),
      fc.oneof(topicishArb, ticketArb, idArb),
      fc.boolean(),
    ),
    { maxLength: 6 },
  )
  .map((params) => {
    if (params.length === 0) return '';
    // Mostly percent-encoded, sometimes raw printable junk (which the parser must survive too).
    return `?${params.map(([name, value, raw]) => `${pct(name)}=${raw ? value.replace(/[^\x21-\x7e]|\\|#/g, '') : pct(value)}`).join('&')}`;
  });

const KNOWN_PATHS = ['/events', '/publish', '/tickets', '/healthz', '/readyz', '/metrics', '/stats', '/demo', '/'];
const pathArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...KNOWN_PATHS, '/events', '/events', '/publish', '/publish', '/tickets') },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '/events/',
      '/EVENTS',
      '//events',
      '/publish/x',
      '/events;x',
      '/%65vents',
      '/./events',
      '/a/../events',
    ),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...KNOWN_PATHS), rawArb(30))
      .map(([path, suffix]) => path + suffix.replace(/[?#]/g, '')),
  },
  { weight: 2, arbitrary: junkArb.map((text) => `/${pct(text)}`) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1000, max: 6000 }).map((n) => `/${'abc/'.repeat(Math.ceil(n / 4))}`.slice(0, n)),
  },
);

const METHODS = [
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'HEAD',
  'OPTIONS',
  'PROPFIND',
  'PURGE',
  'SEARCH',
  'REPORT',
  'LINK',
  'LOCK',
];
const methodArb = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom('GET', 'POST') },
  { weight: 2, arbitrary: fc.constantFrom(...METHODS) },
);

const authorizationArb = fc.oneof(
  fc
    .constantFrom('fuzz', 'fuzz', 'expired', 'otherSecret', 'noGrants', 'weirdClaims')
    .map((name) => `Bearer ${tokens[name]}`),
  junkArb.map((junk) => `Bearer ${junk}`),
  junkArb,
  fc.constantFrom('Basic dXNlcjpwYXNz', 'Bearer', 'bearer  x  ', 'Bearer a b'),
  fc.integer({ min: 0, max: 11 }).map((i) => `Bearer ${tickets[i]}`),
  fc.integer({ min: 8000, max: 9000 }).map((n) => `Bearer ${'a'.repeat(n)}`),
);

const cookieArb = fc.oneof(
  fc.constantFrom('fuzz', 'expired', 'noGrants').map((name) => `sse_token=${tokens[name]}`),
  junkArb.map((junk) => `sse_token=${junk}`),
  junkArb,
  fc.constantFrom(
    'sse_token=%ZZ',
    'sse_token=',
    'sse_token',
    '=;=;',
    'a=b; sse_token="quoted"; c=d',
    'sse_token=a; sse_token=b',
  ),
);

const headersArb = fc
  .record(
    {
      'last-event-id': idArb,
      authorization: authorizationArb,
      cookie: cookieArb,
      origin: fc.oneof(fc.constantFrom(ORIGIN, 'null', 'https://evil.example.net', '*'), junkArb),
      'content-type': fc.oneof(
        fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
        junkArb,
      ),
      'x-forwarded-for': junkArb,
      'accept-encoding': fc.constantFrom('gzip', 'br', '*', 'identity;q=0'),
      'access-control-request-headers': junkArb,
      accept: fc.constantFrom('text/event-stream', '*/*', 'application/json'),
    },
    { requiredKeys: [] },
  )
  .map((headers) => {
    const result: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) result[name] = headerValue(value);
    return result;
  });

const publishItemArb = fc
  .record(
    {
      topic: fc.oneof({ weight: 4, arbitrary: topicishArb }, { weight: 1, arbitrary: fc.jsonValue() }),
      event: fc.oneof(fc.constantFrom('tick', 'gateway.reset', 'message', 'a\nb'), junkArb, fc.jsonValue()),
      data: fc.jsonValue({ maxDepth: 3 }),
      extra: fc.jsonValue({ maxDepth: 1 }),
    },
    { requiredKeys: [] },
  )
  .chain((item) =>
    // An unknown field is one way to be rejected; keep it rare so the rest of the item gets checked too.
    fc.integer({ min: 0, max: 9 }).map((roll) => {
      if (roll === 0) return item;
      const { extra: _extra, ...rest } = item;
      return rest;
    }),
  );

const bodyArb = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 2, arbitrary: fc.jsonValue().map((value) => Buffer.from(JSON.stringify(value) ?? 'null')) },
  { weight: 3, arbitrary: publishItemArb.map((item) => Buffer.from(JSON.stringify(item))) },
  {
    weight: 2,
    arbitrary: fc.array(publishItemArb, { maxLength: 25 }).map((items) => Buffer.from(JSON.stringify(items))),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: MAX_BODY_BYTES - 10, max: MAX_BODY_BYTES + 4000 }).map((n) => Buffer.alloc(n, 0x61)),
  },
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
);

/** Keeps the request line and headers well under Node's 16 KiB limit (that limit is tested on its own). */
function clampHeaders(request: FuzzRequest): FuzzRequest {
  let { path } = request;
  const headers = { ...request.headers };
  const size = () => path.length + Object.values(headers).reduce((sum, value) => sum + value.length + 32, 0);
  while (size() > 12_000) {
    const longest = Object.entries(headers).sort((a, b) => b[1].length - a[1].length)[0];
    if (longest && longest[1].length > path.length) headers[longest[0]] = longest[1].slice(0, longest[1].length >> 1);
    else path = path.slice(0, path.length >> 1) || '/';
  }
  return { ...request, path, headers };
}

/** Mostly requests aimed at a real route (so they get past routing), sometimes anything at all. */
const routeArb = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ method: 'GET', path: '/events' }) },
  { weight: 4, arbitrary: fc.constant({ method: 'POST', path: '/publish' }) },
  { weight: 2, arbitrary: fc.constant({ method: 'POST', path: '/tickets' }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('/events', '/publish', '/tickets').map((path) => ({ method: 'OPTIONS', path })),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom('/healthz', '/readyz', '/stats', '/metrics').map((path) => ({ method: 'GET', path })),
  },
  { weight: 4, arbitrary: fc.record({ method: methodArb, path: pathArb }) },
);

const requestArb: fc.Arbitrary<FuzzRequest> = fc
  .record({ route: routeArb, query: queryArb, headers: headersArb, body: bodyArb })
  .map(({ route, query, headers, body }) =>
    clampHeaders({
      method: route.method,
      path: route.path + query,
      headers,
      body: ['POST', 'PUT', 'PATCH', 'DELETE'].includes(route.method) ? body : undefined,
    }),
  );

/** What is wrong with an answer, or undefined. */
function problemOf(request: FuzzRequest, answer: Answer): string | undefined {
  const { status } = answer;
  if (status >= 500) {
    if (status !== 503) return `status ${status}`;
    let code: unknown;
    try {
      code = (JSON.parse(answer.body) as { error?: { code?: unknown } }).error?.code;
    } catch {}
    if (typeof code !== 'string' || !DOCUMENTED_503.has(code)) return `undocumented 503: ${answer.body.slice(0, 200)}`;
    if (!answer.headers['retry-after']) return '503 without Retry-After';
    return undefined;
  }
  if (status < 200 || (status >= 300 && status < 400)) return `unexpected status ${status}`;
  if (status >= 400) {
    if (!/^application\/json/.test(answer.headers['content-type'] ?? '')) {
      return `${status} with content type ${answer.headers['content-type']}`;
    }
    if (request.method === 'HEAD') return undefined; // No body by definition.
    let body: unknown;
    try {
      body = JSON.parse(answer.body);
    } catch {
      return `${status} with a body that is not JSON: ${JSON.stringify(answer.body.slice(0, 200))}`;
    }
    const error = (body as { error?: { code?: unknown; message?: unknown } }).error;
    const keys = Object.keys(body as object);
    if (
      keys.length !== 1 ||
      !error ||
      typeof error.code !== 'string' ||
      error.code.length === 0 ||
      typeof error.message !== 'string' ||
      error.message.length === 0
    ) {
      return `${status} body is not {error:{code,message}}: ${answer.body.slice(0, 200)}`;
    }
  }
  return undefined;
}

function describeRequest(request: FuzzRequest): string {
  const headers = Object.fromEntries(
    Object.entries(request.headers).map(([name, value]) => [name, value.slice(0, 80)]),
  );
  return `${request.method} ${request.path.slice(0, 200)} ${JSON.stringify(headers)} body ${request.body?.length ?? 0} bytes`;
}

// ---------------------------------------------------------------------------------------------------
// The fuzz
// ---------------------------------------------------------------------------------------------------

describe('random requests', () => {
  it(`${RUNS} requests: no 5xx, JSON 4xx, no error logged, no leaked stream, the witness misses nothing`, async () => {
    const requests = fc.sample(requestArb, { seed: SEED, numRuns: RUNS });
    const logsBefore = logLines.length;
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    const publishedIds: string[] = [];

    const publishWitness = async () => {
      const n = publishedIds.length;
      const response = await fetch(`${gateway.url}/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${publisherToken}` },
        body: JSON.stringify({ topic: WITNESS_TOPIC, event: 'tick', data: { n } }),
      });
      const body = (await response.json()) as { id: string };
      expect(response.status, JSON.stringify(body)).toBe(200);
      publishedIds.push(body.id);
    };

    for (const [index, request] of requests.entries()) {
      try {
        const answer = await withDeadline(perform(request), {
          timeoutMs: 15_000,
          what: `an answer to request ${index}`,
        });
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        const problem = problemOf(request, answer);
        if (problem) problems.push(`#${index} ${problem}\n    ${describeRequest(request)}`);
      } catch (error) {
        problems.push(`#${index} no answer (${(error as Error).message})\n    ${describeRequest(request)}`);
      }
      if (index % PUBLISH_EVERY === PUBLISH_EVERY - 1) await publishWitness();
    }

    expect(problems.slice(0, 10), `${problems.length} bad answers; statuses ${JSON.stringify([...statuses])}`).toEqual(
      [],
    );
    // The mix reached the interesting places, not only 404s.
    for (const status of [200, 400, 401, 403, 404, 405, 413]) {
      expect(
        statuses.get(status) ?? 0,
        `answers with status ${status}: ${JSON.stringify([...statuses])}`,
      ).toBeGreaterThan(0);
    }

    // The witness got every event, in order, with the ids publish answered, on its first connection.
    await witness.waitForCount(publishedIds.length);
    expect(witness.events.map((event) => event.data)).toEqual(publishedIds.map((_, n) => JSON.stringify({ n })));
    expect(witness.events.map((event) => event.id)).toEqual(publishedIds);
    expect(witness.opens).toBe(1);
    expect(witness.errors).toBe(0);

    // Still serving; nothing logged as an error; every fuzz stream released.
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
    expect(errorLogs(logsBefore)).toEqual([]);
    await waitFor(() => gateway.hub.connectionCount === 1, {
      what: `only the witness connected (have ${gateway.hub.connectionCount})`,
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// What never reaches the app: the HTTP parser and the hono adapter
// ---------------------------------------------------------------------------------------------------

/** Writes `bytes` on a raw socket and resolves with everything the server sends until it closes. */
function rawExchange(bytes: string, endAfterWrite = false): Promise<string> {
  return withDeadline(
    new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: gateway.port });
      let answer = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        answer += chunk;
        // One complete response is enough; keep-alive would leave the socket open.
        const head = answer.indexOf('\r\n\r\n');
        const length = /content-length: *(\d+)/i.exec(answer.slice(0, head));
        if (head >= 0 && length && answer.length >= head + 4 + Number(length[1])) socket.destroy();
      });
      socket.on('error', () => {});
      socket.on('close', () => resolve(answer));
      socket.write(Buffer.from(bytes, 'latin1'));
      if (endAfterWrite) socket.end();
    }),
    { timeoutMs: 20_000, what: 'the raw answer' },
  );
}

function parseRaw(answer: string): { status: number; headers: string; body: string } {
  const head = answer.indexOf('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1] ?? 0);
  let body = answer.slice(head + 4);
  if (/transfer-encoding: *chunked/i.test(answer.slice(0, head))) {
    // Good enough for the small bodies here: strip chunk sizes.
    body = body.replace(/(^|\r\n)[0-9a-fA-F]+\r\n/g, '$1').replace(/\r\n/g, '');
  }
  return { status, headers: answer.slice(0, head), body };
}

function expectJsonError(answer: string, status: number): void {
  const parsed = parseRaw(answer);
  expect(parsed.status, answer.slice(0, 300)).toBe(status);
  expect(parsed.headers, answer.slice(0, 300)).toMatch(/content-type: *application\/json/i);
  expect(JSON.parse(parsed.body || 'null'), answer.slice(0, 300)).toEqual({
    error: { code: expect.any(String), message: expect.any(String) },
  });
}

describe('requests refused before routing still get a JSON 4xx', () => {
  it('an unknown method (parser): 400', async () => {
    expectJsonError(await rawExchange('BREW /events?topic=public/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), 400);
  });

  it('request line and headers over 16 KiB (parser): 431', async () => {
    const answer = await rawExchange(
      `GET /events?topic=public/a HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    expectJsonError(answer, 431);
  });

  it('a control character in a header (parser): 400', async () => {
    expectJsonError(
      await rawExchange('GET /events?topic=public/a HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: a\u0001b\r\n\r\n'),
      400,
    );
  });

  it('a backslash in the path (adapter): 400', async () => {
    expectJsonError(
      await rawExchange('GET /events\\x?topic=public/a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'),
      400,
    );
  });

  it('an asterisk request target (adapter): 400', async () => {
    expectJsonError(await rawExchange('GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'), 400);
  });

  it('a Host header that is not a host (adapter): 400', async () => {
    expectJsonError(await rawExchange('GET /healthz HTTP/1.1\r\nHost: a b:c\r\nConnection: close\r\n\r\n'), 400);
  });

  it('an HTTP/1.1 request without Host (Node): a JSON 400, or served as if sent to the listening address', async () => {
    const answer = await rawExchange('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
    if (parseRaw(answer).status === 200) {
      expect(JSON.parse(parseRaw(answer).body)).toEqual({ status: 'ok' });
      return;
    }
    expectJsonError(answer, 400);
  });

  it('the witness lived through all of that', async () => {
    const before = witness.events.length;
    const response = await fetch(`${gateway.url}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${publisherToken}` },
      body: JSON.stringify({ topic: WITNESS_TOPIC, data: 'after-parser-tests' }),
    });
    expect(response.status).toBe(200);
    await witness.waitForCount(before + 1);
    expect(witness.events.at(-1)?.data).toBe('after-parser-tests');
  });
});

describe('a publish body cut off by the client', () => {
  it('is not logged as an internal error', async () => {
    const logsBefore = logLines.length;
    const socket = connect({ host: '127.0.0.1', port: gateway.port });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // Complete headers and part of the body: the handler is reading the body when the client vanishes.
    await new Promise<void>((resolve) =>
      socket.write(
        'POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
          `Authorization: Bearer ${fuzzToken}\r\nContent-Length: 1000\r\n\r\n{"topic":"junk/1","data":"`,
        () => resolve(),
      ),
    );
    socket.destroy();
    // Proving a negative: give an error line up to 2 s to show up (it shows within milliseconds when the
    // abort is mishandled). This wait never makes the test fail by itself.
    await waitFor(() => errorLogs(logsBefore).length > 0, { what: 'an error log', timeoutMs: 2000 }).catch(() => {});
    expect(errorLogs(logsBefore)).toEqual([]);
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
  });
});
