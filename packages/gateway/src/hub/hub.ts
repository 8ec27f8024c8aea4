/**
 * HOT PATH: topic -> connections. The engine pushes each publication here once; it is encoded once and
 * the same bytes are written to every connection of the topic, synchronously. Engine subscriptions are
 * reference counted per topic. One node-wide sweep drives heartbeats, write and idle timeouts and max age.
 */
import { comparePositions, formatPosition, type Position } from '@sse-gateway/publisher-sdk/protocol';
import type { Logger } from 'pino';
import type { Engine, HistoryPage, Publication, PublicationSink } from '../engine/engine.js';
import type { GatewayMetrics } from '../metrics.js';
import type { ResetReason } from '../sse/reserved-events.js';
import type { Connection, DeliveryCount } from './connection.js';
import { type Delivery, encodeDelivery, type ReplayChunk } from './delivery.js';

export interface HubOptions {
  readonly engine: Engine;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  /** The `retry:` hint for new streams, until an operator changes it (broadcastRetry). */
  readonly retryMs: number;
  readonly heartbeatMs: number;
  readonly writeTimeoutMs: number;
  readonly closeOnWriteTimeout: boolean;
  readonly idleTimeoutMs: number;
  /** Unsent bytes a connection may hold (its slow-consumer budget). */
  readonly maxBufferedBytes: number;
  /** Socket writes per event-loop turn during a large fan-out. Default FANOUT_SLICE_WRITES (tests lower it). */
  readonly fanOutSliceWrites?: number;
}

interface TopicEntry {
  readonly connections: Set<Connection>;
  /** Settles when the engine confirmed the subscription. */
  readonly subscribed: Promise<void>;
  /** A fan-out too large for one turn of the event loop, in progress; undefined otherwise. */
  fanOut: SlicedFanOut | undefined;
  /**
   * The topic's latest position this node knows while subscribed (from its live events, or one head read
   * shared by every fresh stream that arrived meanwhile), so a burst of new streams costs one Redis read,
   * not one each. Forgotten on a gap: history may have been rewound or recreated.
   */
  head: Position | undefined;
  headRead: Promise<Position> | undefined;
  /** The topic's recent events, contiguous in stream order: resumes inside it need no Redis read. */
  readonly tail: TopicTail;
}

/**
 * A run of a topic's events with nothing missing between `base` and the last one. Seeded by a history
 * read that reached the end of the stream (issued while subscribed, so every later event arrives live),
 * then extended by live events in order; dropped on a gap or an epoch change.
 */
interface TopicTail {
  /** The position right before `events[0]`: a resume from exactly there is served too. */
  base: Position | undefined;
  events: Delivery[];
  bytes: number;
  /** Bumped whenever the tail is dropped, so a read issued before cannot seed it afterwards. */
  generation: number;
  /** The last replay served from it, concatenated: a storm resumes thousands of clients from one cursor. */
  served: { readonly cursor: Position; readonly through: Position; readonly chunks: ReplayChunk[] } | undefined;
}

/**
 * A large topic is written in slices so timers, health checks and new connections get their turn. Events
 * arriving meanwhile wait in `next` and go out as one batch: each connection then gets several events in
 * one tick, which its corked socket sends in one syscall.
 */
interface SharedRead {
  readonly entry: TopicEntry | undefined;
  /** Join counter value when the read went out; undefined while it waits for the end of the turn. */
  issuedAt: number | undefined;
  page: Promise<SharedPage>;
}

/** A history page read once for every connection resuming from the same point. */
interface SharedPage {
  readonly page: HistoryPage;
  chunks: readonly ReplayChunk[] | undefined;
}

interface SlicedFanOut {
  batch: Delivery[];
  next: Delivery[];
  iterator: Iterator<Connection>;
}

