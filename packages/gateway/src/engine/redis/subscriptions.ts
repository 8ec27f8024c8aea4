/**
 * Pub/sub subscriptions on one subscriber connection: the SUBSCRIBEs and UNSUBSCRIBEs of one event-loop
 * turn go out as one command each, every request learns when Redis confirmed it, and after a reconnect the
 * held channels are subscribed again by this module (not by ioredis), so the engine knows exactly when a
 * refill from the stream may start without missing what was published meanwhile.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface SubscriptionEvents {
  /** A live message on a held channel. */
  readonly message: (channel: string, text: string) => void;
  /**
   * The subscriptions of `channels` were lost (the connection dropped); `restored` settles once Redis
   * confirmed them again. Anything published in between is only in the streams.
   */
  readonly lost: (channels: readonly string[], restored: Promise<unknown>) => void;
  /** A SUBSCRIBE failed (counted as a Redis error). */
  readonly error: (error: unknown) => void;
}

export interface Subscriptions {
  /** Resolves once Redis confirmed a SUBSCRIBE of `channel` sent after this call; rejects if it failed. */
  request(channel: string): Promise<void>;
  /** The channel is no longer wanted: unsubscribed with the next batch unless requested again first. */
  release(channel: string): void;
}

interface Request {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class ChannelSubscriptions implements Subscriptions {
  readonly #subscriber: Redis;
  readonly #events: SubscriptionEvents;
  readonly #log: Logger;
  /** Channels whose last command sent was a SUBSCRIBE. */
  readonly #held = new Set<string>();
  /** What the next batch does per channel: the requests waiting for its SUBSCRIBE, or null to release it. */
  readonly #pending = new Map<string, Request[] | null>();
  #flushHandle: NodeJS.Immediate | undefined;
  #wasReady = false;
  #closed = false;

  constructor(subscriber: Redis, events: SubscriptionEvents, log: Logger) {
    this.#subscriber = subscriber;
    this.#events = events;
    this.#log = log;
    subscriber.on('message', (channel: string, text: string) => {
      if (this.#held.has(channel)) events.message(channel, text);
    });
    subscriber.on('ready', () => this.#onReady());
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

  /** The subscriber connection's readiness is part of the connections' own. */
  isReady(): boolean {
    return true;
  }

  close(): void {
    this.#closed = true;
    if (this.#flushHandle) clearImmediate(this.#flushHandle);
    const closed = new Error('engine is closed');
    for (const requests of this.#pending.values()) for (const request of requests ?? []) request.reject(closed);
    this.#pending.clear();
  }

  #schedule(): void {
    this.#flushHandle ??= setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushHandle = undefined;
    const subscribing: string[] = [];
    const requests: Request[] = [];
    const unsubscribing: string[] = [];
    for (const [channel, waiting] of this.#pending) {
      if (waiting) {
        // Sent even when the channel is held already: the new request needs its own confirmation.
        subscribing.push(channel);
        requests.push(...waiting);
        this.#held.add(channel);
      } else if (this.#held.delete(channel)) {
        unsubscribing.push(channel);
      }
    }
    this.#pending.clear();
    if (unsubscribing.length > 0) {
      this.#subscriber.unsubscribe(...unsubscribing).catch((error: unknown) => {
        // Harmless: messages of released channels are ignored, and a reconnect only resubscribes held ones.
        this.#log.debug({ err: error, channels: unsubscribing.length }, 'UNSUBSCRIBE failed');
      });
    }
    if (subscribing.length === 0) return;
    this.#subscriber.subscribe(...subscribing).then(
      () => {
        for (const request of requests) request.resolve();
      },
      (error: unknown) => {
        if (this.#closed) return;
        this.#events.error(error);
        this.#log.warn({ err: error, channels: subscribing.length }, 'SUBSCRIBE failed');
        // Only channels nobody asked for again meanwhile are dropped; the others await their own batch.
        for (const channel of subscribing) if (!this.#pending.has(channel)) this.#held.delete(channel);
        for (const request of requests) request.reject(error);
      },
    );
  }

  #onReady(): void {
    if (!this.#wasReady) {
      this.#wasReady = true;
      return;
    }
    const channels = [...this.#held];
    this.#log.info({ channels: channels.length }, 'subscriber reconnected; resubscribing');
    const restored = channels.length > 0 ? this.#subscriber.subscribe(...channels) : Promise.resolve();
    // A failure is handled by the refill loops (they retry) and the next 'ready' (it resubscribes again).
    restored.catch((error: unknown) => this.#log.warn({ err: error }, 'resubscribe failed'));
    this.#events.lost(channels, restored);
  }
}
