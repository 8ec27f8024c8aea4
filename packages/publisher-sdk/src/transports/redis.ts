/**
 * Redis transport: runs the append-and-publish script (lua.ts) once per event, pipelined, straight against
 * the Redis the gateways use. The normal path for services inside the cluster.
 *
 * Connection loss: events wait in this transport's own bounded queue (never in ioredis' offline queue) while
 * ioredis reconnects with backoff, and a batch that cannot be sent within `maxRetryTimeMs` is rejected and
 * dropped, so an event whose send was rejected is never stored behind the caller's back. A batch already
 * written when the connection drops has an unknown outcome: it is rejected with a NetworkError that says so
 * (retry it with an idempotency key to be safe).
 */
import { type ChainableCommander, type Cluster, Redis, ReplyError } from 'ioredis';
import { ClosedError, NetworkError, ServerError, ValidationError } from '../errors.js';
import { PUBLISH_SCRIPT } from '../lua.js';
import {
  DEFAULT_KEY_PREFIX,
  formatPosition,
  idempotencyKey,
  type Position,
  PROTOCOL_VERSION,
  parseStreamId,
  topicKeys,
} from '../protocol.js';
import type { OutgoingEvent, Transport } from '../transport.js';

export interface RedisTransportOptions {
  /**
   * `redis://` / `rediss://` URL, or an ioredis `Redis` or `Cluster` instance you own (it is not closed by
   * `close()`, and keeps its own retry settings).
   */
  readonly redis: string | Redis | Cluster;
  /** Prefix of every key and channel. Must equal the gateways' `REDIS_PREFIX`. Default `sse:`. */
  readonly prefix?: string | undefined;
  /**
   * Events kept per topic; 0 = no length limit. Default 1000. Retention is applied on every publish, by
   * whoever publishes: use the gateways' `HISTORY_MAX_LENGTH`, or the two will trim the topic differently.
   */
  readonly maxLength?: number | undefined;
  /** Age in ms after which events leave history; 0 = no limit. Default 24 h. Must match `HISTORY_MAX_AGE_MS`. */
  readonly maxAgeMs?: number | undefined;
  /** How long an idempotency key remembers the id it was first stored under, in ms. Default 24 h. */
  readonly idempotencyTtlMs?: number | undefined;
  /** Events that may wait for Redis to come back; beyond that `send` rejects with NetworkError. Default 10 000. */
  readonly maxQueuedEvents?: number | undefined;
  /**
   * How long a batch waits for Redis (to connect, or to answer) before it is rejected with a NetworkError
   * carrying the last connection error, in ms. Once Redis has been unreachable this long, sends fail at
   * once until it is back. Default 30 000.
   */
  readonly maxRetryTimeMs?: number | undefined;
}

export const DEFAULT_MAX_LENGTH = 1000;
export const DEFAULT_MAX_AGE_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_MAX_QUEUED_EVENTS = 10_000;
export const DEFAULT_MAX_RETRY_TIME_MS = 30_000;
/** Longest idempotency key, in characters: it becomes part of a Redis key. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/** Name under which the script is registered on the ioredis client (defineCommand). */
const COMMAND = 'sseGatewayPublish';
const MAX_RECONNECT_DELAY_MS = 2000;

type ScriptCall = (numberOfKeys: number, ...args: (string | number)[]) => Promise<unknown>;
type WithScript<T> = T & { [COMMAND]: ScriptCall };
/** One reply of a pipeline: ioredis' [error, result] pair. */
type Outcome = [Error | null, unknown];

interface Batch {
  readonly events: readonly OutgoingEvent[];
  readonly resolve: (positions: Position[]) => void;
  readonly reject: (error: Error) => void;
  /** Absolute time after which the batch is given up. */
  readonly deadline: number;
  /** Creation order: a batch that has to wait again goes back to its place in the queue. */
  readonly order: number;
  settled: boolean;
}

export class RedisTransport implements Transport {
  readonly #client: Redis | Cluster;
  readonly #ownsClient: boolean;
  readonly #prefix: string;
  readonly #maxLength: number;
  readonly #maxAgeMs: number;
  readonly #idempotencyTtlMs: number;
  readonly #maxQueuedEvents: number;
  readonly #maxRetryTimeMs: number;
  /** Whether ioredis re-sends commands that were in flight when a connection dropped. */
  readonly #clientResends: boolean;
  readonly #queue: Batch[] = [];
  #queuedEvents = 0;
  #created = 0;
  /** Batches written to Redis and not answered yet. */
  readonly #inFlight = new Set<Batch>();
  #timer: NodeJS.Timeout | undefined;
  /** When the connection was last lost (or the transport created before its first connect); 0 while up. */
  #downSince: number;
  #lastError: Error | undefined;
  #closed = false;
  readonly #listeners: [string, (...args: unknown[]) => void][] = [];

