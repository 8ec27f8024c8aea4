/**
 * The lossless flow of one subscribed topic from Redis to the sink. Live messages only flow straight
 * through once the topic is caught up: after Redis confirmed the subscription, the flow reads its baseline
 * (the head), and whenever the subscription was lost it refills from the stream after the last position it
 * pushed, holding live messages meanwhile and dropping those it already pushed.
 *
 *   stopped --start--> subscribing --confirmed--> catching-up --caught up--> live
 *                                                       ^                      |
 *                                                       +---lost / overflow----+
 *   any --stop--> stopped
 */
import { comparePositions, type LiveMessage, type Position } from '@sse-gateway/publisher-sdk/protocol';
import type { Logger } from 'pino';
import type { ResetReason } from '../../sse/reserved-events.js';
import type { GapSink, HistoryPage, Publication, PublicationSink } from '../engine.js';

export type FlowPhase = 'stopped' | 'subscribing' | 'catching-up' | 'live';

/** What every flow of one engine shares. */
export interface FlowContext {
  readonly log: Logger;
  readonly sink: () => PublicationSink | undefined;
  readonly onGap: () => GapSink | undefined;
  readonly head: (topic: string) => Promise<Position>;
  readonly readAfter: (topic: string, after: Position, limit: number) => Promise<HistoryPage>;
  readonly closed: () => boolean;
  /** Waits out a failure; woken early when Redis is back. */
  readonly sleep: (ms: number) => Promise<void>;
  readonly stats: { refills: number; resets: number; redisErrors: number; gapsDetected: number };
  /** A catch-up loop ended: a flow stopped meanwhile may be forgotten now. */
  readonly settled: (flow: TopicFlow) => void;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** Entries per XRANGE while refilling. */
const REFILL_PAGE_SIZE = 500;
/** Live messages held per topic while catching up; past it they are dropped and read from history instead. */
const MAX_HELD_MESSAGES = 10_000;
/** A refill that keeps hitting resets is racing something pathological; back off and retry instead. */
const MAX_RESETS_PER_REFILL = 5;
const MAX_RETIRED_EPOCHS = 8;
const MAX_REFILL_RETRY_DELAY_MS = 5000;

export class TopicFlow {
  phase: FlowPhase = 'stopped';
  /** Bumped by every start and stop, so late answers to an older request are recognised. */
  gen = 0;
  /** Last position pushed to the sink (or the baseline); undefined before the baseline is read. */
  #last: Position | undefined;
  /** Live messages held while not live. */
  #held: LiveMessage[] = [];
  /** A refill from `#last` is due (the subscription was lost, or the held messages overflowed). */
  #refillDue = false;
  /** Settles once a lost subscription was confirmed again: the refill must not read before that. */
  #restored: Promise<unknown> = Promise.resolve();
  /** A catch-up loop is running. */
  #syncing = false;
  #waiters: Waiter[] = [];
  /** Epochs this topic has left behind: their late messages are stale, never news. */
  readonly #retired: string[] = [];

  constructor(
    readonly topic: string,
    readonly channel: string,
    private readonly context: FlowContext,
  ) {}

  get syncing(): boolean {
    return this.#syncing;
  }

  /** Resolves once live messages flow (at once when they already do). Returns the generation started. */
  start(): { gen: number; ready: Promise<void> } {
    if (this.phase === 'live') return { gen: this.gen, ready: Promise.resolve() };
    const ready = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.phase === 'stopped') {
      this.gen++;
      this.phase = 'subscribing';
      this.#reset();
    }
    return { gen: this.gen, ready };
  }

