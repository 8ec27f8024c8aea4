/// <reference types="node" />
/**
 * Shared helpers of the gateway suites: an in-process gateway on a free port with the embedded engine,
 * real `eventsource` clients that record what they receive, raw streams for byte-level checks, and
 * small HTTP helpers for /publish, /metrics and /stats.
 */
import { createServer } from 'node:net';
import { EventSource } from 'eventsource';
import { pino } from 'pino';
import { type Config, configWith } from '../../src/config.js';
import type { Engine } from '../../src/engine/engine.js';
import { MemoryEngine } from '../../src/engine/memory-engine.js';
import { type Gateway, startGateway } from '../../src/gateway.js';
import { waitFor } from './wait.js';

export interface TestGateway {
  readonly gateway: Gateway;
  /** Base URL, `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The admin listener's base URL (/stats, /metrics, the admin API), on its own free port. */
  readonly adminUrl: string;
  /** Closes every stream at once (no drain spread) and stops the engine. */
  close(): Promise<void>;
}

/**
 * Starts a gateway on 127.0.0.1 and a free port, with the embedded engine, a silent logger and test-sized
 * timings (short retry, no retry jitter, no drain); `overrides` win.
 */
export async function startTestGateway(
  overrides: Partial<Config> = {},
  options: { readonly engine?: (config: Config) => Engine } = {},
): Promise<TestGateway> {
  const config = configWith({
    port: 0,
    host: '127.0.0.1',
    adminPort: 0,
    redisUrl: undefined,
    logLevel: 'silent',
    retryMs: 100,
    retryJitter: 0,
    drainMs: 0,
    ...overrides,
  });
  const engine = options.engine?.(config);
  const gateway = await startGateway(config, { logger: pino({ level: 'silent' }), ...(engine ? { engine } : {}) });
  return {
    gateway,
    url: gateway.url,
    adminUrl: gateway.adminUrl ?? gateway.url,
    close: () => gateway.close(0),
  };
}

export interface Latency {
  /** Delay before the engine registers a subscription (a SUBSCRIBE round trip). */
  readonly subscribeMs?: number;
  /** Delay of reading a topic's head (an XREVRANGE round trip). */
  readonly headMs?: number;
  /** Delay of every history page, read at the end of the delay (an XRANGE round trip). */
  readonly readAfterMs?: number;
}

/**
 * The embedded engine with the round-trip latency of a networked one: the in-memory engine answers in
 * microtasks, which hides every race between history reads and live publications that Redis exposes.
 */
