/**
 * Admission control for new streams: connections per node, per client (token subject, else IP address),
 * and a token bucket of new connections per second, so a reconnect storm is smoothed instead of melting
 * the node. A refused `EventSource` gets no error status (it would give up for good) but a paced `retry:`
 * hint (`retryHintMs`): the clients refused in a burst are given return times spread at the bucket's own
 * rate, so they come back as fast as they can be admitted, not all at once again.
 */
import { GatewayError } from './errors.js';

export interface ConnectionLimitsOptions {
  readonly maxConnections: number;
  readonly maxConnectionsPerClient: number;
  readonly maxNewConnectionsPerSecond: number;
}

export class ConnectionLimits {
  readonly #options: ConnectionLimitsOptions;
  readonly #perClient = new Map<string, number>();
  #total = 0;
  #tokens: number;
  #refilledAt = performance.now();
  /** When the next paced return is due (performance.now() ms): returns are handed out 1/rate apart. */
  #nextReturnAt = 0;

  constructor(options: ConnectionLimitsOptions) {
    this.#options = options;
    this.#tokens = options.maxNewConnectionsPerSecond;
  }

  /** Admits one connection of `client` or throws; call the returned function exactly once when it ends. */
  admit(client: string): () => void {
    const { maxConnections, maxConnectionsPerClient } = this.#options;
    if (this.#total >= maxConnections) {
      throw new GatewayError(503, 'node_full', `this node holds its maximum of ${maxConnections} streams`, {
        'Retry-After': '2',
      });
    }
    const current = this.#perClient.get(client) ?? 0;
    if (current >= maxConnectionsPerClient) {
      throw new GatewayError(429, 'too_many_connections', `at most ${maxConnectionsPerClient} streams per client`);
    }
    if (!this.#takeToken()) {
      throw new GatewayError(503, 'rate_limited', 'too many new streams right now; retry shortly', {
        'Retry-After': '1',
      });
    }
    this.#total++;
    this.#perClient.set(client, current + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#total--;
      const left = (this.#perClient.get(client) ?? 1) - 1;
      if (left <= 0) this.#perClient.delete(client);
      else this.#perClient.set(client, left);
    };
  }

  /**
   * The reconnect delay for an `EventSource` refused with `code` (rate_limited or node_full). Rate limited:
   * the next free slot of a schedule that hands out one return per token the bucket refills, at least
   * `minMs` away. A full node: `minMs` plus up to as much again at random (capacity frees up as streams end,
   * at no rate the node can plan).
   */
  retryHintMs(code: string, minMs: number, random: () => number): number {
    if (code !== 'rate_limited') return Math.round(minMs * (1 + random()));
    const now = performance.now();
    const spacing = 1000 / this.#options.maxNewConnectionsPerSecond;
    this.#nextReturnAt = Math.max(this.#nextReturnAt, now + minMs);
    const at = this.#nextReturnAt + spacing * random();
    this.#nextReturnAt += spacing;
    return Math.round(at - now);
  }

  #takeToken(): boolean {
    const now = performance.now();
    const rate = this.#options.maxNewConnectionsPerSecond;
    this.#tokens = Math.min(rate, this.#tokens + ((now - this.#refilledAt) / 1000) * rate);
    this.#refilledAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}
