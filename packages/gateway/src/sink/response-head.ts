/**
 * HTTP/1.1 response heads for the connections the gateway writes to itself (socket-sink.ts,
 * socket-exchange.ts), in the shape node:http gives them: the status line, the given fields in order,
 * `Date`, and `Connection: close` (every such answer owns its connection and ends it).
 */
import { STATUS_CODES } from 'node:http';

/** Field lines of header objects shared by many streams (frozen), rendered once. */
const renderedFields = new WeakMap<Readonly<Record<string, string>>, string>();
let dateSecond = -1;
let dateField = '';

/** The head, as a Latin-1 string (write it with that encoding: field values are bytes, as Node reads them). */
export function responseHead(status: number, headers: Readonly<Record<string, string>>): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${fieldLines(headers)}${currentDateField()}Connection: close\r\n\r\n`;
}

function fieldLines(headers: Readonly<Record<string, string>>): string {
  const cached = renderedFields.get(headers);
  if (cached !== undefined) return cached;
  let lines = '';
  for (const name in headers) lines += `${name}: ${headers[name]}\r\n`;
  if (Object.isFrozen(headers)) renderedFields.set(headers, lines);
  return lines;
}

/** `Date:` changes once a second; rendered once per second, not per head (as Node caches it too). */
function currentDateField(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateField = `Date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateField;
}
