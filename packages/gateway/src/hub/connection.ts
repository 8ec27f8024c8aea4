/**
 * One SSE client. Writes pre-encoded bytes straight to its sink (an HTTP/1.1 response, an HTTP/2 stream,
 * gzip in front of either), remembers the last position sent per topic so ids resume every topic exactly,
 * and holds live events in a bounded queue while history replays. No timers, streams or encoding of its
 * own on the hot path: the hub's single sweep checks budgets and timeouts. Nothing here knows the transport.
 */
import {
  comparePositions,
  formatPosition,
  MULTI_TOPIC_SEPARATOR,
  type Position,
} from '@sse-gateway/publisher-sdk/protocol';
import type { StreamSink } from '../sink/stream-sink.js';
import { encodeFrame, encodeRetry, HEARTBEAT } from '../sse/frame.js';
import { CLOSED_EVENT, RESET_EVENT, type ResetReason, TOKEN_EXPIRED_EVENT } from '../sse/reserved-events.js';
import type { Delivery, ReplayChunk } from './delivery.js';

export type CloseReason =
  | 'client-closed'
  | 'slow-consumer'
  | 'write-timeout'
  | 'idle-timeout'
  | 'max-age'
  | 'token-expired'
  | 'shutdown'
  | 'closed-by-operator'
  | 'error';

/** Shared by every connection of a hub: one integer increment per event written, read by the metrics. */
export interface DeliveryCount {
  events: number;
}

/** An engine gap notice queued in flow order while the connection replays history. */
interface PendingGap {
  readonly topicIndex: number;
  readonly reason: ResetReason;
  readonly position: Position;
}

/** What the sweep judges a connection by (from config). */
export interface SweepLimits {
  readonly writeTimeoutMs: number;
  readonly closeOnWriteTimeout: boolean;
  readonly idleTimeoutMs: number;
}

export interface ConnectionOptions {
  readonly id: number;
  /** Sorted, unique topic names. */
  readonly topics: readonly string[];
  /** Last position seen per topic (aligned with `topics`); ORIGIN-like when starting fresh. */
  readonly positions: Position[];
  /** Where the stream's bytes go. */
  readonly sink: StreamSink;
  readonly maxBufferedBytes: number;
  readonly now: number;
  /** Absolute time after which the hub's sweep closes the connection (max age); Infinity = never. */
  readonly closeAt: number;
  readonly remoteAddress: string | undefined;
  /** The token's subject (`sub`), when the stream was opened with one. */
  readonly subject?: string | undefined;
  /** When the credentials behind the stream expire (epoch ms); Infinity = never. */
  readonly expiresAt: number;
  /** This connection's `retry:` hint (with its jitter), also sent if it ends before it started. */
  readonly retryHintMs: number;
  /** Response headers of the stream (without content coding). */
  readonly headers: Readonly<Record<string, string>>;
}

export class Connection {
  readonly id: number;
  readonly topics: readonly string[];
  readonly positions: Position[];
  readonly sink: StreamSink;
  readonly openedAt: number;
  readonly closeAt: number;
  readonly expiresAt: number;
  readonly retryHintMs: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteAddress: string | undefined;
  readonly subject: string | undefined;
  readonly #maxBufferedBytes: number;
  /** Formatted positions, so a multi-topic id is a join, not a re-format of every topic. */
  readonly #idParts: string[];

  /** Live deliveries (and engine gap notices, in flow order) waiting while history replays; null once live. */
  #pending: (Delivery | PendingGap)[] | null = [];
  #pendingBytes = 0;

  closed = false;
  closeReason: CloseReason | undefined;
  eventsSent = 0;
  /** Set on every write, cleared by the heartbeat round: traffic doubles as a heartbeat. */
  #wroteSinceHeartbeat = false;
  /** Time the sweep last saw `eventsSent` change, for the idle timeout (no clock reads per event). */
  #lastEventAt: number;
  #eventsSeenBySweep = 0;
  /** Write-progress tracking for the write timeout, updated by the sweep only. */
  #stalledSince = 0;
  #flushedMark = -1;
  /** Called once when the connection closes, whatever the reason. */
  onClose: ((connection: Connection) => void) | undefined;
  /** Called for every reset written (for the metrics). */
  onReset: ((reason: ResetReason) => void) | undefined;
  /** Where written events are counted (for the metrics). */
  deliveries: DeliveryCount | undefined;

  constructor(options: ConnectionOptions) {
    this.id = options.id;
    this.topics = options.topics;
    this.positions = options.positions;
    this.sink = options.sink;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.openedAt = options.now;
    this.#lastEventAt = options.now;
    this.closeAt = options.closeAt;
    this.expiresAt = options.expiresAt;
    this.retryHintMs = options.retryHintMs;
    this.headers = options.headers;
    this.remoteAddress = options.remoteAddress;
    this.subject = options.subject;
    this.#idParts = options.positions.map(formatPosition);
  }

