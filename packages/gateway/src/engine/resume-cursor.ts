/**
 * The one rule that judges a resume cursor against a topic's history, shared by every engine: serve the
 * events after it, or say why history cannot (trimmed, stream lost, ahead) and where the flow goes on.
 * Pure and table-tested (resume-cursor.test.ts), so the engines cannot disagree on a reset.
 */
import { comparePositions, ORIGIN, type Position } from '@sse-gateway/publisher-sdk/protocol';
import type { ResetReason } from '../sse/reserved-events.js';

/** What an engine knows of one topic's history at one instant. */
export interface HistoryBounds {
  /** The history's incarnation: positions of other epochs are not comparable with this one. */
  readonly epoch: string;
  /** The newest entry ever appended (it may have been removed since). */
  readonly last: Position;
  /** The newest entry removed by retention; undefined while nothing was removed. */
  readonly removedThrough: Position | undefined;
}

export type CursorVerdict =
  /** Every event after the cursor is in history. */
  | { readonly kind: 'serve' }
  /** Events after the cursor may be missing: tell the client, then go on after `position`. */
  | { readonly kind: 'reset'; readonly reason: ResetReason; readonly position: Position };

const SERVE: CursorVerdict = Object.freeze({ kind: 'serve' });

/**
 * `after` is what the client saw last (ORIGIN-like with an empty epoch when it saw nothing of the topic);
 * `history` is undefined when the topic has no history at all.
 */
export function judgeCursor(after: Position, history: HistoryBounds | undefined): CursorVerdict {
  if (!history) {
    // Nothing was ever published, or the history is gone: only a client that saw nothing misses nothing.
    return after.epoch === '' ? SERVE : { kind: 'reset', reason: 'stream-lost', position: ORIGIN };
  }
  const { epoch, last, removedThrough } = history;
  if (after.epoch !== '' && after.epoch !== epoch) {
    // A cursor from an earlier incarnation: resume at the earliest point this one can serve.
    return { kind: 'reset', reason: 'stream-lost', position: removedThrough ?? { epoch, ms: 0, seq: 0 } };
  }
  if (after.epoch === epoch && comparePositions(after, last) > 0) {
    // Issued by a history that had more (a failover to a replica that missed writes).
    return { kind: 'reset', reason: 'ahead', position: last };
  }
  if (removedThrough && (after.epoch === '' || comparePositions(after, removedThrough) < 0)) {
    return { kind: 'reset', reason: 'trimmed', position: removedThrough };
  }
  return SERVE;
}
