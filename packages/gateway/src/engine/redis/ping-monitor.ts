/**
 * Notices a Redis that stops answering while its socket stays open (a frozen server, a network partition):
 * TCP alone takes minutes to give up, and until then every command would wait. Each connection is PINGed
 * every interval; one PING unanswered past the deadline makes the connection unresponsive (the node turns
 * unready) and drops it, so ioredis reconnects and the engine's usual recovery (resubscribe, refill from the
 * streams) runs once Redis answers again.
 */
import type { Redis } from 'ioredis';

export interface PingMonitorOptions {
  /** Time between PINGs, in ms. */
  readonly intervalMs: number;
  /** A PING unanswered this long marks the connection unresponsive, in ms. */
  readonly deadlineMs: number;
  /** Told once per episode, with how long the PING had been waiting. */
  readonly onUnresponsive: (waitedMs: number) => void;
}

export class PingMonitor {
  readonly #client: Redis;
  readonly #options: PingMonitorOptions;
  readonly #timer: NodeJS.Timeout;
  /** When the PING in flight was sent; 0 when none is. */
  #pingSentAt = 0;
  /** When the last PING was answered. */
  #lastAnswerAt = 0;
  #unresponsive = false;

  constructor(client: Redis, options: PingMonitorOptions) {
    this.#client = client;
    this.#options = options;
    // A fresh connection has answered its ready check: it is responsive until a PING says otherwise.
    client.on('ready', () => {
      this.#unresponsive = false;
      this.#pingSentAt = 0;
    });
    // Ticks finer than the interval, so a missed deadline is noticed soon after it passes.
    this.#timer = setInterval(() => this.#tick(), Math.max(10, Math.min(options.intervalMs, options.deadlineMs) / 4));
    this.#timer.unref();
  }

  /** False from a missed deadline until the connection is ready again. */
  get responsive(): boolean {
    return !this.#unresponsive;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #tick(): void {
    if (this.#client.status !== 'ready' || this.#unresponsive) return;
    const now = Date.now();
    if (this.#pingSentAt !== 0) {
      const waited = now - this.#pingSentAt;
      if (waited < this.#options.deadlineMs) return;
      this.#unresponsive = true;
      this.#pingSentAt = 0;
      this.#options.onUnresponsive(waited);
      // Fails the commands in flight (their outcome is unknown to the caller) and reconnects with backoff.
      this.#client.disconnect(true);
      return;
    }
    if (now - this.#lastAnswerAt < this.#options.intervalMs) return;
    this.#pingSentAt = now;
    const sentAt = now;
    this.#client.ping().then(
      () => {
        if (this.#pingSentAt === sentAt) this.#pingSentAt = 0;
        this.#lastAnswerAt = Date.now();
      },
      () => {
        // A failed PING means the connection is closing; ioredis reports and handles that itself.
        if (this.#pingSentAt === sentAt) this.#pingSentAt = 0;
      },
    );
  }
}
