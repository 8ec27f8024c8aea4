/**
 * The Redis engine: history in one Redis Stream per topic, live fan-out over pub/sub. Publishing runs the
 * SDK's append-and-publish script (the same code path as a publisher talking to Redis directly), reads
 * run one small script so the epoch, the stream's metadata and its entries are one consistent snapshot.
 *
 * Live delivery is lossless: per subscribed topic the engine remembers the last position it pushed to the
 * sink, drops live messages at or before it, and whenever the subscriber connection comes back it refills
 * every topic from the stream after that position before letting newer live messages through.
 */
import { RedisTransport } from '@sse-gateway/publisher-sdk';
import {
  comparePositions,
  decodeLiveMessage,
  type LiveMessage,
  ORIGIN,
  type Position,
  parseStreamId,
  topicKeys,
  topicOfChannel,
} from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type {
  Engine,
  GapSink,
  HistoryPage,
  Publication,
  PublicationSink,
  PublishRequest,
  Retention,
} from './engine.js';

export interface RedisEngineOptions {
  readonly url: string;
  /** Prefix of every key and channel (`REDIS_PREFIX`). */
  readonly prefix: string;
  readonly retention: Retention;
  readonly logger: Logger;
  /** How long a publish waits for Redis (to reconnect, or to answer) before it fails. Default 10 000 ms. */
  readonly publishTimeoutMs?: number | undefined;
}

/** Counters for the metrics module. */
export interface RedisEngineStats {
  /** Topic refills from history after the subscriber connection came back. */
  refills: number;
  /** Refills that found history could not fill the gap (trimmed, lost or rewound stream). */
  resets: number;
  /** Errors reported by either Redis connection, and failed refill or subscription attempts. */
  redisErrors: number;
  /** Round trips to Redis for reads, publishes (one per pipelined batch) and claims; pub/sub excluded. */
  roundTrips: number;
}

/**
 * KEYS[1] stream, KEYS[2] epoch; ARGV[1] after epoch ('' = from the origin), ARGV[2] after 'ms-seq',
 * ARGV[3] most entries to return (0 = metadata only).
 * Returns {} when the topic has no history, else { epoch, last-generated-id, max-deleted-entry-id, entries }.
 * Entries are read only when readAfter will serve events (same rules as there), so a reset reads no payloads.
 */
const READ_SCRIPT = `
local stream, epochKey = KEYS[1], KEYS[2]
local afterEpoch, after, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', stream) == 0 then return {} end
local epoch = redis.call('GET', epochKey)
if not epoch then return {} end
local info = redis.call('XINFO', 'STREAM', stream)
local last, maxDeleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then maxDeleted = info[i + 1] end
end
local function less(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local am, bm = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if am ~= bm then return am < bm end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end
local entries = {}
if count > 0 then
  local start
  if afterEpoch == '' then
    if maxDeleted == '0-0' then start = '-' end
  elseif afterEpoch == epoch and not less(last, after) and not less(after, maxDeleted) then
    start = '(' .. after
  end
  if start then entries = redis.call('XRANGE', stream, start, '+', 'COUNT', count) end
end
return { epoch, last, maxDeleted, entries }
`;
const READ_COMMAND = 'sseGatewayRead';

type RawEntry = [string, string[]];
type ReadReply = [] | [string, string, string, RawEntry[]];

