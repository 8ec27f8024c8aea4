/**
 * Single-use keys (subscribe tickets): a duty beside the event store, not part of the Engine. The Redis
 * engine offers a node-shared store (a ticket is single-use across the cluster); this one is per process.
 */

export interface ClaimStore {
  /** Records `key` for `ttlMs`; true the first time, false while it is recorded. */
  claimOnce(key: string, ttlMs: number): Promise<boolean>;
}

/** Expired claims are swept once the map holds this many. */
const CLAIMS_PRUNE_AT = 1024;

export class MemoryClaimStore implements ClaimStore {
  /** Keys and when they expire. */
  readonly #claims = new Map<string, number>();

  constructor(
    /** Injected clock, for tests. */
    private readonly now: () => number = Date.now,
  ) {}

  async claimOnce(key: string, ttlMs: number): Promise<boolean> {
    const now = this.now();
    if (this.#claims.size >= CLAIMS_PRUNE_AT) {
      for (const [claimed, expiresAt] of this.#claims) if (expiresAt <= now) this.#claims.delete(claimed);
    }
    const expiresAt = this.#claims.get(key);
    if (expiresAt !== undefined && expiresAt > now) return false;
    this.#claims.set(key, now + ttlMs);
    return true;
  }
}
