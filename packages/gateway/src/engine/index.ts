/**
 * The one place that chooses an engine: Redis when one is configured (REDIS_URL, REDIS_SENTINELS or
 * REDIS_CLUSTER_NODES), else the embedded one. It also wires
 * the duties beside the event store (single-use claims, the cluster view of nodes), which live in the
 * same place as the events.
 */
import type { Logger } from 'pino';
import { type Config, redisTargetOf } from '../config.js';
import { type ClaimStore, MemoryClaimStore } from './claim-store.js';
import type { Engine } from './engine.js';
import { MemoryEngine } from './memory-engine.js';
import { MemoryNodeDirectory, type NodeDirectory } from './node-directory.js';
import { RedisEngine } from './redis/redis-engine.js';

export type { ClaimStore } from './claim-store.js';
export type { Engine, HistoryPage, Publication, PublicationSink, PublishRequest, Retention } from './engine.js';

export interface Storage {
  readonly engine: Engine;
  readonly claims: ClaimStore;
  readonly directory: NodeDirectory;
}

export function createStorage(config: Config, logger: Logger): Storage {
  const retention = { maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs };
  const target = redisTargetOf(config);
  if (target) {
    const engine = new RedisEngine({
      target,
      prefix: config.redisPrefix,
      retention,
      logger,
      // PINGs twice per deadline, so a frozen Redis is noticed within about 1.5 deadlines.
      pingIntervalMs: Math.min(1000, Math.ceil(config.redisHealthTimeoutMs / 2)),
      pingDeadlineMs: config.redisHealthTimeoutMs,
      topicIdleTtlMs: config.topicIdleTtlMs,
      minReplicas: config.publishMinReplicas,
      replicaTimeoutMs: config.publishReplicaTimeoutMs,
    });
    return { engine, claims: engine, directory: engine.directory };
  }
  return { engine: new MemoryEngine(retention), claims: new MemoryClaimStore(), directory: new MemoryNodeDirectory() };
}
