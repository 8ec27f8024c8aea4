/** HTTP transport: POSTs batches to a gateway's `/publish`. For the embedded mode and for services without Redis access. */
import { AuthError, NetworkError, ServerError, ValidationError } from '../errors.js';
import type { OutgoingEvent, Transport } from '../transport.js';

export interface HttpTransportOptions {
  /** Base URL of a gateway (or its load balancer), e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** Bearer token with a publish grant; needed once the gateway has auth keys configured. */
  readonly token?: string | undefined;
  /** Per-request timeout in milliseconds. Default 10 000. */
  readonly timeoutMs?: number | undefined;
  /** Events per request; larger batches go out as several requests, in order. Default 100 (the gateway's MAX_BATCH_SIZE). */
  readonly maxBatchSize?: number | undefined;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_BATCH_SIZE = 100;

export class HttpTransport implements Transport {
  readonly #endpoint: string;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #maxBatchSize: number;

  constructor(options: HttpTransportOptions) {
    let base: URL;
    try {
      base = new URL(options.url);
    } catch (cause) {
      throw new ValidationError(`url is not a valid URL: ${options.url}`, { cause });
    }
    this.#endpoint = new URL('publish', base.href.endsWith('/') ? base.href : `${base.href}/`).href;
    this.#headers = { 'content-type': 'application/json' };
    if (options.token) this.#headers.authorization = `Bearer ${options.token}`;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxBatchSize = Math.max(1, options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE);
  }

  /** Sends `events` in requests of at most maxBatchSize, one after the other so per-topic order holds. */
  async publish(events: readonly OutgoingEvent[]): Promise<string[]> {
    const ids: string[] = [];
    for (let start = 0; start < events.length; start += this.#maxBatchSize) {
      ids.push(...(await this.#publishBatch(events.slice(start, start + this.#maxBatchSize))));
    }
    return ids;
  }

  async #publishBatch(events: readonly OutgoingEvent[]): Promise<string[]> {
    const body = JSON.stringify(events.map(({ topic, event, data }) => ({ topic, event, data })));
    let response: Response;
    try {
      response = await fetch(this.#endpoint, {
        method: 'POST',
        headers: this.#headers,
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (cause) {
      throw new NetworkError(`could not reach ${this.#endpoint}: ${(cause as Error).message}`, {
        cause,
        maybeStored: !neverSent(cause),
      });
    }
    const text = await response.text().catch(() => '');
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      const message = `gateway answered ${response.status}: ${error?.message ?? text.slice(0, 200)}`;
      const options = { status: response.status, code: error?.code };
      if (response.status === 401 || response.status === 403) throw new AuthError(message, options);
      if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429)
        throw new ValidationError(message, options);
      throw new ServerError(message, options);
    }
    const ids = (parsed as { ids?: unknown } | undefined)?.ids;
    if (!Array.isArray(ids) || ids.length !== events.length || !ids.every((id) => typeof id === 'string')) {
      throw new ServerError(`gateway answered without the expected ids: ${text.slice(0, 200)}`, {
        status: response.status,
      });
    }
    return ids as string[];
  }

  async close(): Promise<void> {}
}

/**
 * Connection errors that happen before a byte of the request is sent; anything else (a timeout, a reset)
 * may come after the gateway got the request and stored the events.
 */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

function neverSent(error: unknown): boolean {
  // fetch wraps the socket error: TypeError('fetch failed', { cause: { code } }).
  const code = ((error as { cause?: { code?: unknown } } | undefined)?.cause?.code ?? '') as string;
  return NOT_SENT_CODES.has(code);
}