interface StreamSnapshot {
  readonly epoch: string;
  readonly last: Position;
  /** Newest entry removed by retention; ms 0, seq 0 when nothing was removed. */
  readonly maxDeleted: Position;
  readonly entries: readonly RawEntry[];
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

interface TopicState {
  readonly topic: string;
  readonly channel: string;
  /** What the hub asked for last. */
  wanted: boolean;
  /** Bumped by every subscribe/unsubscribe, so late answers to an older request are recognised. */
  gen: number;
  /** The `gen` whose SUBSCRIBE Redis confirmed. */
  confirmedGen: number;
  /** Whether the last (UN)SUBSCRIBE issued for the channel was a SUBSCRIBE. */
  sentSubscribed: boolean;
  /** Last position pushed to the sink (or the head when the subscription started); undefined before that. */
  last: Position | undefined;
  /** Live messages held while the topic starts or refills; null while messages flow straight to the sink. */
  buffer: LiveMessage[] | null;
  /** A refill from `last` is needed (the subscriber reconnected, or the buffer overflowed). */
  dirty: boolean;
  /** A sync loop (baseline or refill) is running. */
  syncing: boolean;
  waiters: Waiter[];
  /** Epochs this topic has left behind: their late messages are stale, never news. */
  retired: string[];
}

/** Entries per XRANGE while refilling. */
const REFILL_PAGE_SIZE = 500;
/** Live messages held per topic during a refill; past it they are dropped and read from history instead. */
const MAX_BUFFERED_MESSAGES = 10_000;
/** A refill that keeps hitting resets is racing something pathological; back off and retry instead. */
const MAX_RESETS_PER_REFILL = 5;
const MAX_RETIRED_EPOCHS = 8;
const MAX_RECONNECT_DELAY_MS = 2000;
const MAX_REFILL_RETRY_DELAY_MS = 5000;
const DEFAULT_PUBLISH_TIMEOUT_MS = 10_000;
/** Oldest Redis major version with XINFO STREAM max-deleted-entry-id. */
const MIN_REDIS_MAJOR = 7;

export class RedisEngine implements Engine {
  readonly kind = 'redis';
  readonly stats: RedisEngineStats = { refills: 0, resets: 0, redisErrors: 0, roundTrips: 0 };
  readonly #options: RedisEngineOptions;
  readonly #log: Logger;
  readonly #keysPrefix: string;
  /** Reads, and publishes through the SDK transport. Never re-sends: a re-sent publish would be stored twice. */
  readonly #commands: Redis;
  /** Pub/sub only; resubscribed by this engine (not ioredis) so it knows when a refill may start. */
  readonly #subscriber: Redis;
  #transport: RedisTransport | undefined;
  #sink: PublicationSink | undefined;
  #onGap: GapSink | undefined;
  readonly #topics = new Map<string, TopicState>();
  /** Topics whose (UN)SUBSCRIBE goes out with the next batch. */
  readonly #pending = new Set<TopicState>();
  #flushHandle: NodeJS.Immediate | undefined;
  /** Settles when the subscriber's latest resubscription after a reconnect was confirmed. */
  #resubscribed: Promise<unknown> = Promise.resolve();
  #subscriberWasReady = false;
  /** Reads in flight on the command connection, failed when it drops (it does not re-send them). */
  readonly #reads = new Set<(error: Error) => void>();
  /** Wakes sleeping refill retries on close. */
  readonly #sleepers = new Set<() => void>();
  #closed = false;
  /** False while the connected server is older than Redis 7 (see #checkVersion). */
  #versionOk = true;
  #warnedEventNames = false;

