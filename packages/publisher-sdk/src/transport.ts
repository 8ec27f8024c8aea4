/** What a transport does: store a batch of validated events and answer with their ids, in order. */

export interface OutgoingEvent {
  readonly topic: string;
  readonly event: string;
  /** The text of the `data:` lines, already serialised. */
  readonly data: string;
  /** When set, a retried publish with the same key is stored once (Redis transport). */
  readonly idempotencyKey?: string | undefined;
}

export interface Transport {
  publish(events: readonly OutgoingEvent[]): Promise<string[]>;
  close(): Promise<void>;
}
