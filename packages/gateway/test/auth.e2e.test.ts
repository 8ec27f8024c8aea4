/// <reference types="node" />
/**
 * Access control over real HTTP: JWTs from a bearer header, a cookie or a single-use ticket; HS256 secrets,
 * RS256/ES256/EdDSA public keys and a JWKS URL; issuer, audience and expiry; publish grants; public topics;
 * tickets across nodes sharing Redis; a stream whose token expires; CORS with credentials; open dev mode.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Config, ConfigError, loadConfig } from '../src/config.js';
import { closeAllCollectors, collect, eventsUrl, startTestGateway, type TestGateway } from './support/gateway.js';
import { closeAllReplies, expectError, type Reply, send } from './support/http-request.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor } from './support/wait.js';

const SECRET = 'auth-e2e-secret-0123456789-abcdefghijklmnop';
const OTHER_SECRET = 'another-secret-0123456789-abcdefghijklmnopq';
const ISSUER = 'https://issuer.example.com/';
const AUDIENCE = 'sse-gateway';
const ORIGIN = 'https://app.example.com';
const TOKEN_EXPIRED = 'gateway.token-expired';

// ---------------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------------

interface Grants {
  readonly sub?: string;
  readonly subscribe?: readonly string[];
  readonly publish?: readonly string[];
}

interface SignOptions {
  /** Epoch seconds; default one hour ahead. `null` = no exp claim. */
  readonly exp?: number | null;
  readonly iss?: string | null;
  readonly aud?: string | null;
  readonly secret?: string;
}

const nowS = () => Math.floor(Date.now() / 1000);

function claims(grants: Grants): JWTPayload {
  return {
    ...(grants.sub ? { sub: grants.sub } : {}),
    sse: { subscribe: grants.subscribe ?? [], publish: grants.publish ?? [] },
  };
}

/** An HS256 token for the main gateway (right issuer and audience, valid for an hour unless told). */
async function hs256(grants: Grants, options: SignOptions = {}): Promise<string> {
  const jwt = new SignJWT(claims(grants)).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuedAt();
  const iss = options.iss === undefined ? ISSUER : options.iss;
  const aud = options.aud === undefined ? AUDIENCE : options.aud;
  const exp = options.exp === undefined ? nowS() + 3600 : options.exp;
  if (iss !== null) jwt.setIssuer(iss);
  if (aud !== null) jwt.setAudience(aud);
  if (exp !== null) jwt.setExpirationTime(exp);
  return jwt.sign(new TextEncoder().encode(options.secret ?? SECRET));
}

/** A token signed with an asymmetric private key (no iss/aud: the key-type gateways do not require them). */
async function signWith(key: CryptoKey, alg: string, grants: Grants, kid?: string): Promise<string> {
  return new SignJWT(claims(grants))
    .setProtectedHeader({ alg, ...(kid ? { kid } : {}) })
    .setIssuedAt()
    .setExpirationTime(nowS() + 3600)
    .sign(key);
}

// ---------------------------------------------------------------------------------------------------
// HTTP over node:http (Cookie and Origin headers as a browser would send them)
// ---------------------------------------------------------------------------------------------------

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const cookie = (token: string, name = 'sse_token') => ({ cookie: `theme=dark; ${name}=${token}; lang=en` });

function subscribeUrl(base: string, topics: string | readonly string[], query: Record<string, string> = {}): string {
  return eventsUrl(base, topics, query);
}

async function subscribe(
  base: string,
  topics: string | readonly string[],
  headers: Record<string, string> = {},
  query: Record<string, string> = {},
): Promise<Reply> {
  return send('GET', subscribeUrl(base, topics, query), { headers: { accept: 'text/event-stream', ...headers } });
}