  constructor(options: RedisEngineOptions) {
    this.#options = options;
    this.#keysPrefix = options.prefix;
    this.#log = options.logger.child({ mod: 'redis-engine' });
    const retryStrategy = (attempt: number) =>
      Math.min(50 * 2 ** Math.min(attempt, 6), MAX_RECONNECT_DELAY_MS) + Math.random() * 50;
    this.#commands = new Redis(options.url, {
      protocol: 2,
      lazyConnect: true,
      retryStrategy,
      // Reads fail fast while Redis is away (the hub and the refill loops retry); publishes wait in the
      // transport's own bounded queue.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: null,
      connectionName: 'sse-gateway:commands',
    });
    this.#subscriber = new Redis(options.url, {
      protocol: 2,
      lazyConnect: true,
      retryStrategy,
      autoResubscribe: false,
      maxRetriesPerRequest: 5,
      connectionName: 'sse-gateway:subscriber',
    });
    this.#commands.defineCommand(READ_COMMAND, { numberOfKeys: 2, lua: READ_SCRIPT, readOnly: true });
    this.#watch(this.#commands, 'commands');
    this.#watch(this.#subscriber, 'subscriber');
    this.#commands.on('close', () => this.#failReads());
    // Refills waiting out a failure retry as soon as Redis is back, not at the end of their backoff.
    this.#commands.on('ready', () => {
      this.#wakeSleepers();
      void this.#checkVersion();
    });
    this.#subscriber.on('ready', () => this.#onSubscriberReady());
    this.#subscriber.on('message', (channel: string, message: string) => this.#onMessage(channel, message));
  }

  async start(sink: PublicationSink, onGap?: GapSink): Promise<void> {
    this.#sink = sink;
    this.#onGap = onGap;
    const results = await Promise.allSettled([this.#commands.connect(), this.#subscriber.connect()]);
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) {
      // Not fatal: ioredis keeps reconnecting and /readyz says 503 until it succeeds.
      this.#log.warn({ err: failed.reason }, 'Redis is not reachable yet; retrying in the background');
    }
    this.#transport = new RedisTransport({
      redis: this.#commands,
      prefix: this.#keysPrefix,
      maxLength: this.#options.retention.maxLength,
      maxAgeMs: this.#options.retention.maxAgeMs,
      maxRetryTimeMs: this.#options.publishTimeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS,
    });
  }

  async publish(events: readonly PublishRequest[]): Promise<Position[]> {
    if (this.#closed) throw new Error('engine is closed');
    if (!this.#transport) throw new Error('engine is not started');
    this.stats.roundTrips++;
    return this.#transport.publishPositions(events);
  }

  subscribe(topic: string): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('engine is closed'));
    const state = this.#topics.get(topic) ?? this.#newTopic(topic);
    if (state.wanted && state.buffer === null) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      state.waiters.push({ resolve, reject });
      if (state.wanted) return; // Already on its way: wait for the same subscription.
      state.wanted = true;
      state.gen++;
      state.last = undefined;
      state.buffer = [];
      state.dirty = false;
      this.#schedule(state);
    });
  }

  /** Stops the flow at once (messages of unwanted topics are ignored); the UNSUBSCRIBE is batched. */
  async unsubscribe(topic: string): Promise<void> {
    const state = this.#topics.get(topic);
    if (!state?.wanted) return;
    this.#stop(state);
    for (const waiter of state.waiters.splice(0)) waiter.resolve();
    this.#schedule(state);
  }

  async head(topic: string): Promise<Position> {
    const snapshot = await this.#read(topic, ORIGIN, 0);
    return snapshot ? snapshot.last : ORIGIN;
  }

  async readAfter(topic: string, after: Position, limit: number): Promise<HistoryPage> {
    const snapshot = await this.#read(topic, after, Math.max(0, limit) + 1);
    if (!snapshot) {
      if (after.epoch === '') return { kind: 'events', events: [], more: false };
      return { kind: 'reset', reason: 'stream-lost', position: ORIGIN };
    }
    const { epoch, last, maxDeleted } = snapshot;
    const deleted = maxDeleted.ms !== 0 || maxDeleted.seq !== 0;
    if (after.epoch !== '' && after.epoch !== epoch)
      return { kind: 'reset', reason: 'stream-lost', position: maxDeleted };
    if (after.epoch === epoch && comparePositions(after, last) > 0)
      return { kind: 'reset', reason: 'ahead', position: last };
    if (deleted && (after.epoch === '' || comparePositions(after, maxDeleted) < 0)) {
      return { kind: 'reset', reason: 'trimmed', position: maxDeleted };
    }
    const events = snapshot.entries.slice(0, limit).map((entry) => {
      const publication = toPublication(topic, epoch, entry);
      const event = this.#safeEventName(publication.event, topic);
      return event === publication.event ? publication : { ...publication, event };
    });
    return { kind: 'events', events, more: snapshot.entries.length > limit };
  }

  async claimOnce(key: string, ttlMs: number): Promise<boolean> {
    this.stats.roundTrips++;
    const reply = await this.#commands.set(`${this.#keysPrefix}once:${key}`, '1', 'PX', ttlMs, 'NX');
    return reply === 'OK';
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.stats };
  }

  isReady(): boolean {
    return !this.#closed && this.#versionOk && this.#commands.status === 'ready' && this.#subscriber.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#flushHandle) clearImmediate(this.#flushHandle);
    this.#wakeSleepers();
    const closed = new Error('engine is closed');
    for (const state of this.#topics.values()) for (const waiter of state.waiters.splice(0)) waiter.reject(closed);
    this.#topics.clear();
    await this.#transport?.close();
    await Promise.all([quit(this.#commands), quit(this.#subscriber)]);
    this.#failReads();
  }

  // -------------------------------------------------------------------------------------------------
  // Subscriptions
  // -------------------------------------------------------------------------------------------------

  #newTopic(topic: string): TopicState {
    const state: TopicState = {
      topic,
      channel: topicKeys(this.#keysPrefix, topic).channel,
      wanted: false,
      gen: 0,
      confirmedGen: -1,
      sentSubscribed: false,
      last: undefined,
      buffer: null,
      dirty: false,
      syncing: false,
      waiters: [],
      retired: [],
    };
    this.#topics.set(topic, state);
    return state;
  }

  #stop(state: TopicState): void {
    state.wanted = false;
    state.gen++;
    state.last = undefined;
    state.buffer = null;
    state.dirty = false;
  }

  /** Collects (UN)SUBSCRIBEs of one event-loop turn into one command each. */
  #schedule(state: TopicState): void {
    if (this.#closed) return;
    this.#pending.add(state);
    this.#flushHandle ??= setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushHandle = undefined;
    const subscribing: TopicState[] = [];
    const unsubscribing: string[] = [];
    for (const state of this.#pending) {
      if (state.wanted && state.confirmedGen !== state.gen) {
        // Sent even when the channel is subscribed already: the new request needs its own confirmation.
        subscribing.push(state);
        state.sentSubscribed = true;
      } else if (!state.wanted && state.sentSubscribed) {
        unsubscribing.push(state.channel);
        state.sentSubscribed = false;
      }
      this.#forgetIfIdle(state);
    }
    this.#pending.clear();
    if (unsubscribing.length > 0) {
      this.#subscriber.unsubscribe(...unsubscribing).catch((error: unknown) => {
        // Harmless: messages of unwanted topics are ignored, and a reconnect only resubscribes wanted ones.
        this.#log.debug({ err: error, topics: unsubscribing.length }, 'UNSUBSCRIBE failed');
      });
    }
    if (subscribing.length > 0) this.#sendSubscribe(subscribing);
  }

  #sendSubscribe(states: TopicState[]): void {
    const gens = states.map((state) => state.gen);
    this.#subscriber.subscribe(...states.map((state) => state.channel)).then(
      () => {
        states.forEach((state, index) => {
          if (state.gen !== gens[index] || !state.wanted) return;
          state.confirmedGen = state.gen;
          void this.#sync(state);
        });
      },
      (error: unknown) => {
        if (this.#closed) return;
        this.stats.redisErrors++;
        this.#log.warn({ err: error, topics: states.length }, 'SUBSCRIBE failed');
        states.forEach((state, index) => {
          if (state.gen === gens[index] && state.wanted) this.#fail(state, error);
        });
      },
    );
  }

  /** The subscription could not be established: tell the waiters, and undo it. */
  #fail(state: TopicState, error: unknown): void {
    this.#stop(state);
    const reason = error instanceof Error ? error : new Error(String(error));
    for (const waiter of state.waiters.splice(0)) waiter.reject(reason);
    this.#schedule(state);
  }

  #forgetIfIdle(state: TopicState): void {
    if (!state.wanted && !state.sentSubscribed && !state.syncing && this.#topics.get(state.topic) === state) {
      this.#topics.delete(state.topic);
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Live messages, baselines and refills
  // -------------------------------------------------------------------------------------------------

  /**
   * Honest trim detection needs XINFO STREAM's max-deleted-entry-id, which Redis 7.0 introduced: on an
   * older server a trimmed resume point would be served silently, so the node refuses to be ready.
   */
  async #checkVersion(): Promise<void> {
    const info = await this.#commands.info('server').catch(() => undefined);
    const version = info ? /redis_version:(\d+)\./.exec(info)?.[1] : undefined;
    if (version === undefined) return;
    this.#versionOk = Number(version) >= MIN_REDIS_MAJOR;
    if (!this.#versionOk) {
      this.#log.error(
        { redisVersion: /redis_version:(\S+)/.exec(info ?? '')?.[1] },
        `Redis ${MIN_REDIS_MAJOR}.0 or newer is required (XINFO STREAM max-deleted-entry-id); not ready`,
      );
    }
  }

  /** An event name that would break the SSE framing (written to Redis by a foreign publisher) becomes the default. */
  #safeEventName(event: string, topic: string): string {
    if (event !== '' && !/[\r\n\0]/.test(event)) return event;
    if (!this.#warnedEventNames) {
      this.#warnedEventNames = true;
      this.#log.warn({ topic }, 'an event name with CR, LF or NUL (or empty) was read from Redis; sent as "message"');
    }
    return 'message';
  }

  #onMessage(channel: string, message: string): void {
    const topic = topicOfChannel(this.#keysPrefix, channel);
    const state = topic === undefined ? undefined : this.#topics.get(topic);
    if (!state?.wanted) return;
    const decoded = decodeLiveMessage(message);
    if (!decoded) {
      this.#log.warn({ topic }, 'ignored a live message in an unknown format');
      return;
    }
    const event = this.#safeEventName(decoded.event, state.topic);
    const live = event === decoded.event ? decoded : { ...decoded, event };
    if (state.buffer === null) {
      this.#deliver(state, live);
      return;
    }
    if (state.buffer.length >= MAX_BUFFERED_MESSAGES) {
      // History has them too: drop the backlog and read it from the stream once the current pass ends.
      state.buffer = [];
      state.dirty = true;
    }
    state.buffer.push(live);
  }

  /** Pushes one event to the sink unless it was pushed already or belongs to an epoch left behind. */
  #deliver(state: TopicState, event: LiveMessage): void {
    const last = state.last;
    if (last && event.epoch === last.epoch && comparePositions(event, last) <= 0) return;
    if (state.retired.includes(event.epoch)) return;
    const position: Position = { epoch: event.epoch, ms: event.ms, seq: event.seq };
    this.#moveTo(state, position);
    const publication: Publication = { topic: state.topic, position, event: event.event, data: event.data };
    try {
      this.#sink?.(publication);
    } catch (error) {
      this.#log.error({ err: error, topic: state.topic }, 'the publication sink threw');
    }
  }

  #moveTo(state: TopicState, position: Position): void {
    const previous = state.last?.epoch;
    if (previous && previous !== position.epoch && !state.retired.includes(previous)) {
      state.retired.push(previous);
      if (state.retired.length > MAX_RETIRED_EPOCHS) state.retired.shift();
    }
    state.last = position;
  }

  /**
   * Brings a topic to the point where live messages can flow: first its baseline (the head, read after
   * Redis confirmed the SUBSCRIBE, so every later event arrives live), then refills while it is dirty,
   * then the buffered messages in order. Only one loop runs per topic; others just mark it dirty.
   */
  async #sync(state: TopicState): Promise<void> {
    if (state.syncing) return;
    state.syncing = true;
    let failures = 0;
    try {
      while (this.#needsSync(state)) {
        const gen = state.gen;
        try {
          if (state.last === undefined) {
            const head = await this.head(state.topic);
            if (state.gen === gen) state.last = head;
          } else {
            state.dirty = false;
            // The refill may only read once the resubscription is confirmed, or events published
            // between the read and the SUBSCRIBE would be in neither.
            await this.#resubscribed;
            if (state.gen === gen) await this.#refill(state, gen);
          }
          failures = 0;
        } catch (error) {
          if (state.gen !== gen) continue;
          this.stats.redisErrors++;
          if (state.last === undefined) {
            this.#log.warn({ err: error, topic: state.topic }, 'could not read the head of a new subscription');
            this.#fail(state, error);
            break;
          }
          state.dirty = true;
          failures++;
          this.#log.warn({ err: error, topic: state.topic, failures }, 'refill failed; retrying');
          await this.#sleep(Math.min(100 * 2 ** failures, MAX_REFILL_RETRY_DELAY_MS));
        }
      }
      this.#goLive(state);
    } finally {
      state.syncing = false;
      this.#forgetIfIdle(state);
    }
  }

  #needsSync(state: TopicState): boolean {
    return (
      !this.#closed && state.wanted && state.confirmedGen === state.gen && (state.last === undefined || state.dirty)
    );
  }

  /** Drains the held messages (in arrival order, duplicates dropped) and lets the topic flow. */
  #goLive(state: TopicState): void {
    if (this.#closed || !state.wanted || state.confirmedGen !== state.gen) return;
    if (state.last === undefined || state.dirty || state.buffer === null) return;
    const held = state.buffer;
    state.buffer = null;
    for (const message of held) this.#deliver(state, message);
    for (const waiter of state.waiters.splice(0)) waiter.resolve();
  }

  /** Pushes every event after `state.last` from the stream, page by page, following resets. */
  async #refill(state: TopicState, gen: number): Promise<void> {
    this.stats.refills++;
    let resets = 0;
    let pushed = 0;
    for (;;) {
      const page = await this.readAfter(state.topic, state.last as Position, REFILL_PAGE_SIZE);
      if (state.gen !== gen || this.#closed) return;
      if (page.kind === 'reset') {
        this.stats.resets++;
        this.#log.warn(
          { topic: state.topic, reason: page.reason },
          'history could not fill the whole gap after a reconnect; continuing from the earliest available point',
        );
        this.#moveTo(state, page.position);
        try {
          this.#onGap?.(state.topic, page.reason, page.position);
        } catch (error) {
          this.#log.error({ err: error, topic: state.topic }, 'the gap sink threw');
        }
        if (page.position.epoch === '') break;
        if (++resets > MAX_RESETS_PER_REFILL) throw new Error('refill keeps hitting resets');
        continue;
      }
      for (const publication of page.events) {
        const { position, event, data } = publication;
        this.#deliver(state, { ...position, event, data });
      }
      pushed += page.events.length;
      if (!page.more) break;
    }
    this.#log.debug({ topic: state.topic, events: pushed }, 'refilled from history');
  }

  #onSubscriberReady(): void {
    if (!this.#subscriberWasReady) {
      this.#subscriberWasReady = true;
      return;
    }
    // Anything published while the subscriber was away is only in the streams now.
    const wanted = [...this.#topics.values()].filter((state) => state.wanted);
    this.#log.info({ topics: wanted.length }, 'subscriber reconnected; refilling subscribed topics from history');
    for (const state of wanted) {
      state.dirty = true;
      state.buffer ??= [];
    }
    const channels = wanted.filter((state) => state.sentSubscribed).map((state) => state.channel);
    const resubscribed = channels.length > 0 ? this.#subscriber.subscribe(...channels) : Promise.resolve();
    // A failure is handled by the refill loops (they retry) and the next 'ready' (it resubscribes again).
    resubscribed.catch((error: unknown) => this.#log.warn({ err: error }, 'resubscribe failed'));
    this.#resubscribed = resubscribed;
    for (const state of wanted) void this.#sync(state);
    this.#wakeSleepers();
  }

  // -------------------------------------------------------------------------------------------------
  // Redis plumbing
  // -------------------------------------------------------------------------------------------------

  async #read(topic: string, after: Position, count: number): Promise<StreamSnapshot | undefined> {
    this.stats.roundTrips++;
    const keys = topicKeys(this.#keysPrefix, topic);
    const afterId = `${after.ms}-${after.seq}`;
    const call = (this.#commands as unknown as Record<string, (...args: unknown[]) => Promise<ReadReply>>)[
      READ_COMMAND
    ] as (...args: unknown[]) => Promise<ReadReply>;
    const reply = await this.#tracked(call.call(this.#commands, keys.stream, keys.epoch, after.epoch, afterId, count));
    if (reply.length === 0) return undefined;
    const [epoch, last, maxDeleted, entries] = reply;
    return { epoch, last: toPosition(epoch, last), maxDeleted: toPosition(epoch, maxDeleted), entries };
  }

  /** The command connection never re-sends, so a read in flight when it drops must be failed here. */
  #tracked<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = (error: Error) => reject(error);
      this.#reads.add(fail);
      promise.then(
        (value) => {
          this.#reads.delete(fail);
          resolve(value);
        },
        (error: unknown) => {
          this.#reads.delete(fail);
          reject(error);
        },
      );
    });
  }

  #failReads(): void {
    if (this.#reads.size === 0) return;
    const error = new Error('the connection to Redis was lost during a read');
    for (const fail of this.#reads) fail(error);
    this.#reads.clear();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.#sleepers.add(wake);
    });
  }

  #wakeSleepers(): void {
    for (const wake of [...this.#sleepers]) wake();
  }

  /** Logs each connection's loss and recovery once, not every retry. */
  #watch(client: Redis, connection: string): void {
    let lost = false;
    client.on('error', (error: Error) => {
      this.stats.redisErrors++;
      if (!lost && !this.#closed) this.#log.warn({ err: error, connection }, 'Redis connection error');
      lost = true;
    });
    client.on('close', () => {
      if (!lost && !this.#closed) this.#log.warn({ connection }, 'Redis connection lost; reconnecting');
      lost = true;
    });
    client.on('ready', () => {
      if (lost && !this.#closed) this.#log.info({ connection }, 'Redis connection restored');
      lost = false;
    });
  }
}

function toPosition(epoch: string, id: string): Position {
  const parsed = parseStreamId(id);
  if (!parsed) throw new Error(`unexpected stream id from Redis: ${id}`);
  return { epoch, ms: parsed.ms, seq: parsed.seq };
}

function toPublication(topic: string, epoch: string, [id, fields]: RawEntry): Publication {
  let event = '';
  let data = '';
  for (let index = 0; index + 1 < fields.length; index += 2) {
    if (fields[index] === 'e') event = fields[index + 1] as string;
    else if (fields[index] === 'd') data = fields[index + 1] as string;
  }
  return { topic, position: toPosition(epoch, id), event, data };
}

async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    await client.quit().catch(() => client.disconnect());
  } else {
    client.disconnect();
  }
}