export function memoryEngineWithLatency(latency: Latency): (config: Config) => Engine {
  return (config) => {
    const inner = new MemoryEngine({ maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs });
    const delay = async (ms: number | undefined) => {
      if (ms) await new Promise((resolve) => setTimeout(resolve, ms));
    };
    const slowed: Partial<Engine> = {
      subscribe: async (topic) => {
        await delay(latency.subscribeMs);
        await inner.subscribe(topic);
      },
      head: async (topic) => {
        await delay(latency.headMs);
        return inner.head(topic);
      },
      readAfter: async (topic, after, limit) => {
        await delay(latency.readAfterMs);
        return inner.readAfter(topic, after, limit);
      },
    };
    // Everything else goes straight to the engine (bound: it keeps private fields).
    return new Proxy(inner, {
      get(target, property) {
        if (Object.hasOwn(slowed, property)) return slowed[property as keyof Engine];
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
}

/** `/events` URL of `topics` (repeated `topic` parameters), plus any extra query parameters. */
export function eventsUrl(
  base: string,
  topics: string | readonly string[],
  query: Record<string, string> = {},
): string {
  const url = new URL('/events', base);
  for (const topic of typeof topics === 'string' ? [topics] : topics) url.searchParams.append('topic', topic);
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  return url.href;
}

// ---------------------------------------------------------------------------------------------------
// EventSource clients
// ---------------------------------------------------------------------------------------------------

export interface Received {
  /** `lastEventId` of the MessageEvent: the event's id. */
  readonly id: string;
  /** Event type (`message` for the default). */
  readonly event: string;
  readonly data: string;
}

export interface CollectOptions {
  /** Resume point of the first connection, sent as the Last-Event-ID header (default) or query parameter. */
  readonly lastEventId?: string | undefined;
  readonly lastEventIdVia?: 'header' | 'query';
  /** Event types to record besides `message` and `gateway.reset`. */
  readonly events?: readonly string[];
  /** Extra request headers of every connection attempt. */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Collector {
  readonly source: EventSource;
  /** Every event received, in order, across reconnects. */
  readonly events: Received[];
  /** `open` events: 1 after the first connect, +1 per reconnect. */
  readonly opens: number;
  /** `error` events: a stream that ended or failed (EventSource then reconnects unless it is fatal). */
  readonly errors: number;
  /** Status codes of failed connection attempts (from the ErrorEvent), in order. */
  readonly errorCodes: readonly (number | undefined)[];
  /** Id of the last event received, or the initial resume point. */
  readonly lastEventId: string | undefined;
  /** Resolves once `count` events were received. */
  waitForCount(count: number, options?: { timeoutMs?: number; what?: string }): Promise<void>;
  /** Resolves once the connection is open (at least `count` opens). */
  waitForOpen(count?: number, options?: { timeoutMs?: number }): Promise<void>;
  close(): void;
}

const openCollectors = new Set<Collector>();

/** Wraps an `eventsource` EventSource on `url` (a full /events URL) and records what it receives. */
export function collect(url: string, options: CollectOptions = {}): Collector {
  const events: Received[] = [];
  const errorCodes: (number | undefined)[] = [];
  let opens = 0;
  let errors = 0;
  let lastEventId = options.lastEventId;
  const via = options.lastEventIdVia ?? 'header';
  const target = new URL(url);
  if (options.lastEventId !== undefined && via === 'query') target.searchParams.set('lastEventId', options.lastEventId);

  const source = new EventSource(target, {
    fetch: (input, init) => {
      const headers: Record<string, string> = { ...options.headers };
      // EventSource sends its own Last-Event-ID once it has seen an event; until then, ours.
      if (options.lastEventId !== undefined && via === 'header') headers['Last-Event-ID'] = options.lastEventId;
      return fetch(input, { ...init, headers: { ...headers, ...init.headers } });
    },
  });
  const record = (message: MessageEvent) => {
    events.push({ id: message.lastEventId, event: message.type, data: String(message.data) });
    lastEventId = message.lastEventId;
  };
  for (const type of new Set(['message', 'gateway.reset', ...(options.events ?? [])])) {
    source.addEventListener(type, record);
  }
  source.addEventListener('open', () => {
    opens++;
  });
  source.addEventListener('error', (error) => {
    errors++;
    errorCodes.push(error.code);
  });

  const collector: Collector = {
    source,
    events,
    get opens() {
      return opens;
    },
    get errors() {
      return errors;
    },
    errorCodes,
    get lastEventId() {
      return lastEventId;
    },
    async waitForCount(count, waitOptions = {}) {
      await waitFor(() => events.length >= count, {
        timeoutMs: waitOptions.timeoutMs ?? 30_000,
        what: `${waitOptions.what ?? `${count} events on ${url}`} (have ${events.length})`,
      }).catch((error: Error) => {
        throw new Error(`${error.message}; received ${events.length}`);
      });
    },
    async waitForOpen(count = 1, waitOptions = {}) {
      await waitFor(() => opens >= count, {
        timeoutMs: waitOptions.timeoutMs ?? 20_000,
        what: `${count} open(s) of ${url}`,
      });
    },
    close() {
      source.close();
      openCollectors.delete(collector);
    },
  };
  openCollectors.add(collector);
  return collector;
}

/** Closes every collector still open (call in afterEach/afterAll). */
export function closeAllCollectors(): void {
  for (const collector of [...openCollectors]) collector.close();
}

// ---------------------------------------------------------------------------------------------------
// Raw streams: the bytes on the wire
// ---------------------------------------------------------------------------------------------------

export interface RawStream {
  readonly status: number;
  readonly headers: Headers;
  /** Everything received so far, decoded as UTF-8. */
  readonly text: string;
  /** True once the body ended (the server closed the stream). */
  readonly ended: boolean;
  /** Set when reading failed (reset, abort). */
  readonly error: unknown;
  /** Resolves when the body ends or fails. */
  readonly finished: Promise<void>;
  close(): void;
}

const openRawStreams = new Set<RawStream>();

/** GETs `url` with fetch and keeps reading its body in the background. */
export async function rawStream(url: string, headers: Record<string, string> = {}): Promise<RawStream> {
  const controller = new AbortController();
  const response = await fetch(url, {
    headers: { accept: 'text/event-stream', ...headers },
    signal: controller.signal,
  });
  let text = '';
  let ended = false;
  let error: unknown;
  const decoder = new TextDecoder();
  const finished = (async () => {
    if (!response.body) {
      ended = true;
      return;
    }
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      ended = true;
    } catch (cause) {
      error = cause;
    }
  })();
  const stream: RawStream = {
    status: response.status,
    headers: response.headers,
    get text() {
      return text;
    },
    get ended() {
      return ended;
    },
    get error() {
      return error;
    },
    finished,
    close() {
      controller.abort();
      openRawStreams.delete(stream);
    },
  };
  openRawStreams.add(stream);
  return stream;
}

export function closeAllRawStreams(): void {
  for (const stream of [...openRawStreams]) stream.close();
}

/** Occurrences of `needle` in `haystack`. */
export function countOf(haystack: string, needle: string): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + needle.length)) count++;
  return count;
}

// ---------------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------------

export interface JsonResponse<T = unknown> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: T;
  readonly text: string;
}

