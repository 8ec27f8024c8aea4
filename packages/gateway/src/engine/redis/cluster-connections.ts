/**
 * The engine's command connection on Redis Cluster: one ioredis Cluster for reads, publishes and claims
 * (each routed by its `{topic}` hash tag; never re-sent after a dropped node connection, since a re-sent
 * publish would be stored twice). Live messages come over the sharded subscriptions instead.
 */
import { createRedisClient, type RedisTarget } from '@sse-gateway/publisher-sdk/redis-target';
import type { Cluster } from 'ioredis';
import type { Logger } from 'pino';
import type { ConnectionEvents, EngineConnections } from './connections.js';
import { trackWithDeadline } from './connections.js';

export class ClusterConnections implements EngineConnections {
  readonly commands: Cluster;
  readonly #log: Logger;
  #closed = false;

  constructor(target: RedisTarget & { kind: 'cluster' }, log: Logger, events: ConnectionEvents) {
    this.#log = log;
    this.commands = createRedisClient(target, {
      connectionName: 'sse-gateway:commands',
      clusterOptions: { lazyConnect: true },
    }) as Cluster;
    let lost = false;
    this.commands.on('error', (error: Error) => {
      events.error();
      if (!lost && !this.#closed) this.#log.warn({ err: error }, 'Redis Cluster error');
      lost = true;
    });
    this.commands.on('ready', () => {
      if (lost && !this.#closed) this.#log.info('Redis Cluster connection restored');
      lost = false;
      events.commandsReady();
    });
    this.commands.on('+node', () => events.commandsReady());
  }

  async connect(): Promise<void> {
    try {
      await this.commands.connect();
    } catch (error) {
      // Not fatal: ioredis keeps retrying and /readyz says 503 until the cluster is reachable.
      this.#log.warn({ err: error }, 'Redis Cluster is not reachable yet; retrying in the background');
    }
  }

  isReady(): boolean {
    return !this.#closed && this.commands.status === 'ready';
  }

  tracked<T>(promise: Promise<T>): Promise<T> {
    return trackWithDeadline(promise);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.commands.quit().catch(() => this.commands.disconnect());
  }
}
