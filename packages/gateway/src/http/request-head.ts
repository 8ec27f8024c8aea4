/**
 * A strict reader of one HTTP/1.1 GET request head, for the connections the gateway takes over from
 * node:http right after it (socket-exchange.ts). It accepts a narrow, common subset: `GET`, `HTTP/1.1`,
 * an origin-form target of URI characters, header lines `name: value` with token names and no control
 * characters, CRLF line ends, no body and nothing after the head. Anything else answers undefined, and the
 * connection goes to node:http exactly as before, which then accepts or refuses it as it always has. Being
 * narrower than Node's parser is the point: what this does not fully understand, it does not interpret.
 */

export interface RequestHead {
  /** The origin-form request target, e.g. `/events?topic=a`. */
  readonly target: string;
  /** Lower-cased field names; repeated fields combined the way Node's IncomingMessage combines them. */
  readonly headers: Readonly<Record<string, string>>;
}

const REQUEST_LINE_START = 'GET ';
const REQUEST_LINE_END = ' HTTP/1.1';
const HEAD_END = '\r\n\r\n';
/** More fields than any browser or proxy sends: such a request goes to node:http. */
const MAX_FIELDS = 100;

/** Origin-form: `/` then URI characters (RFC 3986: unreserved, sub-delims, `:`, `@`, `/`, `?`, `%`). */
const TARGET = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;
/** `name:` a token (RFC 9110 section 5.6.2), then the value: SP, HTAB, visible ASCII and obs-text only. */
const FIELD = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t -~\u0080-\u00ff]*?)[ \t]*$/;
/** Fields that would make this more than a plain GET: a body, an upgrade, an interim 100 response. */
const NOT_PLAIN = new Set(['content-length', 'transfer-encoding', 'upgrade', 'expect']);
/** Node keeps the first of these when repeated and drops the rest (IncomingMessage's matchKnownFields). */
const FIRST_WINS = new Set([
  'age',
  'authorization',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

/**
 * Reads `bytes` as exactly one request head (nothing before or after it), at most `maxBytes` long.
 * Undefined when it is anything else: the caller leaves the connection to node:http.
 */
export function parseRequestHead(bytes: Buffer, maxBytes: number): RequestHead | undefined {
  if (bytes.length > maxBytes || bytes.length < REQUEST_LINE_START.length + HEAD_END.length) return undefined;
  // Header bytes are Latin-1, as Node reads them; one string, split at CRLF.
  const text = bytes.toString('latin1');
  if (text.indexOf(HEAD_END) !== text.length - HEAD_END.length) return undefined;
  const lineEnd = text.indexOf('\r\n');
  const requestLine = text.slice(0, lineEnd);
  if (!requestLine.startsWith(REQUEST_LINE_START) || !requestLine.endsWith(REQUEST_LINE_END)) return undefined;
  const target = requestLine.slice(REQUEST_LINE_START.length, requestLine.length - REQUEST_LINE_END.length);
  if (!TARGET.test(target)) return undefined;

  const headers: Record<string, string> = Object.create(null);
  let fields = 0;
  let start = lineEnd + 2;
  const last = text.length - HEAD_END.length;
  while (start <= last) {
    // Found at the latest at `last`: the head ends with CRLF CRLF.
    const end = text.indexOf('\r\n', start);
    const match = FIELD.exec(text.slice(start, end));
    // An obs-fold (a line starting with SP/HTAB), a bare CR or LF, a control character, a bad name.
    if (!match || ++fields > MAX_FIELDS) return undefined;
    const name = (match[1] as string).toLowerCase();
    const value = match[2] as string;
    if (NOT_PLAIN.has(name)) return undefined;
    const previous = headers[name];
    if (previous === undefined) headers[name] = value;
    else if (!FIRST_WINS.has(name)) headers[name] = `${previous}${name === 'cookie' ? '; ' : ', '}${value}`;
    start = end + 2;
  }
  return { target, headers };
}