/** POSTs `body` (JSON-encoded unless it is already a string) to `{base}/publish`. */
export async function publish<T = { id?: string; ids: string[] }>(
  base: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<JsonResponse<T>> {
  const response = await fetch(new URL('/publish', base), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return readJson<T>(response);
}

/** Publishes `datas` on `topic` in batches; resolves with their ids, in order. Throws on any non-200. */
export async function publishAll(
  base: string,
  topic: string,
  datas: readonly unknown[],
  options: { event?: string; batchSize?: number } = {},
): Promise<string[]> {
  const ids: string[] = [];
  const batchSize = options.batchSize ?? 100;
  for (let start = 0; start < datas.length; start += batchSize) {
    const batch = datas.slice(start, start + batchSize).map((data) => ({ topic, event: options.event, data }));
    const response = await publish(base, batch);
    if (response.status !== 200) throw new Error(`publish answered ${response.status}: ${response.text}`);
    ids.push(...response.body.ids);
  }
  return ids;
}

export async function readJson<T = unknown>(response: Response): Promise<JsonResponse<T>> {
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: response.status, headers: response.headers, body: body as T, text };
}

export async function getJson<T = unknown>(url: string, init: RequestInit = {}): Promise<JsonResponse<T>> {
  return readJson<T>(await fetch(url, init));
}

export interface Stats {
  readonly connections: number;
  readonly topics: number;
  readonly consumers: Record<string, number>;
}

export async function stats(base: string, topics: readonly string[] = []): Promise<Stats> {
  const url = new URL('/stats', base);
  for (const topic of topics) url.searchParams.append('topic', topic);
  const response = await getJson<Stats>(url.href);
  if (response.status !== 200) throw new Error(`/stats answered ${response.status}`);
  return response.body;
}

/** Value of one sample of /metrics (0 when absent), e.g. metric(url, 'sse_gateway_disconnects_total', { reason: 'slow-consumer' }). */
export async function metric(base: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(new URL('/metrics', base))).text();
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = (match[2] ?? '').split(',');
    if (wanted.every((label) => present.includes(label))) return Number(match[3]);
  }
  return 0;
}

/** A port nothing listens on (bound, then released). */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Sequence numbers carried as data ("0", "1", ...), parsed back. */
export function numbers(received: readonly Received[]): number[] {
  return received.map((event) => Number(event.data));
}

/** [from, from+1, ..., to-1]. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, index) => from + index);
}
