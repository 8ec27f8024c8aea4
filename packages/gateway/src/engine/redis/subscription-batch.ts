/**
 * The requests and releases of one event-loop turn, collected per channel and handed over as one batch, so
 * a burst of new streams costs one SUBSCRIBE command instead of one per topic. Shared by the plain and the
 * sharded subscriptions; what a batch turns into on the wire is theirs to decide.
 */

/** One caller waiting for Redis to confirm a subscription. */
export interface SubscriptionRequest {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export interface Batch {
  /** Channels to subscribe, each with the requests its confirmation answers. */
  readonly subscribe: Map<string, SubscriptionRequest[]>;
  /** Channels no longer wanted (and not requested again in the same turn). */
  readonly release: string[];
}

export class SubscriptionBatch {
  readonly #flush: (batch: Batch) => void;
  /** Per channel: the requests waiting for its SUBSCRIBE, or null to release it. */
  readonly #pending = new Map<string, SubscriptionRequest[] | null>();
  #handle: NodeJS.Immediate | undefined;
  #closed = false;

  constructor(flush: (batch: Batch) => void) {
    this.#flush = flush;
  }

  request(channel: string): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('engine is closed'));
    return new Promise<void>((resolve, reject) => {
      const waiting = this.#pending.get(channel);
      if (waiting) waiting.push({ resolve, reject });
      else this.#pending.set(channel, [{ resolve, reject }]);
      this.#schedule();
    });
  }

  release(channel: string): void {
    if (this.#closed) return;
    // A request released in the same turn is answered at once; its caller has moved on.
    for (const request of this.#pending.get(channel) ?? []) request.resolve();
    this.#pending.set(channel, null);
    this.#schedule();
  }

  /** Whether `channel` has a request or release waiting for the next batch. */
  has(channel: string): boolean {
    return this.#pending.has(channel);
  }

  /** Rejects every waiting request; later requests reject at once. */
  close(): void {
    this.#closed = true;
    if (this.#handle) clearImmediate(this.#handle);
    const closed = new Error('engine is closed');
    for (const requests of this.#pending.values()) for (const request of requests ?? []) request.reject(closed);
    this.#pending.clear();
  }

  #schedule(): void {
    this.#handle ??= setImmediate(() => {
      this.#handle = undefined;
      const batch: Batch = { subscribe: new Map(), release: [] };
      for (const [channel, waiting] of this.#pending) {
        if (waiting) batch.subscribe.set(channel, waiting);
        else batch.release.push(channel);
      }
      this.#pending.clear();
      this.#flush(batch);
    });
  }
}