  get isLive(): boolean {
    return this.#pending === null;
  }

  /** Bytes accepted but not yet taken by the transport. */
  get bufferedBytes(): number {
    return this.sink.bufferedBytes;
  }

  /** Sends the stream's head and its `retry:` hint: from now on events may flow. */
  start(): void {
    this.sink.start(this.headers);
    this.sink.write(encodeRetry(this.retryHintMs));
  }

  /** Hot path: called by the hub for every publication of one of this connection's topics. */
  deliver(delivery: Delivery): void {
    if (this.#pending === null) {
      this.#writeDelivery(delivery);
      return;
    }
    this.#pending.push(delivery);
    this.#pendingBytes += delivery.body.length;
    if (this.#pendingBytes > this.#maxBufferedBytes) this.close('slow-consumer');
  }

  /**
   * Writes consecutive events from history. A single-topic connection whose position is right before the
   * chunk writes the shared concatenated bytes at once; otherwise event by event (ids, skips, resets).
   */
  writeHistoryChunk(chunk: ReplayChunk): void {
    const first = chunk.deliveries[0];
    const last = chunk.deliveries[chunk.deliveries.length - 1];
    if (!first || !last) return;
    const current = this.positions[0] as Position;
    const follows =
      first.position.epoch === current.epoch ? comparePositions(first.position, current) > 0 : current.epoch === '';
    if (this.topics.length !== 1 || !follows || last.at >= this.expiresAt) {
      for (const delivery of chunk.deliveries) this.#writeDelivery(delivery);
      return;
    }
    this.positions[0] = last.position;
    this.#idParts[0] = last.idText;
    this.eventsSent += chunk.deliveries.length;
    if (this.deliveries) this.deliveries.events += chunk.deliveries.length;
    this.#write(chunk.bytes);
  }

  /** Ends the replay: flushes queued live events that history did not already cover, then goes live. */
  goLive(): void {
    const pending = this.#pending;
    this.#pending = null;
    this.#pendingBytes = 0;
    if (!pending) return;
    for (const item of pending) {
      if (this.closed) return;
      if ('reason' in item) this.#applyGap(item.topicIndex, item.reason, item.position);
      else this.#writeDelivery(item);
    }
  }

  /** Starts a topic at `position` (the head, for a client without a resume point). */
  startAt(topicIndex: number, position: Position): void {
    this.#setPosition(topicIndex, position);
  }

  /** Resolves once the backlog is below half the budget, or the connection closed; replay's backpressure. */
  whenWritable(): Promise<void> {
    if (this.closed || this.bufferedBytes < this.#maxBufferedBytes / 2) return Promise.resolve();
    return new Promise((resolve) => this.sink.onceWritable(resolve));
  }

  /**
   * The engine lost events of a topic up to `position`. A live connection already past that point missed
   * nothing (unless history was rewound: `ahead`); one still replaying gets the reset when it goes live.
   */
  noteGap(topicIndex: number, reason: ResetReason, position: Position): boolean {
    if (this.#pending !== null) {
      this.#pending.push({ topicIndex, reason, position });
      return false;
    }
    return this.#applyGap(topicIndex, reason, position);
  }

  #applyGap(topicIndex: number, reason: ResetReason, position: Position): boolean {
    const current = this.positions[topicIndex] as Position;
    // A rewound history ('ahead') lies behind every client by definition, and lost events some of them never
    // got: everyone hears of it. Other gaps only concern connections still behind them.
    if (reason !== 'ahead' && current.epoch === position.epoch && comparePositions(current, position) >= 0) {
      return false;
    }
    this.writeReset(topicIndex, reason, position);
    return true;
  }

  /** Tells the client its resume point could not be served, and moves its cursor to `position`. */
  writeReset(topicIndex: number, reason: ResetReason, position: Position): void {
    this.onReset?.(reason);
    this.#setPosition(topicIndex, position);
    const data = JSON.stringify({ topic: this.topics[topicIndex], reason });
    this.#write(Buffer.from(encodeFrame({ id: this.#currentId(), event: RESET_EVENT, data })));
  }

  /** Tells the page its credentials expired, just before the stream ends; it should get new ones. */
  writeTokenExpired(): void {
    this.#write(Buffer.from(encodeFrame({ event: TOKEN_EXPIRED_EVENT, data: '{"reason":"token-expired"}' })));
  }

  /** The credentials expired: the page hears it, then the stream ends. */
  expire(): void {
    if (this.closed) return;
    this.writeTokenExpired();
    this.close('token-expired');
  }

  /** An operator closed the stream: the page hears why (when the stream is open), then it ends. */
  closeByOperator(scope: 'topic' | 'subject'): void {
    if (this.closed) return;
    if (this.sink.started) {
      const data = JSON.stringify({ reason: 'closed-by-operator', scope });
      this.#write(Buffer.from(encodeFrame({ event: CLOSED_EVENT, data })));
    }
    this.close('closed-by-operator');
  }

  writeRetry(ms: number): void {
    this.#write(Buffer.from(encodeRetry(ms)));
  }

  writeHeartbeat(): void {
    this.#write(HEARTBEAT);
  }

  /**
   * The node-wide sweep's visit: sends the heartbeat when due and judges the timers. Returns why the
   * connection must close, 'write-stalled' for a write timeout that does not close it, or undefined.
   */
  sweep(now: number, heartbeatDue: boolean, limits: SweepLimits): CloseReason | 'write-stalled' | undefined {
    if (this.closed) return undefined;
    let stalled = false;
    if (this.bufferedBytes === 0) {
      this.#stalledSince = 0;
    } else {
      // Progress = bytes the transport took; a slow but moving reader is not a timeout.
      const flushed = this.sink.flushedBytes;
      if (flushed !== this.#flushedMark || this.#stalledSince === 0) {
        this.#flushedMark = flushed;
        this.#stalledSince = now;
      } else if (now - this.#stalledSince >= limits.writeTimeoutMs) {
        this.#stalledSince = now;
        if (limits.closeOnWriteTimeout) return 'write-timeout';
        stalled = true;
      }
    }
    if (this.eventsSent !== this.#eventsSeenBySweep) {
      this.#eventsSeenBySweep = this.eventsSent;
      this.#lastEventAt = now;
    } else if (limits.idleTimeoutMs > 0 && now - this.#lastEventAt >= limits.idleTimeoutMs) {
      return 'idle-timeout';
    }
    if (now >= this.closeAt) return 'max-age';
    if (now >= this.expiresAt) {
      this.writeTokenExpired();
      return 'token-expired';
    }
    if (heartbeatDue && this.sink.started) {
      if (!this.#wroteSinceHeartbeat) this.writeHeartbeat();
      this.#wroteSinceHeartbeat = false;
    }
    return stalled ? 'write-stalled' : undefined;
  }

  close(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.#pending = null;
    if (!this.sink.started && reason !== 'client-closed') {
      // Not attached yet (engine failure, drain during a reconnect storm). Any error status, or a 200
      // that is not an event stream, makes EventSource give up for good: answer an empty event stream
      // with a retry hint instead, so the client simply reconnects (elsewhere) and resumes.
      this.sink.answerRetryOnly(this.headers, this.retryHintMs);
    } else if (reason === 'client-closed' || reason === 'slow-consumer' || reason === 'write-timeout') {
      // Nothing more can or should reach this client: drop its backlog instead of flushing it.
      this.sink.abort();
    } else {
      this.sink.end();
    }
    this.onClose?.(this);
  }

  #writeDelivery(delivery: Delivery): void {
    // The sweep ends an expired stream within a second; an event that came after the expiry must not
    // slip through meanwhile.
    if (delivery.at >= this.expiresAt) {
      this.expire();
      return;
    }
    const index = this.topics.length === 1 ? 0 : this.topics.indexOf(delivery.topic);
    const last = this.positions[index] as Position;
    const position = delivery.position;
    if (position.epoch === last.epoch) {
      // Already sent (history replay overlapping live, or an engine refill): exactly once means skip.
      if (comparePositions(position, last) <= 0) return;
    } else if (last.epoch !== '') {
      // The topic's history was recreated under this client: say so before its first new event.
      this.writeReset(index, 'stream-lost', { epoch: position.epoch, ms: 0, seq: 0 });
    }
    this.positions[index] = position;
    this.eventsSent++;
    if (this.deliveries) this.deliveries.events++;
    if (this.topics.length === 1) {
      this.#idParts[0] = delivery.idText;
      this.#write(delivery.frame);
    } else {
      this.#idParts[index] = delivery.idText;
      // This connection's own id line, then the shared body: one buffer, one write. Ids are ASCII.
      const idLine = `id: ${this.#idParts.join(MULTI_TOPIC_SEPARATOR)}\n`;
      const bytes = Buffer.allocUnsafe(idLine.length + delivery.body.length);
      bytes.write(idLine, 0, 'latin1');
      delivery.body.copy(bytes, idLine.length);
      this.#write(bytes);
    }
  }

  #setPosition(index: number, position: Position): void {
    this.positions[index] = position;
    this.#idParts[index] = formatPosition(position);
  }

  #currentId(): string {
    return this.#idParts.join(MULTI_TOPIC_SEPARATOR);
  }

  #write(bytes: Buffer): void {
    // Before the stream is attached its head is not written yet: nothing may go out (a write would send
    // implicit 200 headers without the event-stream type).
    if (this.closed || !this.sink.started) return;
    if (this.bufferedBytes > this.#maxBufferedBytes) {
      this.close('slow-consumer');
      return;
    }
    this.sink.write(bytes);
    this.#wroteSinceHeartbeat = true;
  }
}