/** Events read from history per round trip while a client resumes. */
const REPLAY_PAGE_SIZE = 500;
/** A resume that keeps hitting resets is a bug or a pathological race; stop rather than loop. */
const MAX_RESETS_PER_TOPIC = 3;
/** The sweep never runs less often than this, so timeouts fire close to their setting. */
const MAX_SWEEP_INTERVAL_MS = 1000;
/** Socket writes per turn of the event loop during a large fan-out (about 2-8 ms of CPU). */
const FANOUT_SLICE_WRITES = 2000;
/**
 * Recently encoded events kept for replays (a reconnect storm replays the same events to many clients),
 * bounded by count and by bytes so large payloads cannot make it grow.
 */
const RECENT_DELIVERIES = 10_000;
/** Largest replay write; smaller when the connection budget is small. */
const MAX_REPLAY_CHUNK_BYTES = 64 * 1024;
const RECENT_DELIVERY_BYTES = 16 * 1024 * 1024;
/** Bounds of one topic's tail, and of all tails of the node together. */
const MAX_TAIL_EVENTS = 1000;
const MAX_TAIL_BYTES = 1024 * 1024;
const MAX_ALL_TAILS_BYTES = 32 * 1024 * 1024;
/** Pause between batches of closes while draining. */
const DRAIN_STEP_MS = 50;

/** `$`: no client topic can start with it (see the SDK's topic grammar), so it marks the gateway's own. */
const RESERVED_TOPIC_MARK = 36;

export class Hub {
  readonly #engine: Engine;
  readonly #log: Logger;
  readonly #metrics: GatewayMetrics;
  readonly #options: HubOptions;
  readonly #sliceWrites: number;
  readonly #topics = new Map<string, TopicEntry>();
  readonly #connections = new Set<Connection>();
  #sweepTimer: NodeJS.Timeout | undefined;
  #lastHeartbeatAt = Date.now();
  #draining = false;
  #leaving = false;
  #retryMs: number;
  #received = 0;
  /** `topic id` -> encoded event, oldest first (Map order), capped at RECENT_DELIVERIES. */
  readonly #recent = new Map<string, Delivery>();
  readonly #reads = new Map<string, SharedRead>();
  /** Orders topic joins and history reads, to tell which reads a connection may share. */
  #joinCounter = 0;
  /** Replay bytes written at once: half the per-connection budget, so a chunk always fits. */
  readonly #replayChunkBytes: number;
  #recentBytes = 0;
  /** Bytes held by every topic's tail. */
  #tailBytes = 0;
  /** One function shared by every connection (a closure per connection would cost memory per stream). */
  readonly #detachListener = (connection: Connection) => this.#detach(connection);
  /** Counted where a reset is written, whichever path led there (replay, gap notice, epoch change). */
  readonly #resetListener = (reason: ResetReason) => this.#metrics.resets.inc({ reason });
  /** Event frames written to clients, live or replayed, counted by the connections as they write. */
  readonly #deliveries: DeliveryCount = { events: 0 };

  /** Where publications of reserved topics (`$gateway/...`, the gateway's own) go instead of to clients. */
  reservedSink: PublicationSink | undefined;

  constructor(options: HubOptions) {
    this.#options = options;
    this.#engine = options.engine;
    this.#log = options.logger.child({ mod: 'hub' });
    this.#metrics = options.metrics;
    this.#sliceWrites = options.fanOutSliceWrites ?? FANOUT_SLICE_WRITES;
    this.#retryMs = options.retryMs;
    this.#replayChunkBytes = Math.max(1, Math.min(MAX_REPLAY_CHUNK_BYTES, Math.floor(options.maxBufferedBytes / 2)));
  }

  async start(): Promise<void> {
    await this.#engine.start(
      (publication) =>
        publication.topic.charCodeAt(0) === RESERVED_TOPIC_MARK
          ? this.reservedSink?.(publication)
          : this.onPublication(publication),
      (topic, reason, position) => this.onGap(topic, reason, position),
    );
    const interval = Math.max(
      20,
      Math.min(MAX_SWEEP_INTERVAL_MS, this.#options.heartbeatMs / 2, this.#options.writeTimeoutMs / 4),
    );
    this.#sweepTimer = setInterval(() => this.#sweep(), interval);
    this.#sweepTimer.unref();
  }

  /** On its way out: readiness off, shown as draining (streams may still be accepted: see leaving). */
  get draining(): boolean {
    return this.#draining || this.#leaving;
  }

