/**
 * Pub/sub subscriptions on one subscriber connection: the SUBSCRIBEs and UNSUBSCRIBEs of one event-loop
 * turn go out as one command each, every request learns when Redis confirmed it, and after a reconnect the
 * held channels are subscribed again by this module (not by ioredis), so the engine knows exactly when a
 * refill from the stream may start without missing what was published meanwhile.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type Batch, SubscriptionBatch } from './subscription-batch.js';

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

export class ChannelSubscriptions implements Subscriptions {
  readonly #subscriber: Redis;
  readonly #events: SubscriptionEvents;
  readonly #log: Logger;
  /** Channels whose last command sent was a SUBSCRIBE. */
  readonly #held = new Set<string>();
  readonly #batch = new SubscriptionBatch((batch) => this.#flush(batch));
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
    return this.#batch.request(channel);
  }

  release(channel: string): void {
    this.#batch.release(channel);
  }

  /** The subscriber connection's readiness is part of the connections' own. */
  isReady(): boolean {
    return true;
  }

  close(): void {
    this.#closed = true;
    this.#batch.close();
  }

  #flush(batch: Batch): void {
    const subscribing = [...batch.subscribe.keys()];
    const requests = [...batch.subscribe.values()].flat();
    // Sent even for channels held already: each new request needs its own confirmation.
    for (const channel of subscribing) this.#held.add(channel);
    const unsubscribing = batch.release.filter((channel) => this.#held.delete(channel));
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
        for (const channel of subscribing) if (!this.#batch.has(channel)) this.#held.delete(channel);
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
