/**
 * THE wire contract between publishers and gateways: topic and event rules, event ids (cursors),
 * Redis key layout and the pub/sub message encoding. Publishers in other languages implement exactly
 * this (see docs/wire-format.md); the gateway imports it so the two can never drift apart.
 */

/**
 * Version of the live message publishers send. v2 names each event's predecessor; gateways read v1 and v2,
 * so upgrade gateways before publishers.
 */
export const PROTOCOL_VERSION = 2;

/** Longest topic name, in characters. */
export const MAX_TOPIC_LENGTH = 200;
/** Longest event name, in characters. */
export const MAX_EVENT_NAME_LENGTH = 128;
/** Event names starting with this are the gateway's own (for example `gateway.reset`). */
export const RESERVED_EVENT_PREFIX = 'gateway.';
/** The default SSE event type: sent without an `event:` line. */
export const DEFAULT_EVENT = 'message';

/**
 * Topics are path-like names (`orders/42`, `user/alice/inbox`). The charset excludes `{` `}` (Redis hash
 * tags), `,` (the multi-topic id separator), `*` (grant wildcards), whitespace and control characters.
 */
const TOPIC_PATTERN = /^[A-Za-z0-9_\-.~:@/=+]+$/;

export function topicProblem(topic: unknown): string | undefined {
  if (typeof topic !== 'string') return 'topic must be a string';
  if (topic.length === 0) return 'topic must not be empty';
  if (topic.length > MAX_TOPIC_LENGTH) return `topic is longer than ${MAX_TOPIC_LENGTH} characters`;
  if (!TOPIC_PATTERN.test(topic)) return 'topic may only contain letters, digits and _ - . ~ : @ / = +';
  return undefined;
}

export function eventNameProblem(event: unknown): string | undefined {
  if (typeof event !== 'string') return 'event must be a string';
  if (event.length === 0) return 'event must not be empty';
  if (event.length > MAX_EVENT_NAME_LENGTH) return `event is longer than ${MAX_EVENT_NAME_LENGTH} characters`;
  // A CR, LF or NUL would end the `event:` line early and let a publisher forge other fields.
  if (/[\r\n\0]/.test(event)) return 'event must not contain CR, LF or NUL';
  if (event.startsWith(RESERVED_EVENT_PREFIX))
    return `event names starting with "${RESERVED_EVENT_PREFIX}" are reserved`;
  return undefined;
}

/** Turns a publish payload into the text carried on `data:` lines: strings as they are, anything else as JSON. */
export function dataToText(data: unknown): string {
  if (typeof data === 'string') return data;
  if (data === undefined) return '';
  const json = JSON.stringify(data);
  if (json === undefined) throw new TypeError('data is not JSON-serialisable');
  return json;
}

// ---------------------------------------------------------------------------------------------------
// Positions and event ids
// ---------------------------------------------------------------------------------------------------

/**
 * A position in one topic's history: the Redis stream entry id `ms-seq` plus the topic's epoch, which
 * changes whenever the stream is created anew (first publish, flush, eviction, failover to an empty
 * replica). A position is only comparable with another of the same epoch.
 */
export interface Position {
  readonly epoch: string;
  readonly ms: number;
  readonly seq: number;
}

/** The position before any event: a client that has seen nothing of a topic that does not exist yet. */
export const ORIGIN: Position = Object.freeze({ epoch: '', ms: 0, seq: 0 });

const EPOCH_PATTERN = /^[0-9a-z]{0,16}$/;
/** Longest single-topic event id: epoch (16) + ':' + two 16-digit numbers and '-'. */
export const MAX_TOPIC_ID_LENGTH = 16 + 1 + 16 + 1 + 16;

/** `epoch:ms-seq`, the event id of a single-topic stream and the per-topic part of a multi-topic id. */
export function formatPosition(p: Position): string {
  return `${p.epoch}:${p.ms}-${p.seq}`;
}

/** Parses `epoch:ms-seq`; undefined when the text could never have been issued. */
export function parsePosition(text: string): Position | undefined {
  if (text.length > MAX_TOPIC_ID_LENGTH) return undefined;
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  const epoch = text.slice(0, colon);
  if (!EPOCH_PATTERN.test(epoch)) return undefined;
  const streamId = parseStreamId(text.slice(colon + 1));
  if (!streamId) return undefined;
  return { epoch, ms: streamId.ms, seq: streamId.seq };
}

