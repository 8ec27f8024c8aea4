/**
 * The strict request-head reader of the socket fast path (src/http/request-head.ts): what it accepts, what it
 * leaves to node:http, and a differential property test: every head it accepts, Node's own HTTP parser
 * reads to the same target and the same header values (as the routes see them).
 */
import { createServer, type IncomingMessage, maxHeaderSize, type Server } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRequestHead } from '../src/http/request-head.js';
import { rawExchange } from './support/raw-socket.js';

const head = (...lines: string[]) => Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');

describe('parseRequestHead', () => {
  it('reads a plain GET: target, lower-cased names, values without surrounding whitespace', () => {
    const parsed = parseRequestHead(
      head(
        'GET /events?topic=a%2Fb&topic=c HTTP/1.1',
        'Host: 127.0.0.1:8080',
        'Accept:text/event-stream',
        'Last-Event-ID: \t 1:2-3 \t',
      ),
      maxHeaderSize,
    );
    expect(parsed?.target).toBe('/events?topic=a%2Fb&topic=c');
    expect({ ...parsed?.headers }).toEqual({
      host: '127.0.0.1:8080',
      accept: 'text/event-stream',
      'last-event-id': '1:2-3',
    });
  });

  it('reads a head with no fields, and empty values', () => {
    expect(parseRequestHead(head('GET /events HTTP/1.1'), maxHeaderSize)).toEqual({ target: '/events', headers: {} });
    expect({ ...parseRequestHead(head('GET / HTTP/1.1', 'X-Empty:'), maxHeaderSize)?.headers }).toEqual({
      'x-empty': '',
    });
  });

  it('combines repeated fields as Node does: most joined with ", ", cookies with "; ", some keep the first', () => {
    const parsed = parseRequestHead(
      head(
        'GET /events HTTP/1.1',
        'X-Forwarded-For: 10.0.0.1',
        'X-Forwarded-For: 10.0.0.2',
        'Cookie: a=1',
        'Cookie: b=2',
        'Authorization: Bearer first',
        'Authorization: Bearer second',
      ),
      maxHeaderSize,
    );
    expect(parsed?.headers['x-forwarded-for']).toBe('10.0.0.1, 10.0.0.2');
    expect(parsed?.headers.cookie).toBe('a=1; b=2');
    expect(parsed?.headers.authorization).toBe('Bearer first');
  });

  it('a field named like an Object.prototype member is just a field', () => {
    const parsed = parseRequestHead(head('GET / HTTP/1.1', '__proto__: x', 'constructor: y'), maxHeaderSize);
    expect(Object.entries(parsed?.headers ?? {})).toEqual([
      ['__proto__', 'x'],
      ['constructor', 'y'],
    ]);
  });

  it.each([
    ['another method', head('POST /events HTTP/1.1')],
    ['HEAD', head('HEAD /events HTTP/1.1')],
    ['lower-case method', head('get /events HTTP/1.1')],
    ['HTTP/1.0', head('GET /events HTTP/1.0')],
    ['HTTP/2.0 in the request line', head('GET /events HTTP/2.0')],
    ['an absolute-form target', head('GET http://a/events HTTP/1.1')],
    ['an asterisk target', head('GET * HTTP/1.1')],
    ['a backslash in the target', head('GET /events\\x HTTP/1.1')],
    ['a space in the target', head('GET /events x HTTP/1.1')],
    ['a fragment in the target', head('GET /events#x HTTP/1.1')],
    ['a non-ASCII target', head('GET /events?t=\u00e9 HTTP/1.1')],
    ['two spaces after the method', head('GET  /events HTTP/1.1')],
    ['a leading empty line', Buffer.from('\r\nGET /events HTTP/1.1\r\n\r\n')],
    ['a body (Content-Length)', head('GET /events HTTP/1.1', 'Content-Length: 0')],
    ['a body (Transfer-Encoding)', head('GET /events HTTP/1.1', 'Transfer-Encoding: chunked')],
    ['an upgrade (h2c)', head('GET /events HTTP/1.1', 'Connection: Upgrade', 'Upgrade: h2c')],
    ['Expect: 100-continue', head('GET /events HTTP/1.1', 'Expect: 100-continue')],
    ['an obs-fold continuation line', head('GET /events HTTP/1.1', 'X-A: one', ' two')],
    ['a space before the colon', head('GET /events HTTP/1.1', 'X-A : one')],
    ['no colon', head('GET /events HTTP/1.1', 'X-A one')],
    ['an empty name', head('GET /events HTTP/1.1', ': one')],
    ['a non-token name', head('GET /events HTTP/1.1', 'X(A): one')],
    ['a control character in a value', head('GET /events HTTP/1.1', 'X-A: a\u0001b')],
    ['DEL in a value', head('GET /events HTTP/1.1', 'X-A: a\u007fb')],
    ['a bare CR in a value', head('GET /events HTTP/1.1', 'X-A: a\rb')],
    ['a bare LF line end', Buffer.from('GET /events HTTP/1.1\nHost: a\r\n\r\n')],
    ['LF LF as the end of the head', Buffer.from('GET /events HTTP/1.1\r\nHost: a\n\n')],
    ['an incomplete head', Buffer.from('GET /events HTTP/1.1\r\nHost: a\r\n')],
    ['bytes after the head (a pipelined request)', Buffer.from('GET /events HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n')],
    ['too many fields', head('GET /events HTTP/1.1', ...Array.from({ length: 101 }, (_, i) => `X-${i}: v`))],
  ])('leaves %s to node:http', (_what, bytes) => {
    expect(parseRequestHead(bytes, maxHeaderSize)).toBeUndefined();
  });

  it('leaves a head longer than the limit to node:http (which answers 431)', () => {
    const long = head('GET /events HTTP/1.1', `X-Long: ${'a'.repeat(200)}`);
    expect(parseRequestHead(long, long.length)).toBeDefined();
    expect(parseRequestHead(long, long.length - 1)).toBeUndefined();
  });
});

