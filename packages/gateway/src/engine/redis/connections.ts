/**
 * The engine's two Redis connections: commands (reads, publishes, claims; never re-sends, since a re-sent
 * publish would be stored twice) and the subscriber (pub/sub only). This module connects them, logs each
 * loss and recovery once, fails reads in flight when the command connection drops, and refuses readiness
 * on a Redis older than 7.
 */
import { createRedisClient, type RedisTarget } from '@sse-gateway/publisher-sdk/redis-target';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { PingMonitor } from './ping-monitor.js';

/**
 * How long a dropped connection may take to close gracefully before its socket is destroyed. ioredis waits
 * 2 s by default, and a frozen Redis never completes the close: every command in flight would wait too.
 */
const DISCONNECT_TIMEOUT_MS = 100;
/** Oldest Redis major version with XINFO STREAM max-deleted-entry-id. */
const MIN_REDIS_MAJOR = 7;

export interface HealthOptions {
  /** Time between PINGs on each connection, in ms. */
  readonly pingIntervalMs: number;
  /** A PING unanswered this long makes the node unready and drops the connection, in ms. */
  readonly pingDeadlineMs: number;
}

/** What the engine needs of its command side, on one Redis, Sentinel or a Cluster alike. */
export interface EngineConnections {
  readonly commands: Redis | Cluster;
  connect(): Promise<void>;
  isReady(): boolean;
  /** Fails `promise` when the command connection cannot answer it any more. */
  tracked<T>(promise: Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * A read unanswered this long fails (the refill loops retry): ioredis never settles a command that was in
 * flight when a connection dropped with re-sending off, and a frozen node never answers.
 */
const READ_DEADLINE_MS = 10_000;

/** Rejects when `promise` has not settled within the read deadline. */
export function trackWithDeadline<T>(promise: Promise<T>, onSettled?: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onSettled?.();
      reject(new Error(`Redis did not answer a read within ${READ_DEADLINE_MS} ms`));
    }, READ_DEADLINE_MS);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        onSettled?.();
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        onSettled?.();
        reject(error);
      },
    );
  });
}

export interface ConnectionEvents {
  /** A connection reported an error (counted for metrics). */
  readonly error: () => void;
  /** The command connection is (again) ready: refills waiting out a failure may retry now. */
  readonly commandsReady: () => void;
}

export class RedisConnections implements EngineConnections {
  readonly commands: Redis;
  readonly subscriber: Redis;
  readonly #log: Logger;
  readonly #events: ConnectionEvents;
  /** Reads in flight on the command connection, failed when it drops (it does not re-send them). */
  readonly #reads = new Set<(error: Error) => void>();
  /** False while the connected server is older than Redis 7 (see #checkVersion). */
  #versionOk = true;
  readonly #monitors: PingMonitor[];
  #closed = false;

  constructor(
    target: RedisTarget & { kind: 'single' | 'sentinel' },
    health: HealthOptions,
    log: Logger,
    events: ConnectionEvents,
  ) {
    this.#log = log;
    this.#events = events;
    // One Redis or a Sentinel-managed primary (the factory turns on failover detection): RESP2, TLS and
    // credentials as the target says.
    this.commands = createRedisClient(target, {
      connectionName: 'sse-gateway:commands',
      redisOptions: {
        lazyConnect: true,
        disconnectTimeout: DISCONNECT_TIMEOUT_MS,
        // Reads fail fast while Redis is away (the hub and the refill loops retry); publishes wait in the
        // transport's own bounded queue. Never re-sent: a re-sent publish would be stored twice.
        enableOfflineQueue: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: null,
      },
    }) as Redis;
    this.subscriber = createRedisClient(target, {
      connectionName: 'sse-gateway:subscriber',
      redisOptions: {
        lazyConnect: true,
        disconnectTimeout: DISCONNECT_TIMEOUT_MS,
        enableOfflineQueue: true,
        autoResendUnfulfilledCommands: true,
        // Resubscribed by this engine, so it knows when a refill may start.
        autoResubscribe: false,
        maxRetriesPerRequest: 5,
      },
    }) as Redis;
    this.#watch(this.commands, 'commands');
    this.#watch(this.subscriber, 'subscriber');
    this.#monitors = [
      this.#monitor(this.commands, 'commands', health),
      this.#monitor(this.subscriber, 'subscriber', health),
    ];
    this.commands.on('close', () => this.#failReads());
    this.commands.on('ready', () => {
      events.commandsReady();
      void this.#checkVersion();
    });
  }