/** Parses a Redis stream entry id `ms-seq`. */
export function parseStreamId(text: string): { ms: number; seq: number } | undefined {
  const dash = text.indexOf('-');
  if (dash <= 0 || dash > 16 || text.length - dash - 1 > 16 || text.length - dash - 1 === 0) return undefined;
  const msText = text.slice(0, dash);
  const seqText = text.slice(dash + 1);
  if (!/^\d+$/.test(msText) || !/^\d+$/.test(seqText)) return undefined;
  const ms = Number(msText);
  const seq = Number(seqText);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { ms, seq };
}

/** Orders two positions of the same epoch: negative, zero or positive. */
export function comparePositions(a: Position, b: Position): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

/**
 * The id a connection following several topics sends back: one position per topic, in the order of the
 * connection's (sorted, de-duplicated) topic list, joined by commas.
 */
export const MULTI_TOPIC_SEPARATOR = ',';

// ---------------------------------------------------------------------------------------------------
// Redis layout
// ---------------------------------------------------------------------------------------------------

/** Default prefix of every key and channel; configurable so several deployments can share a Redis. */
export const DEFAULT_KEY_PREFIX = 'sse:';

/**
 * Keys of one topic. The `{topic}` hash tag keeps the stream, the epoch and idempotency keys in one
 * cluster slot, so the publish script can touch them atomically on Redis Cluster.
 */
export interface TopicKeys {
  /** Redis Stream holding the topic's history; entries have fields `e` (event), `d` (data) and, from v2, `p` (predecessor id). */
  readonly stream: string;
  /** String holding the topic's epoch. */
  readonly epoch: string;
  /** Pub/sub channel carrying every new entry as a live message. */
  readonly channel: string;
}

export function topicKeys(prefix: string, topic: string): TopicKeys {
  const base = `${prefix}{${topic}}`;
  return { stream: `${base}:s`, epoch: `${base}:e`, channel: `${base}:c` };
}

/** Key remembering the id assigned to a publish carrying an idempotency key. */
export function idempotencyKey(prefix: string, topic: string, key: string): string {
  return `${prefix}{${topic}}:i:${key}`;
}

/** Extracts the topic from a channel name built by `topicKeys`; undefined for foreign channels. */
export function topicOfChannel(prefix: string, channel: string): string | undefined {
  if (!channel.startsWith(`${prefix}{`) || !channel.endsWith('}:c')) return undefined;
  return channel.slice(prefix.length + 1, -3);
}

// ---------------------------------------------------------------------------------------------------
// Live message
// ---------------------------------------------------------------------------------------------------

/**
 * The pub/sub message. v1: `1\n<epoch>\n<ms-seq>\n<event>\n<data>`; v2 adds the entry that preceded this
 * one in the stream: `2\n<epoch>\n<ms-seq>\n<prev ms-seq>\n<event>\n<data>` (`0-0` when the event starts an
 * epoch). Every field but data is LF-free, so data goes last and needs no escaping; decoding is a few
 * indexOf calls, no JSON on the hot path.
 */
export interface LiveMessage {
  readonly epoch: string;
  readonly ms: number;
  readonly seq: number;
  /** The stream entry before this one (v2); undefined in v1 messages. */
  readonly prev?: { readonly ms: number; readonly seq: number } | undefined;
  readonly event: string;
  readonly data: string;
}

export function encodeLiveMessage(m: LiveMessage): string {
  if (!m.prev) return `1\n${m.epoch}\n${m.ms}-${m.seq}\n${m.event}\n${m.data}`;
  return `2\n${m.epoch}\n${m.ms}-${m.seq}\n${m.prev.ms}-${m.prev.seq}\n${m.event}\n${m.data}`;
}

export function decodeLiveMessage(text: string): LiveMessage | undefined {
  const a = text.indexOf('\n');
  const version = a < 0 ? '' : text.slice(0, a);
  if (version !== '1' && version !== '2') return undefined;
  const b = text.indexOf('\n', a + 1);
  const c = b < 0 ? -1 : text.indexOf('\n', b + 1);
  if (c < 0) return undefined;
  const id = parseStreamId(text.slice(b + 1, c));
  if (!id) return undefined;
  let prev: { ms: number; seq: number } | undefined;
  let eventStart = c + 1;
  if (version === '2') {
    const p = text.indexOf('\n', c + 1);
    if (p < 0) return undefined;
    prev = parseStreamId(text.slice(c + 1, p));
    if (!prev) return undefined;
    eventStart = p + 1;
  }
  const d = text.indexOf('\n', eventStart);
  if (d < 0) return undefined;
  return {
    epoch: text.slice(a + 1, b),
    ms: id.ms,
    seq: id.seq,
    prev,
    event: text.slice(eventStart, d),
    data: text.slice(d + 1),
  };
}
