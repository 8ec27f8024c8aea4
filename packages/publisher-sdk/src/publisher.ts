/** send / sendMany / close over a transport, with validation done once, before anything leaves the process. */
import { ClosedError, ValidationError } from './errors.js';
import { DEFAULT_EVENT, dataToText, eventNameProblem, topicProblem } from './protocol.js';
import type { OutgoingEvent, Transport } from './transport.js';

export interface SendOptions {
  /** Topic to publish to; defaults to the publisher's `topic`. */
  readonly topic?: string | undefined;
  /** A retried send with the same key is stored once (Redis transport; kept for the idempotency TTL). */
  readonly idempotencyKey?: string | undefined;
}

export interface BatchItem extends SendOptions {
  /** Event type; `message` (the default) is sent without an `event:` line. */
  readonly event?: string | undefined;
  /** A string is sent as is; any other value as JSON. */
  readonly data: unknown;
}

export interface Publisher {
  /** Stores one event; resolves with its id once it is in history. */
  send(event: string, data: unknown, options?: SendOptions): Promise<string>;
  /** Stores several events in one round trip (pipelined); resolves with their ids in order. */
  sendMany(items: readonly BatchItem[]): Promise<string[]>;
  /** Waits for sends in flight, then releases connections. Later sends reject with `ClosedError`. */
  close(): Promise<void>;
}

export class TransportPublisher implements Publisher {
  #closed = false;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(
    readonly transport: Transport,
    private readonly defaultTopic: string | undefined,
  ) {}

  async send(event: string, data: unknown, options?: SendOptions): Promise<string> {
    const [id] = await this.sendMany([{ ...options, event, data }]);
    return id as string;
  }

  sendMany(items: readonly BatchItem[]): Promise<string[]> {
    if (this.#closed) return Promise.reject(new ClosedError());
    let events: OutgoingEvent[];
    try {
      events = items.map((item) => this.#validate(item));
    } catch (error) {
      return Promise.reject(error);
    }
    if (events.length === 0) return Promise.resolve([]);
    const pending = this.transport.publish(events);
    this.#inFlight.add(pending);
    const forget = () => this.#inFlight.delete(pending);
    pending.then(forget, forget);
    return pending;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    await this.transport.close();
  }

  #validate(item: BatchItem): OutgoingEvent {
    const topic = item.topic ?? this.defaultTopic;
    if (topic === undefined) throw new ValidationError('no topic: pass { topic } to send or to createPublisher');
    const topicError = topicProblem(topic);
    if (topicError) throw new ValidationError(topicError);
    const event = item.event ?? DEFAULT_EVENT;
    const eventError = eventNameProblem(event);
    if (eventError) throw new ValidationError(eventError);
    let data: string;
    try {
      data = dataToText(item.data);
    } catch (cause) {
      throw new ValidationError('data is not JSON-serialisable', { cause });
    }
    return { topic, event, data, idempotencyKey: item.idempotencyKey };
  }
}
