/** Publisher SDK for sse-gateway: `createPublisher({ redis | url, topic })`, then `send(event, data)`. */
import { ValidationError } from './errors.js';
import { type Publisher, TransportPublisher } from './publisher.js';
import { HttpTransport } from './transports/http.js';
import { RedisTransport, type RedisTransportOptions } from './transports/redis.js';

export {
  AuthError,
  ClosedError,
  NetworkError,
  PublishError,
  type PublishErrorKind,
  ServerError,
  ValidationError,
} from './errors.js';
export type { BatchItem, Publisher, SendOptions } from './publisher.js';
export {
  createRedisClient,
  DEFAULT_REDIS_PORT,
  DEFAULT_SENTINEL_PORT,
  describeRedisTarget,
  isRedisCluster,
  isRedisTarget,
  parseRedisUrl,
  type RedisAddress,
  type RedisClientOptions,
  type RedisTarget,
} from './redis-target.js';
export type { OutgoingEvent, Transport } from './transport.js';
export { HttpTransport, type HttpTransportOptions } from './transports/http.js';
export {
  DEFAULT_CONNECTION_NAME,
  DEFAULT_IDEMPOTENCY_TTL_MS,
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_LENGTH,
  DEFAULT_MAX_QUEUED_EVENTS,
  DEFAULT_MAX_RETRY_TIME_MS,
  RedisTransport,
  type RedisTransportOptions,
} from './transports/redis.js';

export interface HttpPublisherOptions {
  /** Base URL of a gateway or its load balancer: events go to `POST {url}/publish`. */
  readonly url: string;
  /** Bearer token with a publish grant, needed once the gateway has auth keys. */
  readonly token?: string | undefined;
  /** Default topic of `send`. */
  readonly topic?: string | undefined;
  /** Per-request timeout in milliseconds. Default 10 000. */
  readonly timeoutMs?: number | undefined;
  /** Events per request; `sendMany` splits larger batches. Default 100, the gateway's MAX_BATCH_SIZE. */
  readonly maxBatchSize?: number | undefined;
}

/**
 * Straight to Redis. `maxLength` / `maxAgeMs` are applied on every publish and must equal the gateways'
 * `HISTORY_MAX_LENGTH` / `HISTORY_MAX_AGE_MS` (defaults 1000 and 24 h on both sides), and `prefix` their
 * `REDIS_PREFIX`.
 */
export interface RedisPublisherOptions extends Omit<RedisTransportOptions, 'redis'> {
  /**
   * `redis://`, `redis+sentinel://` or `redis+cluster://` URL (typically `process.env.REDIS_URL`; `rediss`
   * for TLS), a RedisTarget, or an ioredis Redis or Cluster instance you own.
   */
  readonly redis: RedisTransportOptions['redis'] | undefined;
  /** Default topic of `send`. */
  readonly topic?: string | undefined;
}

export type PublisherOptions = HttpPublisherOptions | RedisPublisherOptions;

export function createPublisher(options: PublisherOptions): Publisher {
  if (!options || typeof options !== 'object') throw new ValidationError('createPublisher needs an options object');
  if ('url' in options && options.url) {
    return new TransportPublisher(new HttpTransport(options), options.topic);
  }
  if ('redis' in options && options.redis) {
    return new TransportPublisher(new RedisTransport({ ...options, redis: options.redis }), options.topic);
  }
  if ('redis' in options) {
    throw new ValidationError('createPublisher got `redis` but it is empty (is REDIS_URL set?)');
  }
  throw new ValidationError('createPublisher needs `url` (HTTP to a gateway) or `redis` (straight to Redis)');
}
