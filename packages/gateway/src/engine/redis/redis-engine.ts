/**
 * The Redis engine: history in one Redis Stream per topic, live fan-out over pub/sub. Publishing runs the
 * SDK's append-and-publish script (the same code path as a publisher talking to Redis directly); reads run
 * one small script so the epoch, the stream's metadata and its entries are one consistent snapshot.
 *
 * The parts, one file each: connections.ts (the two connections and their health), subscriptions.ts
 * (batched, confirmed SUBSCRIBEs), topic-flow.ts (the lossless per-topic flow), history.ts (reads).
 */
import { RedisTransport } from '@sse-gateway/publisher-sdk';
import { decodeLiveMessage, type Position, topicKeys, topicOfChannel } from '@sse-gateway/publisher-sdk/protocol';
import type { RedisTarget } from '@sse-gateway/publisher-sdk/redis-target';
import type { Logger } from 'pino';
import type { ClaimStore } from '../claim-store.js';
import {
  type CountingEngine,
  type GapSink,
  type HistoryPage,
  type PublicationSink,
  PublishNotAppliedError,
  PublishOutcomeUnknownError,
  type PublishRequest,
  type Retention,
} from '../engine.js';
import type { NodeDirectory } from '../node-directory.js';
import { ClusterConnections } from './cluster-connections.js';
import { type EngineConnections, RedisConnections } from './connections.js';
import { EventNameGuard } from './event-names.js';
import { HistoryReader } from './history.js';
import { RedisNodeDirectory } from './node-directory.js';
import { ShardedSubscriptions } from './sharded-subscriptions.js';
import { ChannelSubscriptions, type SubscriptionEvents, type Subscriptions } from './subscriptions.js';
import { type FlowContext, TopicFlow } from './topic-flow.js';

export interface RedisEngineOptions {
  /** One Redis, a Sentinel-managed primary or a Cluster (see the SDK's parseRedisUrl). */
  readonly target: RedisTarget;
  /** Prefix of every key and channel (`REDIS_PREFIX`). */
  readonly prefix: string;
  readonly retention: Retention;
  readonly logger: Logger;
  /** How long a publish waits for Redis (to reconnect, or to answer) before it fails. Default 10 000 ms. */
  readonly publishTimeoutMs?: number | undefined;
  /** Time between health PINGs on each connection. Default 1000 ms. */
  readonly pingIntervalMs?: number | undefined;
  /** A PING unanswered this long makes the node unready and drops the connection. Default 2000 ms. */
  readonly pingDeadlineMs?: number | undefined;
  /** Topics that got no live message for this long have their stream head checked. Default 10 000 ms. */
  readonly headCheckIntervalMs?: number | undefined;
  /** Keys of a topic nobody publishes to for this long are removed by Redis; 0 = never. Default 0. */
  readonly topicIdleTtlMs?: number | undefined;
  /** Replicas that must have a publish before it resolves (WAIT); 0 = none. Default 0. */
  readonly minReplicas?: number | undefined;
  /** Longest wait for `minReplicas`, in ms. Default 1000. */
  readonly replicaTimeoutMs?: number | undefined;
}

/** Counters for the metrics module. */
export interface RedisEngineStats {
  /** Topic refills from history after a subscription was lost. */
  refills: number;
  /** Refills that found history could not fill the gap (trimmed, lost or rewound stream). */
  resets: number;
  /** Errors reported by either Redis connection, and failed refill or subscription attempts. */
  redisErrors: number;
  /** Round trips to Redis for reads, publishes (one per pipelined batch) and claims; pub/sub excluded. */
  roundTrips: number;
  /** Live messages found missing without a disconnect (a v2 predecessor, or the idle-topic head check). */
  gapsDetected: number;
}

const DEFAULT_PUBLISH_TIMEOUT_MS = 10_000;
const DEFAULT_PING_INTERVAL_MS = 1000;
const DEFAULT_PING_DEADLINE_MS = 2000;
const DEFAULT_HEAD_CHECK_INTERVAL_MS = 10_000;
/** Heads read per check at most, so 100k idle topics cost a bounded trickle of reads, not a burst. */
const MAX_HEAD_CHECKS_PER_ROUND = 500;