  constructor(options: RedisTransportOptions) {
    this.#prefix = options.prefix ?? DEFAULT_KEY_PREFIX;
    if (typeof this.#prefix !== 'string') throw new ValidationError('prefix must be a string');
    this.#maxLength = wholeNumber('maxLength', options.maxLength, DEFAULT_MAX_LENGTH, 0);
    this.#maxAgeMs = wholeNumber('maxAgeMs', options.maxAgeMs, DEFAULT_MAX_AGE_MS, 0);
    this.#idempotencyTtlMs = wholeNumber('idempotencyTtlMs', options.idempotencyTtlMs, DEFAULT_IDEMPOTENCY_TTL_MS, 1);
    this.#maxQueuedEvents = wholeNumber('maxQueuedEvents', options.maxQueuedEvents, DEFAULT_MAX_QUEUED_EVENTS, 0);
    this.#maxRetryTimeMs = wholeNumber('maxRetryTimeMs', options.maxRetryTimeMs, DEFAULT_MAX_RETRY_TIME_MS, 1);

    if (typeof options.redis === 'string') {
      this.#client = createClient(options.redis);
      this.#ownsClient = true;
      this.#clientResends = false;
    } else if (options.redis && typeof options.redis === 'object' && 'defineCommand' in options.redis) {
      this.#client = options.redis;
      this.#ownsClient = false;
      this.#clientResends = clientResends(options.redis);
    } else {
      throw new ValidationError('redis must be a redis:// URL or an ioredis Redis or Cluster instance');
    }
    this.#client.defineCommand(COMMAND, { lua: PUBLISH_SCRIPT });
    this.#downSince = this.#client.status === 'ready' ? 0 : Date.now();
    // A lazyConnect client would wait for a first command, and this transport sends none until it is ready.
    if (this.#client.status === 'wait') this.#client.connect().catch(() => {});
    this.#listen('ready', () => this.#onReady());
    this.#listen('close', () => this.#onClose());
    this.#listen('error', (error) => {
      this.#lastError = error as Error;
    });
  }

  async publish(events: readonly OutgoingEvent[]): Promise<string[]> {
    const positions = await this.publishPositions(events);
    return positions.map(formatPosition);
  }