async function publishTo(
  base: string,
  body: unknown,
  headers: Record<string, string> = {},
  contentType = 'application/json',
): Promise<Reply> {
  return send('POST', new URL('/publish', base).href, {
    headers: { 'content-type': contentType, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function mintTicket(
  base: string,
  headers: Record<string, string>,
  topics: readonly string[] = ['orders/1'],
): Promise<Reply> {
  return send('POST', new URL('/tickets', base).href, { headers, body: JSON.stringify({ topics }) });
}

async function ticketOf(base: string, headers: Record<string, string>, topics: readonly string[]): Promise<string> {
  const reply = await mintTicket(base, headers, topics);
  expect(reply.status, reply.text).toBe(200);
  return (reply.json as { ticket: string }).ticket;
}

/** A stream that opened: 200, text/event-stream, and its first bytes (the retry hint) arrived. */
async function expectStream(reply: Reply): Promise<void> {
  expect(reply.status, `a stream was expected, got ${reply.status} ${reply.text}`).toBe(200);
  expect(reply.headers['content-type']).toMatch(/^text\/event-stream/);
  await waitFor(() => reply.text.includes('retry:'), { what: 'the retry hint of the stream' });
}

// ---------------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------------

const started: TestGateway[] = [];

async function gatewayWith(overrides: Partial<Config>): Promise<TestGateway> {
  const gateway = await startTestGateway({ heartbeatMs: 1000, ...overrides });
  started.push(gateway);
  return gateway;
}

let main: TestGateway;
let base: string;

beforeAll(async () => {
  main = await gatewayWith({
    authJwtSecret: SECRET,
    authIssuer: ISSUER,
    authAudience: AUDIENCE,
    authClockSkewS: 0,
    publicTopics: ['public/**', 'status'],
    corsOrigins: [ORIGIN],
  });
  base = main.url;
});

afterEach(() => {
  closeAllReplies();
  closeAllCollectors();
});

afterAll(async () => {
  await Promise.all(started.map((gateway) => gateway.close()));
});

const reader = () => hs256({ sub: 'alice', subscribe: ['orders/*', 'user/{sub}/**'] });

// ---------------------------------------------------------------------------------------------------
// Token sources
// ---------------------------------------------------------------------------------------------------

describe('without credentials', () => {
  it('a private topic is 401 with WWW-Authenticate, a JSON body, and CORS headers for an allowed origin', async () => {
    const reply = await subscribe(base, 'orders/42', { origin: ORIGIN });
    expectError(reply, 401, 'unauthorized');
    expect(reply.headers['www-authenticate']).toBe('Bearer');
    // The page can read why it was refused.
    expect(reply.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(reply.headers['access-control-allow-credentials']).toBe('true');
  });
});

describe.each([
  ['bearer', (token: string) => bearer(token)],
  ['cookie', (token: string) => cookie(token)],
] as const)('a %s token', (_source, headersOf) => {
  it('opens a granted topic and delivers its events', async () => {
    const token = await reader();
    const stream = await subscribe(base, 'orders/42', headersOf(token));
    await expectStream(stream);
    const writer = await hs256({ publish: ['orders/**'] });
    const published = await publishTo(base, { topic: 'orders/42', event: 'created', data: { n: 1 } }, bearer(writer));
    expect(published.status, published.text).toBe(200);
    await waitFor(() => stream.text.includes('data: {"n":1}'), { what: 'the published event on the stream' });
    expect(stream.text).toContain('event: created');
  });

  it('opens a `{sub}` topic of its own subject only', async () => {
    const token = await reader();
    await expectStream(await subscribe(base, 'user/alice/inbox', headersOf(token)));
    expectError(await subscribe(base, 'user/bob/inbox', headersOf(token)), 403, 'forbidden');
  });

  it('is 403 for a topic it does not grant, also when one of several topics is not granted', async () => {
    const token = await reader();
    const error = expectError(await subscribe(base, 'invoices/1', headersOf(token)), 403, 'forbidden');
    expect(error.message).toContain('invoices/1');
    expectError(await subscribe(base, ['orders/1', 'invoices/1'], headersOf(token)), 403, 'forbidden');
    // `*` is one segment only.
    expectError(await subscribe(base, 'orders/42/items', headersOf(token)), 403, 'forbidden');
  });

  it.each([
    ['signed with another secret', () => hs256({ subscribe: ['**'] }, { secret: OTHER_SECRET })],
    ['expired', () => hs256({ subscribe: ['**'] }, { exp: nowS() - 10 })],
    ['from another issuer', () => hs256({ subscribe: ['**'] }, { iss: 'https://evil.example.com/' })],
    ['without an issuer', () => hs256({ subscribe: ['**'] }, { iss: null })],
    ['for another audience', () => hs256({ subscribe: ['**'] }, { aud: 'someone-else' })],
    ['without an audience', () => hs256({ subscribe: ['**'] }, { aud: null })],
    ['malformed', async () => 'not.a.jwt'],
    [
      'unsigned (alg none)',
      async () => new UnsecuredJWT(claims({ subscribe: ['**'] })).setIssuer(ISSUER).setAudience(AUDIENCE).encode(),
    ],
    [
      'tampered',
      async () => {
        const [header, , signature] = (await reader()).split('.');
        const payload = Buffer.from(
          JSON.stringify({ ...claims({ subscribe: ['**'] }), iss: ISSUER, aud: AUDIENCE }),
        ).toString('base64url');
        return `${header}.${payload}.${signature}`;
      },
    ],
  ])('is 401 invalid_token when %s', async (_case, make) => {
    const token = await make();
    const reply = await subscribe(base, 'orders/42', headersOf(token));
    expectError(reply, 401, 'invalid_token');
    // The token never appears in the answer.
    expect(reply.text).not.toContain(token);
  });
});

describe('the Authorization header', () => {
  it('must be "Bearer <token>", and wins over a cookie', async () => {
    const token = await reader();
    expectError(await subscribe(base, 'orders/42', { authorization: `Basic ${token}` }), 401, 'invalid_token');
    expectError(await subscribe(base, 'orders/42', { authorization: 'Bearer' }), 401, 'invalid_token');
    await expectStream(await subscribe(base, 'orders/42', { authorization: `bearer   ${token}` }));
    const stranger = await hs256({ subscribe: ['invoices/*'] });
    expectError(await subscribe(base, 'orders/42', { ...bearer(stranger), ...cookie(token) }), 403, 'forbidden');
  });

  it('rejects a token longer than 8192 characters without verifying it', async () => {
    expectError(await subscribe(base, 'orders/42', bearer('a'.repeat(8200))), 401, 'invalid_token');
  });
});

describe('the cookie', () => {
  it('is read by its configured name only', async () => {
    const named = await gatewayWith({ authJwtSecret: SECRET, authClockSkewS: 0, authCookieName: 'sid' });
    const token = await hs256({ subscribe: ['orders/*'] }, { iss: null, aud: null });
    expectError(await subscribe(named.url, 'orders/1', cookie(token)), 401, 'unauthorized');
    await expectStream(await subscribe(named.url, 'orders/1', cookie(token, 'sid')));
  });
});

// ---------------------------------------------------------------------------------------------------
// Tickets
// ---------------------------------------------------------------------------------------------------

describe('tickets', () => {
  it('are minted from a bearer token or a cookie, never cached, and not from nothing', async () => {
    const token = await reader();
    for (const headers of [bearer(token), cookie(token)]) {
      const reply = await mintTicket(base, headers);
      expect(reply.status, reply.text).toBe(200);
      expect(reply.headers['cache-control']).toBe('no-store');
      const body = reply.json as { ticket: string; expiresAt: string };
      expect(body.ticket).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      const expiresAt = Date.parse(body.expiresAt);
      expect(expiresAt).toBeGreaterThan(Date.now());
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 30_000 + 1000);
    }
    expectError(await mintTicket(base, {}), 401, 'unauthorized');
    expectError(await mintTicket(base, bearer('junk')), 401, 'invalid_token');
    expectError(
      await send('GET', new URL('/tickets', base).href, { headers: bearer(token) }),
      405,
      'method_not_allowed',
    );
  });

  it('open a granted topic once: the second use is 401', async () => {
    const ticket = await ticketOf(base, bearer(await reader()), ['orders/42']);
    const first = await subscribe(base, 'orders/42', {}, { ticket });
    await expectStream(first);
    first.close();
    expectError(await subscribe(base, 'orders/42', {}, { ticket }), 401, 'invalid_ticket');
  });

  it('are minted only for topics the token grants, and open exactly those', async () => {
    const token = await reader();
    expectError(await mintTicket(base, bearer(token), ['invoices/1']), 403, 'forbidden');
    expectError(await mintTicket(base, bearer(token), ['user/bob/x']), 403, 'forbidden');
    await expectStream(
      await subscribe(base, 'user/alice/x', {}, { ticket: await ticketOf(base, bearer(token), ['user/alice/x']) }),
    );
    // Another topic the token grants is still not the ticket's: it was minted for one URL.
    expectError(
      await subscribe(base, 'orders/9', {}, { ticket: await ticketOf(base, bearer(token), ['orders/8']) }),
      403,
      'forbidden',
    );
    const both = await ticketOf(base, bearer(token), ['orders/10', 'orders/11']);
    await expectStream(await subscribe(base, ['orders/10', 'orders/11'], {}, { ticket: both }));
  });

  it('need the topics they are for in the body', async () => {
    const headers = bearer(await reader());
    const post = (body: string) => send('POST', new URL('/tickets', base).href, { headers, body });
    expectError(await post(''), 400, 'invalid_json');
    expectError(await post('{}'), 400, 'invalid_body');
    expectError(await post('{"topics": [1]}'), 400, 'invalid_body');
    expectError(await post('{"topics": []}'), 400, 'missing_topic');
    expectError(await post('{"topics": ["bad topic"]}'), 400, 'invalid_topic');
  });

  it('work with a browser EventSource, which cannot send headers', async () => {
    const ticket = await ticketOf(base, cookie(await reader()), ['orders/7']);
    const client = collect(eventsUrl(base, 'orders/7', { ticket }));
    await client.waitForOpen();
    const writer = await hs256({ publish: ['orders/*'] });
    const published = await publishTo(base, { topic: 'orders/7', data: 'hello' }, bearer(writer));
    expect(published.status, published.text).toBe(200);
    await client.waitForCount(1);
    expect(client.events[0]).toMatchObject({ event: 'message', data: 'hello' });
  });

  it('are not tokens, and tokens are not tickets', async () => {
    const token = await reader();
    const ticket = await ticketOf(base, bearer(token), ['orders/42']);
    expectError(await subscribe(base, 'orders/42', bearer(ticket)), 401, 'invalid_token');
    expectError(await subscribe(base, 'orders/42', {}, { ticket: token }), 401, 'invalid_ticket');
    // A ticket cannot mint another ticket, nor publish.
    expectError(await send('POST', `${base}/tickets?ticket=${ticket}`), 401, 'unauthorized');
    expectError(
      await send('POST', `${base}/publish?ticket=${ticket}`, {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ topic: 'orders/1', data: 1 }),
      }),
      401,
      'unauthorized',
    );
    // Junk.
    expectError(await subscribe(base, 'orders/42', {}, { ticket: '' }), 401, 'invalid_ticket');
    expectError(await subscribe(base, 'orders/42', {}, { ticket: 'x'.repeat(9000) }), 401, 'invalid_ticket');
  });

  it('expire after TICKET_TTL_MS', async () => {
    const short = await gatewayWith({ authJwtSecret: SECRET, authClockSkewS: 0, ticketTtlMs: 1000 });
    const token = await hs256({ subscribe: ['orders/*'] }, { iss: null, aud: null });
    const reply = await mintTicket(short.url, bearer(token));
    expect(reply.status, reply.text).toBe(200);
    const { ticket, expiresAt } = reply.json as { ticket: string; expiresAt: string };
    const expiresAtMs = Date.parse(expiresAt);
    expect(expiresAtMs).toBeLessThanOrEqual(Date.now() + 1000);
    // JWT expiry has a resolution of one second: wait until the second of `exp` has begun.
    const deadline = Math.ceil(expiresAtMs / 1000) * 1000 + 100;
    await waitFor(() => Date.now() >= deadline, { what: 'the ticket expiry', timeoutMs: 10_000 });
    expectError(await subscribe(short.url, 'orders/1', {}, { ticket }), 401, 'invalid_ticket');
  });

  it('never outlive the token they were minted from', async () => {
    const exp = nowS() + 5;
    const token = await hs256({ subscribe: ['orders/*'] }, { exp });
    const { expiresAt } = (await mintTicket(base, bearer(token))).json as { expiresAt: string };
    expect(Date.parse(expiresAt)).toBeLessThanOrEqual(exp * 1000);
  });
});

describe('tickets across nodes sharing Redis', () => {
  let redis: TestRedis;
  let nodeA: TestGateway;
  let nodeB: TestGateway;

  beforeAll(async () => {
    redis = await startRedis();
    const prefix = uniquePrefix('auth-tickets');
    const shared: Partial<Config> = {
      authJwtSecret: SECRET,
      authClockSkewS: 0,
      redisUrl: redis.url,
      redisPrefix: prefix,
    };
    nodeA = await gatewayWith(shared);
    nodeB = await gatewayWith(shared);
  });

  afterAll(async () => {
    await nodeA?.close();
    await nodeB?.close();
    await redis?.stop();
  });

  it('a ticket minted on one node is redeemed on another, once', async () => {
    const token = await hs256({ sub: 'carol', subscribe: ['orders/*'] }, { iss: null, aud: null });
    const ticket = await ticketOf(nodeA.url, bearer(token), ['orders/1']);
    await expectStream(await subscribe(nodeB.url, 'orders/1', {}, { ticket }));
    expectError(await subscribe(nodeA.url, 'orders/1', {}, { ticket }), 401, 'invalid_ticket');
    expectError(await subscribe(nodeB.url, 'orders/1', {}, { ticket }), 401, 'invalid_ticket');
  });

  it('two nodes racing to redeem the same ticket admit exactly one', async () => {
    const token = await hs256({ subscribe: ['orders/*'] }, { iss: null, aud: null });
    const ticket = await ticketOf(nodeB.url, bearer(token), ['orders/2']);
    const replies = await Promise.all(
      [nodeA, nodeB, nodeA, nodeB].map((node) => subscribe(node.url, 'orders/2', {}, { ticket })),
    );
    expect(replies.map((reply) => reply.status).sort()).toEqual([200, 401, 401, 401]);
  });
});

// ---------------------------------------------------------------------------------------------------
// Key types
// ---------------------------------------------------------------------------------------------------

describe.each([
  ['RS256', 'RS256'],
  ['ES256', 'ES256'],
  ['EdDSA (Ed25519)', 'EdDSA'],
])('AUTH_JWT_PUBLIC_KEY with %s', (_name, alg) => {
  let gateway: TestGateway;
  let privateKey: CryptoKey;
  let publicPem: string;

  beforeAll(async () => {
    const pair = await generateKeyPair(alg, { extractable: true });
    privateKey = pair.privateKey;
    publicPem = await exportSPKI(pair.publicKey);
    gateway = await gatewayWith({ authJwtPublicKey: publicPem, authClockSkewS: 0 });
  });

  it('accepts tokens signed with the private key and applies their grants', async () => {
    const token = await signWith(privateKey, alg, { subscribe: ['orders/*'], publish: ['orders/*'] });
    await expectStream(await subscribe(gateway.url, 'orders/1', bearer(token)));
    expectError(await subscribe(gateway.url, 'invoices/1', bearer(token)), 403, 'forbidden');
    const published = await publishTo(gateway.url, { topic: 'orders/1', data: 'x' }, bearer(token));
    expect(published.status, published.text).toBe(200);
  });

  it('rejects another key of the same type, and an HS256 token keyed with the public key (algorithm confusion)', async () => {
    const other = await generateKeyPair(alg);
    const forged = await signWith(other.privateKey, alg, { subscribe: ['**'] });
    expectError(await subscribe(gateway.url, 'orders/1', bearer(forged)), 401, 'invalid_token');
    const confused = await new SignJWT(claims({ subscribe: ['**'] }))
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(nowS() + 60)
      .sign(new TextEncoder().encode(publicPem));
    expectError(await subscribe(gateway.url, 'orders/1', bearer(confused)), 401, 'invalid_token');
  });
});

describe('an unusable AUTH_JWT_PUBLIC_KEY', () => {
  it.each([
    ['garbage between the PEM lines', '-----BEGIN PUBLIC KEY-----\nZ2FyYmFnZQ==\n-----END PUBLIC KEY-----'],
    [
      'a DSA key (SPKI, but no JWT algorithm)',
      generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 224 }).publicKey.export({
        type: 'spki',
        format: 'pem',
      }) as string,
    ],
  ])('(%s) is refused at start, not answered with a 500 on every token', async (_case, pem) => {
    let refusedByConfig = false;
    try {
      loadConfig({ AUTH_JWT_PUBLIC_KEY: pem });
    } catch (error) {
      refusedByConfig = error instanceof ConfigError && /AUTH_JWT_PUBLIC_KEY/.test(error.message);
    }
    if (refusedByConfig) return;
    let gateway: TestGateway | undefined;
    try {
      gateway = await startTestGateway({ authJwtPublicKey: pem });
    } catch (error) {
      expect(String(error)).toMatch(/AUTH_JWT_PUBLIC_KEY/);
      return;
    }
    try {
      const reply = await subscribe(gateway.url, 'orders/1', bearer('a.b.c'));
      expect.fail(`the gateway started with an unusable key; a token request answered ${reply.status} ${reply.text}`);
    } finally {
      await gateway.close();
    }
  });
});