  async connect(): Promise<void> {
    const results = await Promise.allSettled([this.commands.connect(), this.subscriber.connect()]);
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) {
      // Not fatal: ioredis keeps reconnecting and /readyz says 503 until it succeeds.
      this.#log.warn({ err: failed.reason }, 'Redis is not reachable yet; retrying in the background');
    }
  }

  isReady(): boolean {
    return (
      !this.#closed &&
      this.#versionOk &&
      this.commands.status === 'ready' &&
      this.subscriber.status === 'ready' &&
      this.#monitors.every((monitor) => monitor.responsive)
    );
  }

  /** The command connection never re-sends, so a read in flight when it drops must be failed here. */
  tracked<T>(promise: Promise<T>): Promise<T> {
    let fail: (error: Error) => void = () => {};
    const failed = new Promise<never>((_, reject) => {
      fail = reject;
    });
    this.#reads.add(fail);
    return Promise.race([trackWithDeadline(promise, () => this.#reads.delete(fail)), failed]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const monitor of this.#monitors) monitor.stop();
    await Promise.all([quit(this.commands), quit(this.subscriber)]);
    this.#failReads();
  }

  #failReads(): void {
    if (this.#reads.size === 0) return;
    const error = new Error('the connection to Redis was lost during a read');
    for (const fail of this.#reads) fail(error);
    this.#reads.clear();
  }

  /**
   * Honest trim detection needs XINFO STREAM's max-deleted-entry-id, which Redis 7.0 introduced: on an
   * older server a trimmed resume point would be served silently, so the node refuses to be ready.
   */
  async #checkVersion(): Promise<void> {
    const info = await this.commands.info('server').catch(() => undefined);
    const version = info ? /redis_version:(\d+)\./.exec(info)?.[1] : undefined;
    if (version === undefined) return;
    this.#versionOk = Number(version) >= MIN_REDIS_MAJOR;
    if (!this.#versionOk) {
      this.#log.error(
        { redisVersion: /redis_version:(\S+)/.exec(info ?? '')?.[1] },
        `Redis ${MIN_REDIS_MAJOR}.0 or newer is required (XINFO STREAM max-deleted-entry-id); not ready`,
      );
    }
  }

  #monitor(client: Redis, connection: string, health: HealthOptions): PingMonitor {
    return new PingMonitor(client, {
      intervalMs: health.pingIntervalMs,
      deadlineMs: health.pingDeadlineMs,
      onUnresponsive: (waitedMs) => {
        this.#events.error();
        this.#log.warn({ connection, waitedMs }, 'Redis stopped answering; not ready, reconnecting');
      },
    });
  }

  /** Logs each connection's loss and recovery once, not every retry. */
  #watch(client: Redis, connection: string): void {
    let lost = false;
    client.on('error', (error: Error) => {
      this.#events.error();
      if (!lost && !this.#closed) this.#log.warn({ err: error, connection }, 'Redis connection error');
      lost = true;
    });
    client.on('close', () => {
      if (!lost && !this.#closed) this.#log.warn({ connection }, 'Redis connection lost; reconnecting');
      lost = true;
    });
    client.on('ready', () => {
      if (lost && !this.#closed) this.#log.info({ connection }, 'Redis connection restored');
      lost = false;
    });
  }
}

async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    await client.quit().catch(() => client.disconnect());
  } else {
    client.disconnect();
  }
}
