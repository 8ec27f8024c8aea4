/**
 * What routes read of a request: headers (from Node's own header object) and query parameters. Both the
 * hono routes and the GET /events fast path (events-fast-path.ts) hand one to the access policy and the
 * events route, so neither depends on hono's Context.
 */
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Context } from 'hono';
import { parse } from 'hono/utils/cookie';
import type { RequestHead } from './request-head.js';
import { requestHeader } from './request-header.js';

export interface RequestView {
  header(name: string): string | undefined;
  cookie(name: string): string | undefined;
  /** The first value of a query parameter. */
  query(name: string): string | undefined;
  /** Every value of a repeated query parameter; undefined when absent. */
  queries(name: string): string[] | undefined;
}

export function viewOfContext(c: Context): RequestView {
  return {
    header: (name) => requestHeader(c, name),
    cookie: (name) => cookieOf(requestHeader(c, 'cookie'), name),
    query: (name) => c.req.query(name),
    queries: (name) => c.req.queries(name),
  };
}

/** A view of Node's request; `search` is the URL's query string without the `?`. */
export function viewOfNode(incoming: IncomingMessage | Http2ServerRequest, search: string): RequestView {
  return viewOf((name) => {
    const value = incoming.headers[name.toLowerCase()];
    return Array.isArray(value) ? value.join(', ') : value;
  }, search);
}

/** A view of a request head the gateway read itself (request-head.ts); `search` as for viewOfNode. */
export function viewOfHead(head: RequestHead, search: string): RequestView {
  return viewOf((name) => head.headers[name.toLowerCase()], search);
}

function viewOf(header: (name: string) => string | undefined, search: string): RequestView {
  const params = new URLSearchParams(search);
  return {
    header,
    cookie: (name) => cookieOf(header('cookie'), name),
    query: (name) => params.get(name) ?? undefined,
    queries: (name) => (params.has(name) ? params.getAll(name) : undefined),
  };
}

function cookieOf(header: string | undefined, name: string): string | undefined {
  return header ? parse(header, name)[name] : undefined;
}