  /** Stops the flow at once: messages are ignored from now on. */
  stop(): void {
    this.phase = 'stopped';
    this.gen++;
    this.#reset();
    for (const waiter of this.#waiters.splice(0)) waiter.resolve();
  }

  /** The subscription could not be established: tell the waiters. */
  fail(error: unknown): void {
    this.phase = 'stopped';
    this.gen++;
    this.#reset();
    const reason = error instanceof Error ? error : new Error(String(error));
    for (const waiter of this.#waiters.splice(0)) waiter.reject(reason);
  }

  /** Redis confirmed the subscription made for `gen`. */
  confirmed(gen: number): void {
    if (gen !== this.gen || this.phase !== 'subscribing') return;
    this.phase = 'catching-up';
    void this.#sync();
  }

  /** The subscription was lost; `restored` settles once Redis confirmed it again. */
  lost(restored: Promise<unknown>): void {
    if (this.phase === 'stopped') return;
    this.#restored = restored;
    this.#refillDue = true;
    if (this.phase === 'live') this.phase = 'catching-up';
    if (this.phase === 'catching-up') void this.#sync();
  }

  /** Sends every pending close of the engine: waiters learn the engine is gone. */
  close(error: Error): void {
    this.phase = 'stopped';
    this.gen++;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  /** When the flow last pushed an event or learnt its baseline (for the idle-topic head check). */
  lastActivityAt = 0;

  /** The position the flow has reached; undefined before its baseline. */
  get position(): Position | undefined {
    return this.#last;
  }

  message(live: LiveMessage): void {
    if (this.phase === 'live') {
      const rewound = this.#rewoundBy(live);
      if (rewound) {
        // History lost events this node had pushed (a failover to a replica that missed writes): clients
        // must hear of it, since acknowledged events they never got may be gone with them.
        this.context.stats.resets++;
        this.context.log.warn({ topic: this.topic }, 'the stream was rewound (events lost in a failover); resetting');
        this.#last = rewound;
        this.#gap('ahead', rewound);
        this.#deliver(live);
        return;
      }
      if (!this.#missedBefore(live)) {
        this.#deliver(live);
        return;
      }
      // A message went missing without a disconnect: hold this one and read the gap from the stream.
      this.context.stats.gapsDetected++;
      this.context.log.warn({ topic: this.topic }, 'a live message names a predecessor this node never got; refilling');
      this.#held.push(live);
      this.lost(Promise.resolve());
      return;
    }
    if (this.phase === 'stopped') return;
    if (this.#held.length >= MAX_HELD_MESSAGES) {
      // History has them too: drop the backlog and read it from the stream once the current pass ends.
      this.#held = [];
      this.#refillDue = true;
    }
    this.#held.push(live);
  }

  /** The predecessor `live` names when it lies before the last event pushed (same epoch, v2): a rewind. */
  #rewoundBy(live: LiveMessage): Position | undefined {
    const last = this.#last;
    const prev = live.prev;
    if (!prev || !last || live.epoch !== last.epoch || comparePositions(live, last) <= 0) return undefined;
    const position = { epoch: last.epoch, ms: prev.ms, seq: prev.seq };
    return comparePositions(position, last) < 0 ? position : undefined;
  }

  #gap(reason: ResetReason, position: Position): void {
    try {
      this.context.onGap()?.(this.topic, reason, position);
    } catch (error) {
      this.context.log.error({ err: error, topic: this.topic }, 'the gap sink threw');
    }
  }

  /** Whether `live` (protocol v2) follows an event other than the last one pushed, in the same epoch. */
  #missedBefore(live: LiveMessage): boolean {
    const last = this.#last;
    const prev = live.prev;
    if (!prev || !last || live.epoch !== last.epoch) return false;
    if (prev.ms === last.ms && prev.seq === last.seq) return false;
    return comparePositions(live, last) > 0 && comparePositions({ epoch: last.epoch, ...prev }, last) > 0;
  }

  /**
   * The idle-topic check: the stream's head, read while the flow was live. A head past the last event
   * pushed means a live message was lost with nothing after it to reveal the gap: refill.
   */
  headChecked(head: Position): void {
    const last = this.#last;
    if (this.phase !== 'live' || !last) return;
    const behind = head.epoch !== last.epoch ? head.epoch !== '' : comparePositions(head, last) > 0;
    if (!behind) return;
    this.context.stats.gapsDetected++;
    this.context.log.warn({ topic: this.topic }, 'the stream is ahead of what this node got live; refilling');
    this.lost(Promise.resolve());
  }

