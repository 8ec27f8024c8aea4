/**
 * The embedded engine: per-topic bounded history in this process, for one node and for development.
 * It mirrors the Redis engine's semantics (ids `ms-seq`, an epoch per history, trimming) so both pass
 * the same contract suite. Its epoch is new on every start: history dies with the process, and cursors
 * from a previous run get the reset event instead of wrong data.
 */
import { randomBytes } from 'node:crypto';
import { comparePositions, ORIGIN, type Position } from '@sse-gateway/publisher-sdk/protocol';
import {
  type Engine,
  type HistoryPage,
  type Publication,
  type PublicationSink,
  PublishNotAppliedError,
  type PublishRequest,
  type Retention,
} from './engine.js';
import { judgeCursor } from './resume-cursor.js';

interface TopicHistory {
  /** Entries from `start` on are live; the prefix is garbage awaiting compaction. */
  entries: Publication[];
  start: number;
  last: Position;
  /** Newest position removed by retention; events after a cursor older than this may be missing. */
  maxDeleted: Position | undefined;
}

/** Compact the entries array once this many trimmed slots have piled up at its front. */
const COMPACT_AFTER = 1024;
/** How long an idempotency key remembers its position, as the SDK's Redis transport does by default. */
const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** Idempotency keys remembered at most; the oldest are forgotten first. */
const MAX_IDEMPOTENCY_KEYS = 100_000;

export class MemoryEngine implements Engine {
  readonly kind = 'memory';
  readonly #epoch = newEpoch();
  readonly #topics = new Map<string, TopicHistory>();
  readonly #subscribed = new Set<string>();
  /** `topic\nkey` -> the position first stored under it, and when the key expires (oldest first). */
  readonly #idempotency = new Map<string, { readonly position: Position; readonly expiresAt: number }>();
  #sink: PublicationSink | undefined;
  #closed = false;

  constructor(
    private readonly retention: Retention,
    /** Injected clock, for retention tests. */
    private readonly now: () => number = Date.now,
  ) {}

  async start(sink: PublicationSink): Promise<void> {
    this.#sink = sink;
  }

  async publish(events: readonly PublishRequest[]): Promise<Position[]> {
    if (this.#closed) throw new PublishNotAppliedError('engine is closed');
    const positions: Position[] = [];
    for (const request of events) {
      const remembered = this.#remembered(request);
      if (remembered) {
        positions.push(remembered);
        continue;
      }
      const history = this.#history(request.topic, true);
      const position = this.#nextPosition(history.last);
      const publication: Publication = { topic: request.topic, position, event: request.event, data: request.data };
      history.entries.push(publication);
      history.last = position;
      this.#trim(history);
      positions.push(position);
      this.#remember(request, position);
      if (this.#subscribed.has(request.topic)) this.#sink?.(publication);
    }
    return positions;
  }

  #remembered(request: PublishRequest): Position | undefined {
    if (request.idempotencyKey === undefined) return undefined;
    const entry = this.#idempotency.get(`${request.topic}\n${request.idempotencyKey}`);
    return entry && entry.expiresAt > this.now() ? entry.position : undefined;
  }

  #remember(request: PublishRequest, position: Position): void {
    if (request.idempotencyKey === undefined) return;
    const key = `${request.topic}\n${request.idempotencyKey}`;
    this.#idempotency.delete(key);
    this.#idempotency.set(key, { position, expiresAt: this.now() + IDEMPOTENCY_TTL_MS });
    // Insertion order is expiry order (one TTL for all), so the oldest entries are at the front.
    const now = this.now();
    for (const [oldest, entry] of this.#idempotency) {
      if (this.#idempotency.size <= MAX_IDEMPOTENCY_KEYS && entry.expiresAt > now) break;
      this.#idempotency.delete(oldest);
    }
  }

  async subscribe(topic: string): Promise<void> {
    this.#subscribed.add(topic);
  }

  async unsubscribe(topic: string): Promise<void> {
    this.#subscribed.delete(topic);
  }

  async head(topic: string): Promise<Position> {
    return this.#history(topic, false)?.last ?? ORIGIN;
  }

  async readAfter(topic: string, after: Position, limit: number): Promise<HistoryPage> {
    const history = this.#history(topic, false);
    if (history) this.#trim(history);
    const verdict = judgeCursor(
      after,
      history && { epoch: this.#epoch, last: history.last, removedThrough: history.maxDeleted },
    );
    if (verdict.kind === 'reset') return verdict;
    if (!history) return { kind: 'events', events: [], more: false };
    const from = this.#indexAfter(history, after);
    const end = Math.min(history.entries.length, from + limit);
    return { kind: 'events', events: history.entries.slice(from, end), more: end < history.entries.length };
  }

  isReady(): boolean {
    return !this.#closed;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#subscribed.clear();
  }

  #history(topic: string, create: true): TopicHistory;
  #history(topic: string, create: false): TopicHistory | undefined;
  #history(topic: string, create: boolean): TopicHistory | undefined {
    let history = this.#topics.get(topic);
    if (!history && create) {
      history = { entries: [], start: 0, last: { epoch: this.#epoch, ms: 0, seq: 0 }, maxDeleted: undefined };
      this.#topics.set(topic, history);
    }
    return history;
  }

  /** Same rule as Redis stream ids: milliseconds, then a sequence within the millisecond. */
  #nextPosition(last: Position): Position {
    const ms = this.now();
    if (ms > last.ms) return { epoch: this.#epoch, ms, seq: 0 };
    return { epoch: this.#epoch, ms: last.ms, seq: last.seq + 1 };
  }

  #trim(history: TopicHistory): void {
    const { maxLength, maxAgeMs } = this.retention;
    const minMs = maxAgeMs > 0 ? this.now() - maxAgeMs : -1;
    let start = history.start;
    const entries = history.entries;
    while (start < entries.length) {
      const entry = entries[start] as Publication;
      const overLength = maxLength > 0 && entries.length - start > maxLength;
      if (!overLength && entry.position.ms >= minMs) break;
      history.maxDeleted = entry.position;
      start++;
    }
    if (start >= COMPACT_AFTER || (start > 0 && start === entries.length)) {
      history.entries = entries.slice(start);
      history.start = 0;
    } else {
      history.start = start;
    }
  }

  /** Index of the first live entry strictly after `after` (binary search; entries are in order). */
  #indexAfter(history: TopicHistory, after: Position): number {
    let low = history.start;
    let high = history.entries.length;
    if (after.epoch === '') return low;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (comparePositions((history.entries[mid] as Publication).position, after) <= 0) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

/** Base-36 text from 8 random bytes, within the protocol's 16-character epoch limit. */
function newEpoch(): string {
  return randomBytes(8).readBigUInt64BE().toString(36).slice(0, 16);
}