  /** Like `publish`, with positions instead of formatted ids (for the gateway's engine). */
  publishPositions(events: readonly OutgoingEvent[]): Promise<Position[]> {
    if (this.#closed) return Promise.reject(new ClosedError());
    const problem = events.map((event) => idempotencyKeyProblem(event.idempotencyKey)).find(Boolean);
    if (problem) return Promise.reject(new ValidationError(problem));
    if (events.length === 0) return Promise.resolve([]);
    if (this.#downSince !== 0 && Date.now() - this.#downSince >= this.#maxRetryTimeMs) {
      return Promise.reject(this.#unreachable(`Redis has been unreachable for over ${this.#maxRetryTimeMs} ms`));
    }
    if (this.#queuedEvents + events.length > this.#maxQueuedEvents) {
      return Promise.reject(
        this.#unreachable(
          `${this.#queuedEvents} events already wait for Redis (maxQueuedEvents ${this.#maxQueuedEvents})`,
        ),
      );
    }
    return new Promise<Position[]>((resolve, reject) => {
      const deadline = Date.now() + this.#maxRetryTimeMs;
      const batch: Batch = { events, resolve, reject, deadline, order: this.#created++, settled: false };
      if (this.#canSend() && this.#queue.length === 0) this.#send(batch);
      else this.#enqueue(batch);
      this.#armTimer();
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const batch of this.#queue.splice(0)) this.#settle(batch, new NetworkError('the Redis transport was closed'));
    this.#queuedEvents = 0;
    if (this.#timer) clearTimeout(this.#timer);
    for (const [event, listener] of this.#listeners) this.#client.off(event, listener);
    if (!this.#ownsClient) return;
    const client = this.#client as Redis;
    if (client.status === 'ready') {
      await client.quit().catch(() => client.disconnect());
    } else {
      client.disconnect();
    }
  }

  #listen(event: string, listener: (...args: unknown[]) => void): void {
    this.#client.on(event, listener);
    this.#listeners.push([event, listener]);
  }

  /** Ready, and the socket still takes writes (it may have closed without ioredis knowing yet). */
  #canSend(): boolean {
    if (this.#client.status !== 'ready') return false;
    const stream = (this.#client as { stream?: { writable?: boolean } }).stream;
    return this.#isCluster() || stream?.writable !== false;
  }

  #enqueue(batch: Batch): void {
    this.#queue.push(batch);
    this.#queuedEvents += batch.events.length;
    if (this.#queue.length > 1 && (this.#queue.at(-2) as Batch).order > batch.order) {
      this.#queue.sort((a, b) => a.order - b.order);
    }
  }

  #onReady(): void {
    this.#downSince = 0;
    // Queued batches go out in order: publish order is the caller's order within a topic.
    const queued = this.#queue.splice(0);
    this.#queuedEvents = 0;
    for (const batch of queued) if (!batch.settled) this.#send(batch);
  }

  #onClose(): void {
    if (this.#downSince === 0) this.#downSince = Date.now();
    // A client that does not re-send would leave these promises pending forever; one that does may still
    // store them, so their answer is left to it.
    if (this.#clientResends) return;
    for (const batch of this.#inFlight) {
      this.#settle(
        batch,
        this.#unreachable(
          'the connection to Redis was lost while the events were in flight; they may have been stored',
        ),
      );
    }
  }

  #send(batch: Batch): void {
    this.#inFlight.add(batch);
    this.#execute(batch.events).then(
      (outcomes) => this.#settleOutcomes(batch, outcomes),
      (error: unknown) => this.#settle(batch, this.#classify(error)),
    );
  }

  /** One script call per event: pipelined on a single Redis; sent back to back on a cluster (a pipeline there must stay in one slot). */
  async #execute(events: readonly OutgoingEvent[]): Promise<Outcome[]> {
    if (this.#isCluster()) {
      const client = this.#client as unknown as WithScript<Cluster>;
      return Promise.all(
        events.map((event) =>
          client[COMMAND](...this.#scriptArgs(event)).then(
            (reply): Outcome => [null, reply],
            (error: Error): Outcome => [error, null],
          ),
        ),
      );
    }
    const pipeline = (this.#client as Redis).pipeline() as unknown as WithScript<ChainableCommander>;
    for (const event of events) pipeline[COMMAND](...this.#scriptArgs(event));
    return ((await pipeline.exec()) ?? []) as Outcome[];
  }

  /** numkeys, keys, then ARGV, as the publish script takes them (see lua.ts). */
  #scriptArgs(event: OutgoingEvent): [number, ...(string | number)[]] {
    const keys = topicKeys(this.#prefix, event.topic);
    const keyArgs: string[] = [keys.stream, keys.epoch];
    // Only pass the idempotency key when there is one: an empty key name would be CROSSSLOT on a cluster.
    if (event.idempotencyKey !== undefined)
      keyArgs.push(idempotencyKey(this.#prefix, event.topic, event.idempotencyKey));
    return [
      keyArgs.length,
      ...keyArgs,
      keys.channel,
      this.#maxLength,
      this.#maxAgeMs,
      event.event,
      event.data,
      this.#idempotencyTtlMs,
      String(PROTOCOL_VERSION),
    ];
  }

  #settleOutcomes(batch: Batch, outcomes: readonly Outcome[]): void {
    if (outcomes.length > 0 && outcomes.every(([error]) => error !== null && wasNeverSent(error))) {
      // ioredis refused to write (the socket was closing): nothing reached Redis, so the batch can wait.
      this.#inFlight.delete(batch);
      this.#enqueue(batch);
      this.#armTimer();
      return;
    }
    const positions: Position[] = [];
    for (let index = 0; index < batch.events.length; index++) {
      const [error, reply] = outcomes[index] ?? [new Error('no reply from Redis'), null];
      const position = error ? undefined : toPosition(reply);
      if (!position) {
        const cause = error ?? new Error(`unexpected publish script reply: ${JSON.stringify(reply)}`);
        const stored = outcomes.filter(([e]) => !e).length;
        const note = batch.events.length > 1 ? ` (event ${index + 1} of ${batch.events.length}; ${stored} stored)` : '';
        this.#settle(batch, this.#classify(cause, note));
        return;
      }
      positions.push(position);
    }
    this.#settle(batch, undefined, positions);
  }

  #settle(batch: Batch, error: Error | undefined, positions?: Position[]): void {
    if (batch.settled) return;
    batch.settled = true;
    this.#inFlight.delete(batch);
    if (error) batch.reject(error);
    else batch.resolve(positions as Position[]);
  }

  /** Redis error replies are the server's; anything else (closed connection, timeouts) is the network's. */
  #classify(error: unknown, note = ''): Error {
    if (error instanceof ReplyError) {
      const message = (error as Error).message;
      const code = message.split(' ', 1)[0];
      return new ServerError(`Redis refused the publish: ${message}${note}`, { cause: error, code });
    }
    const message = error instanceof Error ? error.message : String(error);
    return this.#unreachable(`could not publish to Redis${note}: ${message}`, error);
  }

  #unreachable(message: string, cause: unknown = this.#lastError): NetworkError {
    const detail = cause instanceof Error && !message.includes(cause.message) ? `: ${cause.message}` : '';
    return new NetworkError(`${message}${detail}`, { cause });
  }

  /** One timer for the whole queue and in-flight set: fires at the earliest deadline. */
  #armTimer(): void {
    if (this.#timer || this.#closed) return;
    const earliest = this.#earliestDeadline();
    if (earliest === undefined) return;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, earliest - Date.now()));
    this.#timer.unref();
  }