  #reset(): void {
    this.#last = undefined;
    this.#held = [];
    this.#refillDue = false;
  }

  /** Pushes one event to the sink unless it was pushed already or belongs to an epoch left behind. */
  #deliver(event: LiveMessage): void {
    const last = this.#last;
    if (last && event.epoch === last.epoch && comparePositions(event, last) <= 0) return;
    if (this.#retired.includes(event.epoch)) return;
    const position: Position = { epoch: event.epoch, ms: event.ms, seq: event.seq };
    this.#moveTo(position);
    this.lastActivityAt = Date.now();
    const publication: Publication = { topic: this.topic, position, event: event.event, data: event.data };
    try {
      this.context.sink()?.(publication);
    } catch (error) {
      this.context.log.error({ err: error, topic: this.topic }, 'the publication sink threw');
    }
  }

  #moveTo(position: Position): void {
    const previous = this.#last?.epoch;
    if (previous && previous !== position.epoch && !this.#retired.includes(previous)) {
      this.#retired.push(previous);
      if (this.#retired.length > MAX_RETIRED_EPOCHS) this.#retired.shift();
    }
    this.#last = position;
  }

  #needsSync(): boolean {
    return !this.context.closed() && this.phase === 'catching-up' && (this.#last === undefined || this.#refillDue);
  }

  /** Baseline, then refills while due, then the held messages; one loop per flow, others just mark it due. */
  async #sync(): Promise<void> {
    if (this.#syncing) return;
    this.#syncing = true;
    let failures = 0;
    try {
      while (this.#needsSync()) {
        const gen = this.gen;
        try {
          if (this.#last === undefined) {
            // Read after Redis confirmed the subscription, so every later event arrives live.
            const head = await this.context.head(this.topic);
            if (this.gen === gen) {
              this.#last = head;
              this.lastActivityAt = Date.now();
            }
          } else {
            this.#refillDue = false;
            // Reading before the resubscription is confirmed would miss events published in between.
            await this.#restored;
            if (this.gen === gen) await this.#refill(gen);
          }
          failures = 0;
        } catch (error) {
          if (this.gen !== gen) continue;
          this.context.stats.redisErrors++;
          if (this.#last === undefined) {
            this.context.log.warn({ err: error, topic: this.topic }, 'could not read the head of a new subscription');
            this.fail(error);
            break;
          }
          this.#refillDue = true;
          failures++;
          this.context.log.warn({ err: error, topic: this.topic, failures }, 'refill failed; retrying');
          await this.context.sleep(Math.min(100 * 2 ** failures, MAX_REFILL_RETRY_DELAY_MS));
        }
      }
      this.#goLive();
    } finally {
      this.#syncing = false;
      this.context.settled(this);
    }
  }

  /** Drains the held messages (in arrival order, duplicates dropped) and lets the topic flow. */
  #goLive(): void {
    if (this.context.closed() || this.phase !== 'catching-up') return;
    if (this.#last === undefined || this.#refillDue) return;
    const held = this.#held;
    this.#held = [];
    this.phase = 'live';
    for (const message of held) this.#deliver(message);
    for (const waiter of this.#waiters.splice(0)) waiter.resolve();
  }

  /** Pushes every event after the last position from the stream, page by page, following resets. */
  async #refill(gen: number): Promise<void> {
    this.context.stats.refills++;
    let resets = 0;
    let pushed = 0;
    for (;;) {
      const page = await this.context.readAfter(this.topic, this.#last as Position, REFILL_PAGE_SIZE);
      if (this.gen !== gen || this.context.closed()) return;
      if (page.kind === 'reset') {
        this.context.stats.resets++;
        this.context.log.warn(
          { topic: this.topic, reason: page.reason },
          'history could not fill the whole gap; continuing from the earliest available point',
        );
        this.#moveTo(page.position);
        this.#gap(page.reason, page.position);
        if (page.position.epoch === '') break;
        if (++resets > MAX_RESETS_PER_REFILL) throw new Error('refill keeps hitting resets');
        continue;
      }
      for (const { position, event, data } of page.events) this.#deliver({ ...position, event, data });
      pushed += page.events.length;
      if (!page.more) break;
    }
    this.context.log.debug({ topic: this.topic, events: pushed }, 'refilled from history');
  }
}