describe('AUTH_JWKS_URL', () => {
  let jwksServer: Server;
  let jwksRequests = 0;
  let gateway: TestGateway;
  let rsa: CryptoKey;
  let ec: CryptoKey;

  beforeAll(async () => {
    const rsaPair = await generateKeyPair('RS256', { extractable: true });
    const ecPair = await generateKeyPair('ES256', { extractable: true });
    rsa = rsaPair.privateKey;
    ec = ecPair.privateKey;
    const keys: JWK[] = [
      { ...(await exportJWK(rsaPair.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ecPair.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
    ];
    jwksServer = createServer((req, res) => {
      jwksRequests++;
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const { port } = jwksServer.address() as AddressInfo;
    gateway = await gatewayWith({ authJwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`, authClockSkewS: 0 });
  });

  afterAll(async () => {
    await gateway?.close();
    jwksServer.closeAllConnections();
    await new Promise<void>((resolve) => jwksServer.close(() => resolve()));
  });

  it('verifies tokens of every key in the set, by kid', async () => {
    await expectStream(
      await subscribe(
        gateway.url,
        'orders/1',
        bearer(await signWith(rsa, 'RS256', { subscribe: ['orders/*'] }, 'rsa-1')),
      ),
    );
    await expectStream(
      await subscribe(
        gateway.url,
        'orders/2',
        bearer(await signWith(ec, 'ES256', { subscribe: ['orders/*'] }, 'ec-1')),
      ),
    );
    expect(jwksRequests).toBeGreaterThanOrEqual(1);
  });

  it('rejects a key that is not in the set, and a known kid with the wrong key', async () => {
    const stranger = (await generateKeyPair('RS256')).privateKey;
    expectError(
      await subscribe(
        gateway.url,
        'orders/1',
        bearer(await signWith(stranger, 'RS256', { subscribe: ['**'] }, 'rsa-2')),
      ),
      401,
      'invalid_token',
    );
    expectError(
      await subscribe(
        gateway.url,
        'orders/1',
        bearer(await signWith(stranger, 'RS256', { subscribe: ['**'] }, 'rsa-1')),
      ),
      401,
      'invalid_token',
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Publishing and public topics
// ---------------------------------------------------------------------------------------------------

describe('publishing', () => {
  it('needs a token (401), with a publish grant for every topic of the batch (403)', async () => {
    expectError(await publishTo(base, { topic: 'orders/1', data: 1 }), 401, 'unauthorized');
    const subscriberOnly = await hs256({ subscribe: ['**'] });
    expectError(await publishTo(base, { topic: 'orders/1', data: 1 }, bearer(subscriberOnly)), 403, 'forbidden');
    const writer = await hs256({ publish: ['orders/*'] });
    expectError(await publishTo(base, { topic: 'invoices/1', data: 1 }, bearer(writer)), 403, 'forbidden');
    const batch = [
      { topic: 'orders/1', data: 1 },
      { topic: 'invoices/1', data: 2 },
    ];
    expectError(await publishTo(base, batch, bearer(writer)), 403, 'forbidden');
    expectError(await publishTo(base, { topic: 'orders/1', data: 1 }, bearer('junk')), 401, 'invalid_token');
    const expired = await hs256({ publish: ['**'] }, { exp: nowS() - 5 });
    expectError(await publishTo(base, { topic: 'orders/1', data: 1 }, bearer(expired)), 401, 'invalid_token');
  });

  it('works with a publish grant and answers the ids', async () => {
    const writer = await hs256({ sub: 'svc', publish: ['orders/*', 'user/{sub}/**'] });
    const one = await publishTo(base, { topic: 'orders/9', event: 'tick', data: { n: 1 } }, bearer(writer));
    expect(one.status, one.text).toBe(200);
    expect(one.json).toEqual({ id: expect.any(String), ids: [expect.any(String)] });
    const batch = await publishTo(
      base,
      [
        { topic: 'orders/9', data: 2 },
        { topic: 'user/svc/log', data: 3 },
      ],
      bearer(writer),
    );
    expect(batch.status, batch.text).toBe(200);
    expect((batch.json as { ids: string[] }).ids).toHaveLength(2);
  });

  it('an anonymous publish to a closed gateway is refused before its body is looked at', async () => {
    // Invalid body, no credentials: 401 (not the validation error, which would tell what passes).
    expectError(
      await publishTo(base, '{"topic": "", "data": 1, "extra": true}', {}, 'application/json'),
      401,
      'unauthorized',
    );
    expectError(await publishTo(base, 'not json at all', {}, 'text/plain'), 401, 'unauthorized');
  });

  it('a cookie alone does not let a cross-site form post publish (CSRF): 415 json_required', async () => {
    // An HTML form on any site can POST a text/plain body that is valid JSON, and the browser attaches
    // the user's cookie (SameSite=None, which cross-site EventSource needs). That must not publish.
    const token = await hs256({ sub: 'alice', subscribe: ['orders/*'], publish: ['orders/*'] });
    const formBody = '{"topic":"orders/csrf","data":"="}'; // name=`{"topic":"orders/csrf","data":"` value=`"}`
    for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const reply = await publishTo(
        base,
        formBody,
        { ...cookie(token), origin: 'https://evil.example.net' },
        contentType,
      );
      expectError(reply, 415, 'json_required');
    }
    // JSON needs a CORS preflight cross-origin, so a cookie with a JSON body is a same-origin page (or an
    // allowed one): that publishes. A bearer token cannot be forged by a form at all.
    expect((await publishTo(base, formBody, cookie(token), 'application/json; charset=utf-8')).status).toBe(200);
    // Whatever the credential, a publish body is JSON and must say so.
    expectError(await publishTo(base, formBody, bearer(token), 'text/plain'), 415, 'json_required');
    expect((await publishTo(base, formBody, bearer(token), 'application/json')).status).toBe(200);
  });
});

describe('public topics', () => {
  it('are readable anonymously, by pattern', async () => {
    await expectStream(await subscribe(base, 'public/news'));
    await expectStream(await subscribe(base, 'public/a/b/c'));
    await expectStream(await subscribe(base, ['public/news', 'status']));
    expectError(await subscribe(base, 'public'), 401, 'unauthorized');
    expectError(await subscribe(base, 'status/x'), 401, 'unauthorized');
  });

  it('still check credentials that are sent: an invalid token is 401 even for a public topic', async () => {
    expectError(await subscribe(base, 'public/news', bearer('junk')), 401, 'invalid_token');
    expectError(await subscribe(base, 'public/news', cookie('junk')), 401, 'invalid_token');
    // A valid token without any grant still reads public topics.
    await expectStream(await subscribe(base, 'public/news', bearer(await hs256({ sub: 'nobody' }))));
  });

  it('do not open private topics of the same request', async () => {
    expectError(await subscribe(base, ['public/news', 'orders/1']), 401, 'unauthorized');
    const token = await reader();
    await expectStream(await subscribe(base, ['public/news', 'orders/1'], bearer(token)));
    expectError(await subscribe(base, ['public/news', 'invoices/1'], bearer(token)), 403, 'forbidden');
  });

  it('are not publishable anonymously, nor without a publish grant', async () => {
    expectError(await publishTo(base, { topic: 'public/news', data: 'x' }), 401, 'unauthorized');
    const reader_ = await hs256({ subscribe: ['public/**'] });
    expectError(await publishTo(base, { topic: 'public/news', data: 'x' }, bearer(reader_)), 403, 'forbidden');
    const writer = await hs256({ publish: ['public/**'] });
    expect((await publishTo(base, { topic: 'public/news', data: 'x' }, bearer(writer))).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------------
// Expiry mid-stream
// ---------------------------------------------------------------------------------------------------

describe('a token expiring mid-stream', () => {
  /** A token expiring 3 to 4 s from now, and that time in epoch ms. */
  async function expiringSoon(grants: Grants): Promise<{ token: string; expMs: number }> {
    const exp = nowS() + 4;
    return { token: await hs256(grants, { exp }), expMs: exp * 1000 };
  }

  it('ends the stream with `gateway.token-expired`, not before the exp time', async () => {
    const { token, expMs } = await expiringSoon({ subscribe: ['orders/*'] });
    const stream = await subscribe(base, 'orders/5', bearer(token));
    await expectStream(stream);
    const writer = await hs256({ publish: ['orders/*'] });
    expect((await publishTo(base, { topic: 'orders/5', data: 'before' }, bearer(writer))).status).toBe(200);
    await waitFor(() => stream.text.includes('data: before'), { what: 'an event before expiry' });

    let seenAt = 0;
    await waitFor(
      () => {
        if (!seenAt && stream.text.includes(`event: ${TOKEN_EXPIRED}`)) seenAt = Date.now();
        return seenAt && stream.ended;
      },
      { what: 'gateway.token-expired, then the end of the stream', timeoutMs: 30_000 },
    );
    expect(seenAt).toBeGreaterThanOrEqual(expMs);
    // The sweep runs at least every second; a loaded machine gets generous slack.
    expect(seenAt).toBeLessThan(expMs + 15_000);
    // The reserved event carries no id, so the page's Last-Event-ID still resumes from its last real event.
    const frame = stream.text.slice(stream.text.indexOf(`event: ${TOKEN_EXPIRED}`));
    expect(frame).toBe(`event: ${TOKEN_EXPIRED}\ndata: {"reason":"token-expired"}\n\n`);
    expect(stream.text.indexOf('data: before')).toBeLessThan(stream.text.indexOf(TOKEN_EXPIRED));
  });

  it('delivers nothing the node received after exp, though the sweep has not run yet', async () => {
    const { token, expMs } = await expiringSoon({ subscribe: ['orders/*'] });
    const stream = await subscribe(base, 'orders/7', bearer(token));
    await expectStream(stream);
    const writer = await hs256({ publish: ['orders/*'] });
    // Publish every 20 ms across the expiry; note each one's acknowledgement time.
    const acked: { data: string; at: number }[] = [];
    for (let n = 0; Date.now() < expMs + 1500; n++) {
      const data = `tick-${n}`;
      const sentAt = Date.now();
      expect((await publishTo(base, { topic: 'orders/7', data }, bearer(writer))).status).toBe(200);
      acked.push({ data, at: sentAt });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await waitFor(() => stream.ended, { what: 'the end of the stream', timeoutMs: 30_000 });
    expect(stream.text).toContain(`event: ${TOKEN_EXPIRED}`);
    // Every event sent after the expiry stayed out (one sent before it may arrive just after).
    const leaked = acked.filter((event) => event.at > expMs && stream.text.includes(`data: ${event.data}\n`));
    expect(leaked).toEqual([]);
    expect(acked.some((event) => event.at < expMs - 200 && stream.text.includes(`data: ${event.data}\n`))).toBe(true);
  });

  it('a page sees the event, then its reconnect with the stale token is refused for good', async () => {
    const { token } = await expiringSoon({ subscribe: ['orders/*'] });
    const client = collect(eventsUrl(base, 'orders/6'), { headers: bearer(token), events: [TOKEN_EXPIRED] });
    await client.waitForOpen();
    await client.waitForCount(1, { what: TOKEN_EXPIRED });
    expect(client.events[0]).toEqual({ id: '', event: TOKEN_EXPIRED, data: '{"reason":"token-expired"}' });
    // EventSource reconnects, gets 401 and stops (readyState CLOSED): the page must fetch a new token.
    await waitFor(() => client.errorCodes.includes(401) && client.source.readyState === 2, {
      what: 'the refused reconnect',
    });
  });

  it('a stream opened with a ticket ends when the token behind the ticket expires', async () => {
    const { token, expMs } = await expiringSoon({ subscribe: ['orders/*'] });
    const ticket = await ticketOf(base, bearer(token), ['orders/8']);
    const stream = await subscribe(base, 'orders/8', {}, { ticket });
    await expectStream(stream);
    await waitFor(() => stream.ended, { what: 'the end of the ticket stream', timeoutMs: 30_000 });
    expect(stream.text).toContain(`event: ${TOKEN_EXPIRED}`);
    expect(Date.now()).toBeGreaterThanOrEqual(expMs);
  });

  it('a token accepted within AUTH_CLOCK_SKEW_S is not cut off at once', async () => {
    // With 30 s of tolerated skew, a token whose exp passed 5 s ago is valid: the stream must live on
    // (until exp + skew), not be accepted and closed by the next sweep, which makes clients loop.
    const skewed = await gatewayWith({ authJwtSecret: SECRET, authClockSkewS: 30, heartbeatMs: 100 });
    const token = await hs256({ subscribe: ['orders/*'] }, { exp: nowS() - 5, iss: null, aud: null });
    const stream = await subscribe(skewed.url, 'orders/1', bearer(token));
    await expectStream(stream);
    // Heartbeats every 100 ms, sweeps every 50 ms: five heartbeats span many sweeps.
    await waitFor(() => stream.ended || stream.text.split(':\n\n').length > 5, { what: 'five heartbeats or the end' });
    expect(stream.text).not.toContain(TOKEN_EXPIRED);
    expect(stream.ended).toBe(false);
  });

  it('with AUTH_CLOCK_SKEW_S, the stream ends at exp + skew', async () => {
    const skewS = 2;
    const skewed = await gatewayWith({ authJwtSecret: SECRET, authClockSkewS: skewS });
    const exp = nowS() + 2;
    const token = await hs256({ subscribe: ['orders/*'] }, { exp, iss: null, aud: null });
    const stream = await subscribe(skewed.url, 'orders/1', bearer(token));
    await expectStream(stream);
    let seenAt = 0;
    await waitFor(
      () => {
        if (!seenAt && stream.text.includes(`event: ${TOKEN_EXPIRED}`)) seenAt = Date.now();
        return seenAt && stream.ended;
      },
      { what: 'gateway.token-expired, then the end of the stream', timeoutMs: 30_000 },
    );
    expect(seenAt).toBeGreaterThanOrEqual((exp + skewS) * 1000);
  });
});

// ---------------------------------------------------------------------------------------------------
// CORS with credentials
// ---------------------------------------------------------------------------------------------------

describe('CORS', () => {
  it('a stream for an allowed origin carries its exact origin and Allow-Credentials', async () => {
    const stream = await subscribe(base, 'orders/1', { origin: ORIGIN, ...cookie(await reader()) });
    await expectStream(stream);
    expect(stream.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(stream.headers['access-control-allow-credentials']).toBe('true');
    expect(stream.headers.vary).toMatch(/Origin/i);
  });

  it('preflight for /events allows Last-Event-ID and Authorization with credentials', async () => {
    const reply = await send('OPTIONS', `${base}/events?topic=orders/1`, {
      headers: {
        origin: ORIGIN,
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'last-event-id, authorization',
      },
    });
    expect(reply.status).toBe(204);
    expect(reply.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(reply.headers['access-control-allow-credentials']).toBe('true');
    expect(reply.headers['access-control-allow-methods']).toMatch(/\bGET\b/);
    const allowed = (reply.headers['access-control-allow-headers'] ?? '').toLowerCase().split(/\s*,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(['last-event-id', 'authorization']));
  });

  it('preflight for /tickets and /publish allows POST with credentials', async () => {
    for (const path of ['/tickets', '/publish']) {
      const reply = await send('OPTIONS', `${base}${path}`, {
        headers: {
          origin: ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type, authorization',
        },
      });
      expect(reply.status, path).toBe(204);
      expect(reply.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(reply.headers['access-control-allow-methods']).toMatch(/\bPOST\b/);
    }
  });

  it('another origin gets no CORS headers, and its preflight is a JSON 403', async () => {
    const stream = await subscribe(base, 'public/news', { origin: 'https://evil.example.net' });
    await expectStream(stream);
    expect(stream.headers['access-control-allow-origin']).toBeUndefined();
    expect(stream.headers['access-control-allow-credentials']).toBeUndefined();
    const preflight = await send('OPTIONS', `${base}/events`, {
      headers: { origin: 'https://evil.example.net', 'access-control-request-method': 'GET' },
    });
    expectError(preflight, 403, 'origin_not_allowed');
  });

  it('`*` allows any origin but never with credentials', async () => {
    const any = await gatewayWith({ corsOrigins: ['*'] });
    const stream = await subscribe(any.url, 'x', { origin: 'https://anyone.example.org' });
    await expectStream(stream);
    expect(stream.headers['access-control-allow-origin']).toBe('*');
    expect(stream.headers['access-control-allow-credentials']).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------
// Open (development) mode
// ---------------------------------------------------------------------------------------------------

describe('without any key (development mode)', () => {
  let open: TestGateway;

  beforeAll(async () => {
    open = await gatewayWith({});
  });

  it('anyone subscribes to and publishes on any topic; credentials are ignored', async () => {
    const stream = await subscribe(open.url, ['orders/1', 'anything/else']);
    await expectStream(stream);
    await expectStream(await subscribe(open.url, 'orders/1', bearer('junk')));
    const published = await publishTo(open.url, { topic: 'orders/1', data: 'open' });
    expect(published.status, published.text).toBe(200);
    await waitFor(() => stream.text.includes('data: open'), { what: 'the anonymous publication' });
  });

  it('has no tickets', async () => {
    expectError(await mintTicket(open.url, {}), 404, 'tickets_disabled');
  });
});
