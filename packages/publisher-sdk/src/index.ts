/** Publisher SDK for sse-gateway: `createPublisher({ redis | url, topic })`, then `send(event, data)`. */
import { ValidationError } from './errors.js';
import { TransportPublisher, type Publisher } from './publisher.js';
import { HttpTransport } from './transports/http.js';

export type { BatchItem, Publisher, SendOptions } from './publisher.js';
export {
  AuthError,
  ClosedError,
  NetworkError,
  PublishError,
  type PublishErrorKind,
  ServerError,
  ValidationError,
} from './errors.js';
export type { OutgoingEvent, Transport } from './transport.js';

export interface HttpPublisherOptions {
  /** Base URL of a gateway or its load balancer: events go to `POST {url}/publish`. */
  readonly url: string;
  /** Bearer token with a publish grant, needed once the gateway has auth keys. */
  readonly token?: string | undefined;
  /** Default topic of `send`. */
  readonly topic?: string | undefined;
  /** Per-request timeout in milliseconds. Default 10 000. */
  readonly timeoutMs?: number | undefined;
}

export type PublisherOptions = HttpPublisherOptions;

export function createPublisher(options: PublisherOptions): Publisher {
  if (!options || typeof options !== 'object') throw new ValidationError('createPublisher needs an options object');
  if ('url' in options && options.url) {
    return new TransportPublisher(new HttpTransport(options), options.topic);
  }
  throw new ValidationError('createPublisher needs `url` (HTTP to a gateway) or `redis` (straight to Redis)');
}