  #earliestDeadline(): number | undefined {
    let earliest: number | undefined;
    for (const batch of this.#queue) if (earliest === undefined || batch.deadline < earliest) earliest = batch.deadline;
    for (const batch of this.#inFlight)
      if (earliest === undefined || batch.deadline < earliest) earliest = batch.deadline;
    return earliest;
  }

  #expire(): void {
    this.#timer = undefined;
    const now = Date.now();
    const waiting = this.#queue.splice(0);
    this.#queuedEvents = 0;
    for (const batch of waiting) {
      if (batch.settled) continue;
      if (batch.deadline <= now) {
        this.#settle(batch, this.#unreachable(`Redis could not be reached within ${this.#maxRetryTimeMs} ms`));
      } else {
        this.#queue.push(batch);
        this.#queuedEvents += batch.events.length;
      }
    }
    for (const batch of this.#inFlight) {
      if (batch.deadline <= now) {
        this.#settle(
          batch,
          this.#unreachable(`Redis did not answer within ${this.#maxRetryTimeMs} ms; the events may have been stored`),
        );
      }
    }
    this.#armTimer();
  }

  #isCluster(): boolean {
    return (this.#client as { isCluster?: boolean }).isCluster === true;
  }
}

function createClient(url: string): Redis {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new ValidationError(`redis is not a valid URL: ${url}`, { cause });
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new ValidationError(`redis URL must start with redis:// or rediss://, got ${parsed.protocol}//`);
  }
  return new Redis(url, {
    // RESP2 until RESP3 is tested end to end (ioredis 6 defaults to RESP3).
    protocol: 2,
    // The transport queues while disconnected itself, with a bound and a deadline; ioredis' queue has neither.
    enableOfflineQueue: false,
    // A re-sent publish would be stored twice; the transport rejects in-flight batches instead.
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: null,
    // Keep reconnecting for the publisher's lifetime: sends made after an outage should work again.
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), MAX_RECONNECT_DELAY_MS) + Math.random() * 50,
    connectionName: 'sse-gateway-publisher',
  });
}

/** ioredis' refusal to write to a closing socket when its offline queue is off: the command never left. */
function wasNeverSent(error: Error): boolean {
  return error.message.includes("Stream isn't writeable");
}

/** Whether ioredis re-sends commands in flight when the connection drops (a Cluster always retries its own way). */
function clientResends(client: Redis | Cluster): boolean {
  if ((client as { isCluster?: boolean }).isCluster) return true;
  const options = (client as { options?: { autoResendUnfulfilledCommands?: boolean } }).options;
  return options?.autoResendUnfulfilledCommands !== false;
}

function wholeNumber(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min)
    throw new ValidationError(`${name} must be a whole number >= ${min}`);
  return value;
}

function idempotencyKeyProblem(key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (typeof key !== 'string' || key.length === 0) return 'idempotencyKey must be a non-empty string';
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH)
    return `idempotencyKey is longer than ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`;
  return undefined;
}

/** The script answers `{ epoch, 'ms-seq' }`; undefined for anything else. */
function toPosition(reply: unknown): Position | undefined {
  if (!Array.isArray(reply)) return undefined;
  const [epoch, id] = reply as unknown[];
  const streamId = typeof id === 'string' ? parseStreamId(id) : undefined;
  if (typeof epoch !== 'string' || !streamId) return undefined;
  return { epoch, ms: streamId.ms, seq: streamId.seq };
}
