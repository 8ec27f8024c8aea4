/**
 * WIRE BYTES: the one place that turns an event into WHATWG server-sent-events text. Pure functions,
 * tested byte for byte and property-tested against a real SSE parser.
 */
import { DEFAULT_EVENT } from '@sse-gateway/publisher-sdk/protocol';

export interface FrameFields {
  /** Event id; must not contain CR, LF or NUL (ids are produced by the engine, never by clients). */
  readonly id?: string | undefined;
  /** Event type; omitted from the frame when it is the default `message`. */
  readonly event?: string | undefined;
  /** Payload text; split on CR, LF and CRLF into `data:` lines. */
  readonly data: string;
}

const LINE_BREAK = /\r\n|\r|\n/;

/** The frame's body, everything but the `id:` line; shared by every connection of a topic. */
export function encodeBody(event: string | undefined, data: string): string {
  let out = event === undefined || event === DEFAULT_EVENT ? '' : `event: ${event}\n`;
  for (const line of data.split(LINE_BREAK)) out += `data: ${line}\n`;
  return `${out}\n`;
}

export function encodeFrame(fields: FrameFields): string {
  const id = fields.id === undefined ? '' : `id: ${fields.id}\n`;
  return id + encodeBody(fields.event, fields.data);
}

/** `retry:` tells EventSource how long to wait before reconnecting. */
export function encodeRetry(ms: number): string {
  return `retry: ${Math.max(0, Math.round(ms))}\n\n`;
}

/** A comment line: ignored by clients, keeps proxies and NATs from closing an idle stream. */
export const HEARTBEAT = Buffer.from(':\n\n');