describe('what parseRequestHead accepts, Node reads the same way', () => {
  let server: Server;
  let port: number;
  const seen: IncomingMessage[] = [];

  beforeAll(async () => {
    server = createServer({ requireHostHeader: false }, (req, res) => {
      seen.push(req);
      res.writeHead(204, { Connection: 'close' }).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** What Node's server made of `bytes`: its request, or undefined if it refused them. */
  async function nodeReads(bytes: Buffer): Promise<IncomingMessage | undefined> {
    const before = seen.length;
    const { text } = await rawExchange(port, [bytes]);
    return text.startsWith('HTTP/1.1 204') ? seen[before] : undefined;
  }

  const nameArbitrary = fc.constantFrom(
    'Host',
    'accept',
    'Cookie',
    'Authorization',
    'X-Forwarded-For',
    'Last-Event-ID',
    'user-agent',
    'X-Custom',
    'x-custom',
    'Origin',
    "x!#$%&'*+-.^_`|~1",
  );
  const valueArbitrary = fc.string({
    unit: fc.constantFrom('a', 'Z', '0', ' ', '\t', ',', ';', '=', ':', '"', '\u00e9', '\u00ff', '\u0080', '/', '%'),
    maxLength: 12,
  });
  const targetArbitrary = fc.string({
    unit: fc.constantFrom(
      'a',
      '/',
      '?',
      '&',
      '=',
      '%',
      '2',
      'F',
      '+',
      ':',
      '@',
      '!',
      '$',
      "'",
      '(',
      '*',
      ',',
      ';',
      '~',
    ),
    maxLength: 20,
  });

  it('targets and header values agree with IncomingMessage (fast-check, against a real node:http server)', async () => {
    await fc.assert(
      fc.asyncProperty(
        targetArbitrary,
        fc.array(fc.tuple(nameArbitrary, valueArbitrary), { maxLength: 8 }),
        async (target, fields) => {
          const bytes = head(`GET /${target} HTTP/1.1`, ...fields.map(([name, value]) => `${name}:${value}`));
          const ours = parseRequestHead(bytes, maxHeaderSize);
          if (!ours) return; // left to node:http: nothing to compare
          const node = await nodeReads(bytes);
          expect(node, 'Node refused a head the fast path accepts').toBeDefined();
          expect(ours.target).toBe(node?.url);
          const nodeHeaders = Object.fromEntries(
            Object.entries(node?.headers ?? {}).map(([name, value]) => [
              name,
              Array.isArray(value) ? value.join(', ') : value,
            ]),
          );
          expect({ ...ours.headers }).toEqual(nodeHeaders);
        },
      ),
      { numRuns: 300 },
    );
  });
});