  /** Whether new streams are refused: the drain has begun. */
  get refusingStreams(): boolean {
    return this.#draining;
  }

  /**
   * Announces the shutdown ahead of the drain (DRAIN_DELAY_MS): readiness turns off so the balancer takes
   * the node out, while streams keep flowing and the ones it still sends are accepted.
   */
  announceLeaving(): void {
    this.#leaving = true;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Publications the engine handed to this node for topics it has consumers of, since start. */
  get eventsReceived(): number {
    return this.#received;
  }

  /** Event frames written to clients since start (live and replayed). */
  get eventsDelivered(): number {
    return this.#deliveries.events;
  }

  get topicCount(): number {
    return this.#topics.size;
  }

  /** Local consumers of a topic on this node. */
  consumers(topic: string): number {
    return this.#topics.get(topic)?.connections.size ?? 0;
  }

  /** The fan-out: one encoding, then the same bytes to every connection, no awaits. */
  onPublication(publication: Publication): void {
    const entry = this.#topics.get(publication.topic);
    if (!entry || entry.connections.size === 0) return;
    this.#received++;
    const delivery = encodeDelivery(publication);
    this.#remember(delivery);
    this.#extendTail(entry, delivery);
    const head = entry.head;
    if (!head || head.epoch !== publication.position.epoch || comparePositions(publication.position, head) > 0) {
      entry.head = publication.position;
    }
    if (entry.fanOut) {
      entry.fanOut.next.push(delivery);
      return;
    }
    if (entry.connections.size <= this.#sliceWrites) {
      for (const connection of entry.connections) connection.deliver(delivery);
      return;
    }
    entry.fanOut = { batch: [delivery], next: [], iterator: entry.connections.values() };
    this.#continueFanOut(entry, entry.fanOut);
  }

  /**
   * Writes the current batch to the next slice of connections. Set iterators are live: connections that
   * joined meanwhile are visited too (their replay handover de-duplicates), those that left are skipped.
   */
  #continueFanOut(entry: TopicEntry, fanOut: SlicedFanOut): void {
    let writes = 0;
    for (;;) {
      const step = fanOut.iterator.next();
      if (step.done) {
        if (fanOut.next.length === 0) {
          entry.fanOut = undefined;
          return;
        }
        fanOut.batch = fanOut.next;
        fanOut.next = [];
        fanOut.iterator = entry.connections.values();
        setImmediate(() => this.#continueFanOut(entry, fanOut));
        return;
      }
      for (const delivery of fanOut.batch) step.value.deliver(delivery);
      writes += fanOut.batch.length;
      if (writes >= this.#sliceWrites) {
        setImmediate(() => this.#continueFanOut(entry, fanOut));
        return;
      }
    }
  }

  /** The engine lost events of a topic it could not recover: live clients get a reset, not silence. */
  onGap(topic: string, reason: ResetReason, position: Position): void {
    const entry = this.#topics.get(topic);
    if (!entry) return;
    entry.head = undefined;
    this.#dropTail(entry);
    for (const connection of entry.connections) {
      connection.noteGap(connection.topics.indexOf(topic), reason, position);
    }
  }

  /**
   * Attaches a connection: subscribes its topics, replays history after `resume` (or starts each topic at
   * its head), then flushes live events queued meanwhile, skipping what history already sent.
   */
  async open(
    connection: Connection,
    resume: readonly Position[] | undefined,
    onAttached: () => void = () => {},
  ): Promise<void> {
    this.#connections.add(connection);
    connection.onClose = this.#detachListener;
    connection.onReset = this.#resetListener;
    connection.deliveries = this.#deliveries;
    const entries = connection.topics.map((topic) => this.#acquire(topic, connection));
    const joinedAt = this.#joinCounter++;
    try {
      await Promise.all(entries.map((entry) => entry.subscribed));
      if (!resume) {
        for (let index = 0; index < connection.topics.length; index++) {
          const head = await this.#headOf(entries[index] as TopicEntry, connection.topics[index] as string);
          if (connection.closed) return;
          connection.startAt(index, head);
        }
      }
      if (connection.closed) return;
      // Subscribed and positioned: only now may the client see its stream open.
      onAttached();
      if (resume) {
        this.#metrics.replays.inc();
        for (let index = 0; index < connection.topics.length; index++) {
          if (connection.closed) return;
          await this.#replay(connection, index, resume[index] as Position, joinedAt);
        }
      }
      if (!connection.closed) connection.goLive();
    } catch (error) {
      this.#log.warn({ err: error, conn: connection.id }, 'could not attach connection');
      connection.close('error');
    }
  }

  /** Local consumers of every topic of this node (for the cluster view). */
  consumerCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const [topic, entry] of this.#topics)
      if (entry.connections.size > 0) counts.set(topic, entry.connections.size);
    return counts;
  }

  /** Closes every stream following `topic` (each hears `gateway.closed` first); returns how many. */
  closeTopic(topic: string): number {
    const connections = [...(this.#topics.get(topic)?.connections ?? [])];
    for (const connection of connections) connection.closeByOperator('topic');
    return connections.length;
  }

  /** Closes every stream opened with a token of subject `sub` (each hears `gateway.closed` first). */
  closeSubject(sub: string): number {
    let closed = 0;
    for (const connection of [...this.#connections]) {
      if (connection.subject !== sub) continue;
      connection.closeByOperator('subject');
      closed++;
    }
    return closed;
  }

  /** The `retry:` hint (before jitter) new streams get. */
  get retryMs(): number {
    return this.#retryMs;
  }

  /** Sends a new `retry:` hint to every connection (with per-connection jitter from `jitter`), and to new ones. */
  broadcastRetry(retryMs: number, jitter: () => number): void {
    this.#retryMs = retryMs;
    for (const connection of this.#connections) connection.writeRetry(retryMs * (1 + jitter()));
  }

  /**
   * Graceful close: stop taking connections, then close the existing ones spread over `drainMs` so their
   * reconnects land on other nodes without a thundering herd. With `reconnectHintMs`, each open stream is
   * told that reconnect delay (a `retry:` line) right before it ends.
   */
  async drain(drainMs: number, reconnectHintMs?: () => number): Promise<void> {
    this.#draining = true;
    const connections = [...this.#connections];
    const steps = Math.max(1, Math.floor(drainMs / DRAIN_STEP_MS));
    const perStep = Math.ceil(connections.length / steps);
    for (let start = 0; start < connections.length; start += perStep) {
      for (const connection of connections.slice(start, start + perStep)) {
        if (reconnectHintMs) connection.writeRetry(reconnectHintMs());
        connection.close('shutdown');
      }
      if (start + perStep < connections.length) await new Promise((resolve) => setTimeout(resolve, DRAIN_STEP_MS));
    }
  }

  async close(): Promise<void> {
    this.#draining = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    for (const connection of [...this.#connections]) connection.close('shutdown');
  }

  /**
   * Where a fresh stream of a subscribed topic starts. Any position at or after the true head when the
   * stream's subscription was confirmed is right: events after it reach the stream live (queued until it
   * goes live), and the stream promised nothing before it.
   */
  #headOf(entry: TopicEntry, topic: string): Promise<Position> | Position {
    if (entry.head) return entry.head;
    if (!entry.headRead) {
      const read = this.#engine.head(topic);
      entry.headRead = read;
      read.then(
        (position) => {
          if (entry.headRead === read) entry.headRead = undefined;
          entry.head ??= position;
        },
        () => {
          if (entry.headRead === read) entry.headRead = undefined;
        },
      );
    }
    return entry.headRead;
  }

  #acquire(topic: string, connection: Connection): TopicEntry {
    let entry = this.#topics.get(topic);
    if (!entry) {
      const subscribed = this.#engine.subscribe(topic);
      // A failed subscription is reported to the connections awaiting it; the entry must not be reused.
      subscribed.catch(() => {
        if (this.#topics.get(topic) === entry) this.#topics.delete(topic);
      });
      entry = {
        connections: new Set(),
        subscribed,
        fanOut: undefined,
        head: undefined,
        headRead: undefined,
        tail: { base: undefined, events: [], bytes: 0, generation: 0, served: undefined },
      };
      this.#topics.set(topic, entry);
    }
    entry.connections.add(connection);
    return entry;
  }

  #detach(connection: Connection): void {
    if (!this.#connections.delete(connection)) return;
    for (const topic of connection.topics) {
      const entry = this.#topics.get(topic);
      if (!entry) continue;
      entry.connections.delete(connection);
      if (entry.connections.size === 0) {
        this.#topics.delete(topic);
        this.#engine.unsubscribe(topic).catch((error: unknown) => {
          this.#log.warn({ err: error, topic }, 'unsubscribe failed');
        });
      }
    }
    const reason = connection.closeReason ?? 'error';
    this.#metrics.disconnects.inc({ reason });
    this.#metrics.connectionSeconds.observe({ reason }, (Date.now() - connection.openedAt) / 1000);
    this.#log.info(
      {
        conn: connection.id,
        topics: connection.topics,
        reason,
        durationMs: Date.now() - connection.openedAt,
        eventsSent: connection.eventsSent,
      },
      'connection closed',
    );
  }

  async #replay(connection: Connection, index: number, after: Position, joinedAt: number): Promise<void> {
    const replayed = { events: 0, source: 'tail' as 'tail' | 'history' };
    try {
      await this.#replayTopic(connection, index, after, joinedAt, replayed);
    } finally {
      this.#metrics.replayLength.observe({ source: replayed.source }, replayed.events);
    }
  }

  /** Writes what `connection` missed of its topic `index`, counting the events into `replayed`. */
  async #replayTopic(
    connection: Connection,
    index: number,
    after: Position,
    joinedAt: number,
    replayed: { events: number; source: 'tail' | 'history' },
  ): Promise<void> {
    const topic = connection.topics[index] as string;
    let cursor = after;
    let resets = 0;
    const fromTail = this.#tailChunks(this.#topics.get(topic), cursor);
    if (fromTail) {
      // Everything after the cursor up to the newest event this node has: no read; later ones are queued.
      const events = fromTail.reduce((sum, chunk) => sum + chunk.deliveries.length, 0);
      this.#metrics.replayedEvents.inc(events);
      replayed.events = events;
      for (const chunk of fromTail) {
        await connection.whenWritable();
        if (connection.closed) return;
        connection.writeHistoryChunk(chunk);
      }
      return;
    }
    replayed.source = 'history';
    for (;;) {
      const entry = this.#topics.get(topic);
      const generation = entry?.tail.generation;
      const shared = await this.#readShared(topic, cursor, joinedAt);
      const page = shared.page;
      if (entry && page.kind === 'events' && !page.more && entry.tail.generation === generation) {
        this.#seedTail(entry, cursor, shared);
      }
      if (connection.closed) return;
      if (page.kind === 'reset') {
        connection.writeReset(index, page.reason, page.position);
        cursor = page.position;
        if (++resets > MAX_RESETS_PER_TOPIC) throw new Error(`history of ${topic} kept resetting`);
        continue;
      }
      // Backpressure per chunk, not per page: a page can be far larger than the connection's budget.
      for (const chunk of this.#replayChunks(shared)) {
        await connection.whenWritable();
        if (connection.closed) return;
        connection.writeHistoryChunk(chunk);
      }
      this.#metrics.replayedEvents.inc(page.events.length);
      replayed.events += page.events.length;
      const last = page.events[page.events.length - 1];
      if (last) cursor = last.position;
      if (!page.more || !last) return;
      await connection.whenWritable();
    }
  }

  /**
   * One history read per (topic, cursor) and event-loop turn, shared by every connection resuming from
   * that point (in a reconnect storm thousands of clients resume from the same id). A connection may
   * only share a read issued after it joined its topic: events published before the read are in the
   * read, events published after it joined are in its live queue, so nothing falls between the two.
   */
  #readShared(topic: string, cursor: Position, joinedAt: number): Promise<SharedPage> {
    const key = `${topic} ${formatPosition(cursor)}`;
    // Same topic entry too: a read issued under an earlier subscription of the topic proves nothing.
    const entry = this.#topics.get(topic);
    const existing = this.#reads.get(key);
    if (existing && existing.entry === entry && (existing.issuedAt === undefined || existing.issuedAt > joinedAt)) {
      return existing.page;
    }
    const read: SharedRead = { entry, issuedAt: undefined, page: undefined as unknown as Promise<SharedPage> };
    read.page = new Promise<SharedPage>((resolve, reject) => {
      // Deferred to the end of this turn so every connection that asks meanwhile joins the same read.
      setImmediate(() => {
        read.issuedAt = this.#joinCounter++;
        this.#engine
          .readAfter(topic, cursor, REPLAY_PAGE_SIZE)
          .then((page) => resolve({ page, chunks: undefined }), reject);
      });
    });
    this.#reads.set(key, read);
    const forget = () => {
      if (this.#reads.get(key) === read) this.#reads.delete(key);
    };
    read.page.then(forget, forget);
    return read.page;
  }

  /** A page's events encoded and concatenated in chunks, once per shared read. */
  #replayChunks(shared: SharedPage): readonly ReplayChunk[] {
    if (shared.chunks) return shared.chunks;
    const deliveries =
      shared.page.kind === 'events' ? shared.page.events.map((publication) => this.#encodeForReplay(publication)) : [];
    shared.chunks = this.#chunksOf(deliveries);
    return shared.chunks;
  }

  /** Consecutive deliveries concatenated into writes of at most the replay chunk size. */
  #chunksOf(deliveries: readonly Delivery[]): ReplayChunk[] {
    const chunks: ReplayChunk[] = [];
    let current: Delivery[] = [];
    let size = 0;
    const flush = () => {
      if (current.length === 0) return;
      const bytes = current.length === 1 ? (current[0] as Delivery).frame : Buffer.concat(current.map((d) => d.frame));
      chunks.push({ deliveries: current, bytes });
      current = [];
      size = 0;
    };
    for (const delivery of deliveries) {
      if (size + delivery.frame.length > this.#replayChunkBytes) flush();
      current.push(delivery);
      size += delivery.frame.length;
    }
    flush();
    return chunks;
  }

  /**
   * A history read that reached the end of the stream, issued while the topic was subscribed: with the
   * live events that followed it (all of them arrive live) it is a contiguous run after `cursor`.
   */
  #seedTail(entry: TopicEntry, cursor: Position, shared: SharedPage): void {
    const tail = entry.tail;
    if (tail.base !== undefined || cursor.epoch === '') return;
    const page = this.#replayChunks(shared).flatMap((chunk) => chunk.deliveries);
    const reference = page[page.length - 1]?.position ?? cursor;
    if (page.some((delivery) => delivery.position.epoch !== cursor.epoch)) return;
    if (tail.events.some((delivery) => delivery.position.epoch !== reference.epoch)) return;
    // Live events newer than the read follow it; older ones are in it (or before the cursor).
    const newer = tail.events.filter((delivery) => comparePositions(delivery.position, reference) > 0);
    this.#tailBytes -= tail.bytes;
    tail.base = cursor;
    tail.events = page.concat(newer);
    tail.bytes = tail.events.reduce((sum, delivery) => sum + delivery.frame.length, 0);
    this.#tailBytes += tail.bytes;
    this.#trimTail(tail);
  }

