/**
 * THE SEAM between the hub and where events live. An engine assigns ids, keeps per-topic history and
 * pushes every publication of a subscribed topic to the sink registered at start, exactly once and in
 * order (or with a new epoch when history was lost). It knows nothing of HTTP or connections.
 */
import type { Position } from '@sse-gateway/publisher-sdk/protocol';
import type { ResetReason } from '../sse/reserved-events.js';

export interface Publication {
  readonly topic: string;
  readonly position: Position;
  readonly event: string;
  /** Text of the `data:` lines. */
  readonly data: string;
}

export interface PublishRequest {
  readonly topic: string;
  readonly event: string;
  readonly data: string;
  /** A publish repeated with the same key (per topic, for a day) is stored once and answers the first id. */
  readonly idempotencyKey?: string | undefined;
}

/** The publish was not applied (nothing was sent, or Redis refused it): retrying is safe. */
export class PublishNotAppliedError extends Error {
  override readonly name = 'PublishNotAppliedError';
}

/**
 * The publish was sent and no answer came (the connection failed or froze with it in flight): Redis may
 * have stored it. Retrying is safe only with an idempotency key.
 */
export class PublishOutcomeUnknownError extends Error {
  override readonly name = 'PublishOutcomeUnknownError';
}

/** One page of history after a position, or the news that history cannot serve that position. */
export type HistoryPage =
  | { readonly kind: 'events'; readonly events: readonly Publication[]; readonly more: boolean }
  /** Events may be missing; resume after `position` (the earliest point history can serve). */
  | { readonly kind: 'reset'; readonly reason: ResetReason; readonly position: Position };

export type PublicationSink = (publication: Publication) => void;

/**
 * Told when the engine's own flow of a topic skipped events it could not recover (events trimmed from
 * history while the Redis subscriber was away): connected clients must get a reset, not silence.
 * The flow goes on after `position`.
 */
export type GapSink = (topic: string, reason: ResetReason, position: Position) => void;

export interface Engine {
  readonly kind: 'memory' | 'redis';
  /** Connects and registers the one sink that receives every publication of subscribed topics. */
  start(sink: PublicationSink, onGap?: GapSink): Promise<void>;
  /**
   * Stores events atomically per event, in order; resolves with their positions once in history. Rejects
   * with PublishNotAppliedError or PublishOutcomeUnknownError.
   */
  publish(events: readonly PublishRequest[]): Promise<Position[]>;
  /** Resolves once publications of `topic` are flowing to the sink. Called once per topic per node. */
  subscribe(topic: string): Promise<void>;
  /** Stops the flow of `topic`. */
  unsubscribe(topic: string): Promise<void>;
  /** The topic's latest position (ORIGIN-like with an empty epoch when it has no history yet). */
  head(topic: string): Promise<Position>;
  /** Up to `limit` events strictly after `after`, or a reset when history cannot serve `after`. */
  readAfter(topic: string, after: Position, limit: number): Promise<HistoryPage>;
  /** Whether the engine can serve requests now (Redis reachable). */
  isReady(): boolean;
  close(): Promise<void>;
}

/** Optional ability: named counters for metrics (refills, round trips, ...). */
export interface CountingEngine extends Engine {
  counters(): Readonly<Record<string, number>>;
}

export function isCountingEngine(engine: Engine): engine is CountingEngine {
  return typeof (engine as Partial<CountingEngine>).counters === 'function';
}

/** Retention applied by engines on publish. */
export interface Retention {
  /** Events kept per topic; 0 = no limit. */
  readonly maxLength: number;
  /** Age after which events leave history; 0 = no limit. */
  readonly maxAgeMs: number;
}