export class RedisEngine implements CountingEngine, ClaimStore {
  readonly kind = 'redis';
  readonly stats: RedisEngineStats = { refills: 0, resets: 0, redisErrors: 0, roundTrips: 0, gapsDetected: 0 };
  /** The cluster view (nodes and their consumer counts), kept beside the events. */
  readonly directory: NodeDirectory;
  readonly #options: RedisEngineOptions;
  readonly #log: Logger;
  readonly #connections: EngineConnections;
  readonly #subscriptions: Subscriptions & {
    close(): void;
    isReady(): boolean;
    /** Cluster only: the primary serving this channel's slot stopped answering. */
    ownerUnresponsive?(channel: string): boolean;
  };
  readonly #history: HistoryReader;
  readonly #eventNames: EventNameGuard;
  readonly #flowContext: FlowContext;
  #transport: RedisTransport | undefined;
  #sink: PublicationSink | undefined;
  #onGap: GapSink | undefined;
  readonly #flows = new Map<string, TopicFlow>();
  /** Wakes sleeping refill retries when Redis is back, and on close. */
  readonly #sleepers = new Set<() => void>();
  #headCheckTimer: NodeJS.Timeout | undefined;
  /** Topics still to check in the current round of head checks. */
  #headCheckQueue: TopicFlow[] = [];
  #closed = false;

  constructor(options: RedisEngineOptions) {
    this.#options = options;
    this.#log = options.logger.child({ mod: 'redis-engine' });
    this.#eventNames = new EventNameGuard(this.#log);
    const health = {
      pingIntervalMs: options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
      pingDeadlineMs: options.pingDeadlineMs ?? DEFAULT_PING_DEADLINE_MS,
    };
    const connectionEvents = {
      error: () => this.stats.redisErrors++,
      commandsReady: () => this.#wakeSleepers(),
    };
    const subscriptionEvents: SubscriptionEvents = {
      message: (channel, text) => this.#onMessage(channel, text),
      lost: (channels, restored) => this.#onLost(channels, restored),
      error: () => this.stats.redisErrors++,
    };
    // The one branch between deployments: a Cluster routes commands by slot and delivers live messages over
    // sharded pub/sub, one subscriber per primary; one Redis or Sentinel has one subscriber connection.
    if (options.target.kind === 'cluster') {
      const connections = new ClusterConnections(options.target, this.#log, connectionEvents);
      this.#connections = connections;
      this.#subscriptions = new ShardedSubscriptions(connections.commands, health, subscriptionEvents, this.#log);
    } else {
      const connections = new RedisConnections(options.target, health, this.#log, connectionEvents);
      this.#connections = connections;
      this.#subscriptions = new ChannelSubscriptions(connections.subscriber, subscriptionEvents, this.#log);
    }
    this.directory = new RedisNodeDirectory(this.#connections.commands, options.prefix);
    this.#history = new HistoryReader({
      commands: this.#connections.commands,
      prefix: options.prefix,
      eventNames: this.#eventNames,
      onRoundTrip: () => this.stats.roundTrips++,
      tracked: (promise) => this.#connections.tracked(promise),
    });
    this.#flowContext = {
      log: this.#log,
      sink: () => this.#sink,
      onGap: () => this.#onGap,
      head: (topic) => this.head(topic),
      readAfter: (topic, after, limit) => this.readAfter(topic, after, limit),
      closed: () => this.#closed,
      sleep: (ms) => this.#sleep(ms),
      stats: this.stats,
      settled: (flow) => this.#forgetIfStopped(flow),
    };
  }

  async start(sink: PublicationSink, onGap?: GapSink): Promise<void> {
    this.#sink = sink;
    this.#onGap = onGap;
    await this.#connections.connect();
    this.#transport = new RedisTransport({
      redis: this.#connections.commands,
      prefix: this.#options.prefix,
      maxLength: this.#options.retention.maxLength,
      maxAgeMs: this.#options.retention.maxAgeMs,
      maxRetryTimeMs: this.#options.publishTimeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS,
      topicIdleTtlMs: this.#options.topicIdleTtlMs ?? 0,
      minReplicas: this.#options.minReplicas ?? 0,
      replicaTimeoutMs: this.#options.replicaTimeoutMs,
    });
    const interval = this.#options.headCheckIntervalMs ?? DEFAULT_HEAD_CHECK_INTERVAL_MS;
    this.#headCheckTimer = setInterval(() => this.#checkIdleHeads(interval), Math.max(100, interval / 4));
    this.#headCheckTimer.unref();
  }

  async publish(events: readonly PublishRequest[]): Promise<Position[]> {
    if (this.#closed) throw new PublishNotAppliedError('engine is closed');
    if (!this.#transport) throw new PublishNotAppliedError('engine is not started');
    const frozen = this.#subscriptions.ownerUnresponsive;
    if (frozen) {
      // A frozen primary would hold the publish until the read deadline, then leave its outcome unknown:
      // refuse it before sending instead (503, not applied); the other primaries' topics go on.
      const stuck = events.find((event) =>
        frozen.call(this.#subscriptions, topicKeys(this.#options.prefix, event.topic).channel),
      );
      if (stuck)
        throw new PublishNotAppliedError(`the Redis primary of topic ${JSON.stringify(stuck.topic)} stopped answering`);
    }
    this.stats.roundTrips++;
    try {
      return await this.#transport.publishPositions(events);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if ((error as { maybeStored?: unknown }).maybeStored === true) {
        throw new PublishOutcomeUnknownError(message, { cause: error });
      }
      throw new PublishNotAppliedError(message, { cause: error });
    }
  }

  subscribe(topic: string): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('engine is closed'));
    let flow = this.#flows.get(topic);
    if (!flow) {
      flow = new TopicFlow(topic, topicKeys(this.#options.prefix, topic).channel, this.#flowContext);
      this.#flows.set(topic, flow);
    }
    const wasStopped = flow.phase === 'stopped';
    const { gen, ready } = flow.start();
    if (wasStopped) {
      const started = flow;
      this.#subscriptions.request(started.channel).then(
        () => started.confirmed(gen),
        (error: unknown) => {
          if (started.gen === gen && started.phase === 'subscribing') started.fail(error);
        },
      );
      // A flow that could not start (SUBSCRIBE or its baseline read failed) gives its channel back.
      ready.catch(() => {
        if (started.phase === 'stopped') this.#release(started);
      });
    }
    return ready;
  }

  /** Stops the flow at once (messages of stopped topics are ignored); the UNSUBSCRIBE is batched. */
  async unsubscribe(topic: string): Promise<void> {
    const flow = this.#flows.get(topic);
    if (!flow || flow.phase === 'stopped') return;
    flow.stop();
    this.#release(flow);
  }

  head(topic: string): Promise<Position> {
    return this.#history.head(topic);
  }

  readAfter(topic: string, after: Position, limit: number): Promise<HistoryPage> {
    return this.#history.readAfter(topic, after, limit);
  }

  async claimOnce(key: string, ttlMs: number): Promise<boolean> {
    this.stats.roundTrips++;
    const reply = await this.#connections.commands.set(`${this.#options.prefix}once:${key}`, '1', 'PX', ttlMs, 'NX');
    return reply === 'OK';
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.stats };
  }

  isReady(): boolean {
    return !this.#closed && this.#connections.isReady() && this.#subscriptions.isReady();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#headCheckTimer) clearInterval(this.#headCheckTimer);
    this.#wakeSleepers();
    this.#subscriptions.close();
    const closed = new Error('engine is closed');
    for (const flow of this.#flows.values()) flow.close(closed);
    this.#flows.clear();
    await this.#transport?.close();
    await this.#connections.close();
  }

  #release(flow: TopicFlow): void {
    this.#subscriptions.release(flow.channel);
    this.#forgetIfStopped(flow);
  }

  /** A stopped flow leaves the map once no loop runs on it; a later subscribe makes a fresh one. */
  #forgetIfStopped(flow: TopicFlow): void {
    if (flow.phase === 'stopped' && !flow.syncing && this.#flows.get(flow.topic) === flow) {
      this.#flows.delete(flow.topic);
    }
  }

  #onMessage(channel: string, text: string): void {
    const topic = topicOfChannel(this.#options.prefix, channel);
    const flow = topic === undefined ? undefined : this.#flows.get(topic);
    if (!flow || flow.phase === 'stopped') return;
    const decoded = decodeLiveMessage(text);
    if (!decoded) {
      this.#log.warn({ topic }, 'ignored a live message in an unknown format');
      return;
    }
    const event = this.#eventNames.safe(decoded.event, flow.topic);
    flow.message(event === decoded.event ? decoded : { ...decoded, event });
  }

  /** Anything published while the subscriptions were away is only in the streams now: refill. */
  #onLost(channels: readonly string[], restored: Promise<unknown>): void {
    const lost = new Set(channels);
    let count = 0;
    for (const flow of this.#flows.values()) {
      // Flows whose SUBSCRIBE had not gone out yet lost nothing, but a refill from their baseline is cheap.
      if (flow.phase === 'stopped' || (!lost.has(flow.channel) && flow.phase !== 'subscribing')) continue;
      flow.lost(restored);
      count++;
    }
    this.#log.info({ topics: count }, 'subscriptions lost; refilling subscribed topics from history');
    this.#wakeSleepers();
  }

  /**
   * A live message lost with nothing published after it would go unnoticed (the next message would reveal
   * it by its predecessor): topics that were quiet for `idleMs` have their head read, a bounded number per
   * tick, and refill when the stream is ahead.
   */
  #checkIdleHeads(idleMs: number): void {
    if (this.#closed || !this.isReady()) return;
    if (this.#headCheckQueue.length === 0) this.#headCheckQueue = [...this.#flows.values()];
    const now = Date.now();
    const batch: TopicFlow[] = [];
    while (batch.length < MAX_HEAD_CHECKS_PER_ROUND && this.#headCheckQueue.length > 0) {
      const flow = this.#headCheckQueue.pop() as TopicFlow;
      if (flow.phase === 'live' && now - flow.lastActivityAt >= idleMs) batch.push(flow);
    }
    for (const flow of batch) {
      const reached = flow.position;
      const gen = flow.gen;
      this.#history.head(flow.topic).then(
        (head) => {
          // Only a flow still where it was when the read went out can be judged by it.
          if (flow.gen === gen && flow.position === reached) flow.headChecked(head);
        },
        () => {
          // A failed check is retried next round; connection trouble has its own recovery.
        },
      );
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.#sleepers.add(wake);
    });
  }

  #wakeSleepers(): void {
    for (const wake of [...this.#sleepers]) wake();
  }
}
