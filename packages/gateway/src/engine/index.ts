/** The one place that chooses an engine: Redis when REDIS_URL is set, else the embedded one. */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Engine } from './engine.js';
import { MemoryEngine } from './memory-engine.js';
import { RedisEngine } from './redis-engine.js';

export type { Engine, HistoryPage, Publication, PublicationSink, PublishRequest, Retention } from './engine.js';

export function createEngine(config: Config, logger: Logger): Engine {
  const retention = { maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs };
  if (config.redisUrl) {
    return new RedisEngine({ url: config.redisUrl, prefix: config.redisPrefix, retention, logger });
  }
  return new MemoryEngine(retention);
}
