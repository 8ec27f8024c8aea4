/**
 * Reads a request header from Node's own header object. hono's `c.req.header()` builds a web `Headers`
 * object that @hono/node-server keeps referenced until the response closes: for an hour-long event
 * stream that is kilobytes per connection held for nothing.
 */
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';
import { parse } from 'hono/utils/cookie';

export function requestHeader(c: Context, name: string): string | undefined {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return c.req.header(name);
  const value = incoming.headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

export function requestCookie(c: Context, name: string): string | undefined {
  const header = requestHeader(c, 'cookie');
  return header ? parse(header, name)[name] : undefined;
}