  /** A live event of a topic with a tail: appended in order (older ones, already there, are skipped). */
  #extendTail(entry: TopicEntry, delivery: Delivery): void {
    const tail = entry.tail;
    const last = tail.events[tail.events.length - 1];
    if (
      last &&
      comparePositions(delivery.position, last.position) <= 0 &&
      delivery.position.epoch === last.position.epoch
    )
      return;
    if (tail.base !== undefined) {
      const newest = last?.position ?? tail.base;
      if (newest.epoch !== delivery.position.epoch) {
        this.#dropTail(entry);
        return;
      }
    }
    // Unseeded, the tail still collects live events, for the read that will seed it.
    tail.events.push(delivery);
    tail.bytes += delivery.frame.length;
    this.#tailBytes += delivery.frame.length;
    this.#trimTail(tail);
  }

  /** Keeps one topic's tail and all tails together bounded; trimming moves the base forward. */
  #trimTail(tail: TopicTail): void {
    while (
      tail.events.length > 0 &&
      (tail.events.length > MAX_TAIL_EVENTS || tail.bytes > MAX_TAIL_BYTES || this.#tailBytes > MAX_ALL_TAILS_BYTES)
    ) {
      const oldest = tail.events.shift() as Delivery;
      tail.bytes -= oldest.frame.length;
      this.#tailBytes -= oldest.frame.length;
      if (tail.base !== undefined) tail.base = oldest.position;
      // Unseeded, a trimmed event may be one a read in flight needs after it: that read must not seed.
      else tail.generation++;
    }
  }

  #dropTail(entry: TopicEntry): void {
    const tail = entry.tail;
    this.#tailBytes -= tail.bytes;
    tail.base = undefined;
    tail.events = [];
    tail.bytes = 0;
    tail.generation++;
    tail.served = undefined;
  }

  /** The tail's events after `cursor` in replay chunks, shared with the previous resume from the same point. */
  #tailChunks(entry: TopicEntry | undefined, cursor: Position): ReplayChunk[] | undefined {
    const tail = entry?.tail;
    const events = this.#tailAfter(entry, cursor);
    if (!tail || !events) return undefined;
    const through = events[events.length - 1]?.position ?? cursor;
    const served = tail.served;
    if (
      served &&
      served.cursor.epoch === cursor.epoch &&
      comparePositions(served.cursor, cursor) === 0 &&
      served.through.epoch === through.epoch &&
      comparePositions(served.through, through) === 0
    ) {
      return served.chunks;
    }
    const chunks = this.#chunksOf(events);
    tail.served = { cursor, through, chunks };
    return chunks;
  }

  /** The events after `cursor` when the tail covers it (cursor at its base or on one of its events). */
  #tailAfter(entry: TopicEntry | undefined, cursor: Position): Delivery[] | undefined {
    const tail = entry?.tail;
    if (!tail?.base || tail.base.epoch !== cursor.epoch) return undefined;
    if (comparePositions(cursor, tail.base) === 0) return tail.events.slice();
    const events = tail.events;
    // Binary search: events are in stream order.
    let low = 0;
    let high = events.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const order = comparePositions((events[middle] as Delivery).position, cursor);
      if (order === 0) return events.slice(middle + 1);
      if (order < 0) low = middle + 1;
      else high = middle - 1;
    }
    return undefined;
  }

  /** Encodes a replayed event once per node while it is recent, not once per resuming connection. */
  #encodeForReplay(publication: Publication): Delivery {
    const key = `${publication.topic} ${formatPosition(publication.position)}`;
    const known = this.#recent.get(key);
    if (known) return known;
    const delivery = encodeDelivery(publication);
    this.#remember(delivery, key);
    return delivery;
  }

  #remember(delivery: Delivery, key = `${delivery.topic} ${delivery.idText}`): void {
    if (this.#recent.has(key)) return;
    this.#recent.set(key, delivery);
    this.#recentBytes += delivery.frame.length + delivery.body.length;
    while (this.#recent.size > RECENT_DELIVERIES || this.#recentBytes > RECENT_DELIVERY_BYTES) {
      const [oldestKey, oldest] = this.#recent.entries().next().value as [string, Delivery];
      this.#recent.delete(oldestKey);
      this.#recentBytes -= oldest.frame.length + oldest.body.length;
    }
  }

  #sweep(): void {
    const now = Date.now();
    const heartbeatDue = now - this.#lastHeartbeatAt >= this.#options.heartbeatMs;
    if (heartbeatDue) this.#lastHeartbeatAt = now;
    for (const connection of this.#connections) {
      const verdict = connection.sweep(now, heartbeatDue, this.#options);
      if (verdict === 'write-timeout' || verdict === 'write-stalled') this.#metrics.writeTimeouts.inc();
      if (verdict && verdict !== 'write-stalled') connection.close(verdict);
    }
  }
}
