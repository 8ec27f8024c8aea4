/**
 * The gateway's own events, all under the reserved `gateway.` prefix that publishers cannot use.
 * Documented in docs/protocol.md; pages listen for them with addEventListener.
 */

/** History could not serve the resume point: events may have been missed. Data: `{ topic, reason }`. */
export const RESET_EVENT = 'gateway.reset';

export type ResetReason =
  /** The resume point fell out of history (length or age retention). */
  | 'trimmed'
  /** The topic's history was lost or recreated (Redis flush, eviction, failover, embedded engine restart). */
  | 'stream-lost'
  /** The resume point is ahead of history (Redis failed over to a replica missing recent writes). */
  | 'ahead';

/** The stream's token or ticket expired; the stream ends right after. Get new credentials, then reconnect. */
export const TOKEN_EXPIRED_EVENT = 'gateway.token-expired';

/**
 * An operator closed the stream (admin API: all streams of a topic, or of a token subject); it ends right
 * after. Data: `{ "reason": "closed-by-operator", "scope": "topic" | "subject" }`. A page should not
 * reconnect on its own: for a revoked user, reconnecting with the same credentials is refused only once
 * the token source stops issuing them.
 */
export const CLOSED_EVENT = 'gateway.closed';
