/**
 * Redis transport: runs the append-and-publish script (lua.ts) once per event, pipelined, straight against
 * the Redis the gateways use: one server, a Sentinel-managed primary, or a Redis Cluster. The normal path
 * for services inside the cluster.
 *
 * One server (or Sentinel): a batch is one pipeline, written at once; Redis runs it in order, so per-topic
 * order is the caller's order.
 *
 * Redis Cluster: a pipeline must stay in one slot, and ioredis retries redirected (MOVED, ASK), refused
 * (TRYAGAIN, CLUSTERDOWN) commands on its own, later, so two commands of one topic written back to back
 * can be stored in the other order while a slot moves. Each topic therefore has a lane: its events go out
 * as one same-slot pipeline, and the next pipeline of that topic is written only once the previous one
 * has all its replies (ioredis' own retries included). Events that arrive meanwhile wait in the lane and
 * leave together as the next pipeline, so a busy topic gets bigger pipelines rather than more round trips.
 * Events Redis refused without running them are re-sent first, before anything later of their topic.
 * The cost: a topic has one round trip in flight at a time (a sender awaiting each send sees no change,
 * concurrent sends to one topic share pipelines), and a batch spread over many topics goes out as one
 * small pipeline per topic instead of one command per event.
 *
 * Connection loss: events wait in this transport's own bounded queue (never in ioredis' offline queue) while
 * ioredis reconnects with backoff, and a batch that cannot be sent within `maxRetryTimeMs` is rejected and
 * dropped, so an event whose send was rejected is never stored behind the caller's back. A batch already
 * written when the connection drops has an unknown outcome: it is rejected with a NetworkError whose
 * `maybeStored` says so (retry it with an idempotency key to be safe).
 */
import { type ChainableCommander, type Cluster, type Redis, ReplyError } from 'ioredis';
import { ClosedError, NetworkError, ServerError, ValidationError } from '../errors.js';
import { PUBLISH_SCRIPT, SHARDED_PUBLISH_FLAG } from '../lua.js';
import {
  DEFAULT_KEY_PREFIX,
  formatPosition,
  idempotencyKey,
  type Position,
  PROTOCOL_VERSION,
  parseStreamId,
  topicKeys,
} from '../protocol.js';
import { createRedisClient, isRedisCluster, isRedisTarget, parseRedisUrl, type RedisTarget } from '../redis-target.js';
import type { OutgoingEvent, Transport } from '../transport.js';

export interface RedisTransportOptions {
  /**
   * Where to publish: a `redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://` (or `rediss+...`)
   * URL, a RedisTarget (see parseRedisUrl), or an ioredis `Redis` or `Cluster` instance you own (it is not
   * closed by `close()`, and keeps its own retry settings; build it with createRedisClient to get the
   * transport's).
   */
  readonly redis: string | RedisTarget | Redis | Cluster;
  /** CLIENT SETNAME of the connections the transport opens itself. Default `sse-gateway-publisher`. */
  readonly connectionName?: string | undefined;
  /**
   * Publish live messages with SPUBLISH (sharded pub/sub) instead of PUBLISH. Default: true on a Redis
   * Cluster, where the gateways SSUBSCRIBE on the node owning each topic's slot; false otherwise.
   */
  readonly shardedPubSub?: boolean | undefined;
  /** Prefix of every key and channel. Must equal the gateways' `REDIS_PREFIX`. Default `sse:`. */
  readonly prefix?: string | undefined;
  /**
   * Events kept per topic; 0 = no length limit. Default 1000. Retention is applied on every publish, by
   * whoever publishes: use the gateways' `HISTORY_MAX_LENGTH`, or the two will trim the topic differently.
   */
  readonly maxLength?: number | undefined;
  /** Age in ms after which events leave history; 0 = no limit. Default 24 h. Must match `HISTORY_MAX_AGE_MS`. */
  readonly maxAgeMs?: number | undefined;
  /**
   * A topic nobody publishes to for this long has its keys removed by Redis (each publish renews the time);
   * its next publish starts a new epoch, and resumes into the old one get the `stream-lost` reset.
   * 0 = keys never expire. Must match the gateways' `TOPIC_IDLE_TTL_MS`. Default 0.
   */
  readonly topicIdleTtlMs?: number | undefined;
  /**
   * Durability: after each batch, wait (Redis `WAIT`) until this many replicas have the writes, for at most
   * `replicaTimeoutMs`. A batch fewer replicas confirmed rejects with a NetworkError with `maybeStored: true`
   * (it is on the primary and may survive, or be lost in a failover): retry it with its idempotency keys.
   * One Redis or Sentinel only (refused on a Cluster). 0 = do not wait. Default 0.
   */
  readonly minReplicas?: number | undefined;
  /** Longest wait for `minReplicas`, in ms. Default 1000. */
  readonly replicaTimeoutMs?: number | undefined;
  /** How long an idempotency key remembers the id it was first stored under, in ms. Default 24 h. */
  readonly idempotencyTtlMs?: number | undefined;
  /** Events that may wait for Redis to come back; beyond that `send` rejects with NetworkError. Default 10 000. */
  readonly maxQueuedEvents?: number | undefined;
  /**
   * How long a batch waits for Redis (to connect, to stop refusing, or to answer) before it is rejected with
   * a NetworkError carrying the last connection error, in ms. Once Redis has been unreachable this long,
   * sends fail at once until it is back. Default 30 000.
   */
  readonly maxRetryTimeMs?: number | undefined;
}

export const DEFAULT_MAX_LENGTH = 1000;
export const DEFAULT_MAX_AGE_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_MAX_QUEUED_EVENTS = 10_000;
export const DEFAULT_MAX_RETRY_TIME_MS = 30_000;
export const DEFAULT_REPLICA_TIMEOUT_MS = 1000;
export const DEFAULT_CONNECTION_NAME = 'sse-gateway-publisher';
/** Longest idempotency key, in characters: it becomes part of a Redis key. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/** Name under which the script is registered on the ioredis client (defineCommand). */
const COMMAND = 'sseGatewayPublish';
/**
 * Most events in one cluster pipeline; more waiting in a lane go in the next one. Bounds what a redirect
 * re-sends and what one reply holds.
 */
const MAX_LANE_PIPELINE_EVENTS = 1000;
/**
 * Pause before re-sending events Redis refused without running them (TRYAGAIN or MOVED/ASK once ioredis'
 * own redirects ran out, CLUSTERDOWN, READONLY from a demoted primary, a dead node), in ms. As ioredis'
 * retryDelayOnTryAgain: a slot migration or failover takes at least this long to settle.
 */
const REFUSAL_RETRY_DELAY_MS = 100;

type ScriptCall = (numberOfKeys: number, ...args: (string | number)[]) => unknown;
type WithScript<T> = T & { [COMMAND]: ScriptCall };
/** One reply of a pipeline: ioredis' [error, result] pair. */
type Outcome = [Error | null, unknown];

interface Batch {
  readonly events: readonly OutgoingEvent[];
  readonly resolve: (positions: Position[]) => void;
  readonly reject: (error: Error) => void;
  /** Absolute time after which the batch is given up. */
  readonly deadline: number;
  /** Creation order: a batch that has to wait again goes back to its place in the queue. */
  readonly order: number;
  settled: boolean;
  /** Events written to Redis and not answered yet: while any are, the batch's outcome is unknown. */
  unanswered: number;
  /** Some event ran, or may have (its answer does not say): a rejection must say the batch may be stored. */
  ran: boolean;
  /** The latest refusal of events that wait to be re-sent, for the error when time runs out. */
  refusal: Error | undefined;
  /** Cluster: each event's final answer, filled in by the topic lanes. */
  outcomes: (Outcome | undefined)[] | undefined;
  /** Cluster: events without a final answer yet. */
  pending: number;
}

/** Cluster: one topic's events, written one pipeline at a time (see the module comment). */
interface Lane {
  readonly topic: string;
  /** Refused events to re-send before anything else, in order, from `retryHead` on. */
  retry: LaneEvent[];
  retryHead: number;
  /** Events waiting for the pipeline in flight to be answered, in the caller's order, from `head` on. */
  waiting: LaneEvent[];
  head: number;
  /** A pipeline is in flight, or refused events wait out REFUSAL_RETRY_DELAY_MS before going again. */
  busy: boolean;
}

/** Lanes consume their queues by index (a big batch may put many thousands in one); compacted past this. */
const LANE_COMPACT_AFTER = 4096;

interface LaneEvent {
  readonly batch: Batch;
  /** Index of the event in its batch. */
  readonly index: number;
}

/** A pipeline ioredis rejected as a whole before writing it (the cluster failed to connect, for instance). */
class NotSentError extends Error {
  override readonly name = 'NotSentError';
}

export class RedisTransport implements Transport {
  readonly #client: Redis | Cluster;
  readonly #ownsClient: boolean;
  readonly #cluster: boolean;
  readonly #sharded: boolean;
  readonly #prefix: string;
  readonly #maxLength: number;
  readonly #maxAgeMs: number;
  readonly #idempotencyTtlMs: number;
  readonly #topicIdleTtlMs: number;
  readonly #minReplicas: number;
  readonly #replicaTimeoutMs: number;
  readonly #maxQueuedEvents: number;
  readonly #maxRetryTimeMs: number;
  /**
   * Whether in-flight batches must be failed when the connection drops: a Redis client that does not re-send
   * drops them silently. A Cluster always answers them itself (re-sent, or failed when the node is gone).
   */
  readonly #failInFlightOnClose: boolean;
  readonly #queue: Batch[] = [];
  #queuedEvents = 0;
  #created = 0;
  /** Batches written to Redis (in part, on a cluster) and not settled yet. */
  readonly #inFlight = new Set<Batch>();
  /** Called when #inFlight empties (close() of an owned cluster waits for its lanes). */
  readonly #idleWaiters: (() => void)[] = [];
  /** Cluster: topics with events in flight or waiting; removed when idle. */
  readonly #lanes = new Map<string, Lane>();
  #timer: NodeJS.Timeout | undefined;
  /** Re-sends queued batches that Redis refused while the connection stayed up. */
  #retryTimer: NodeJS.Timeout | undefined;
  /** When the connection was last lost (or the transport created before its first connect); 0 while up. */
  #downSince: number;
  #lastError: Error | undefined;
  #closed = false;
  readonly #listeners: [string, (...args: unknown[]) => void][] = [];

  constructor(options: RedisTransportOptions) {
    this.#prefix = options.prefix ?? DEFAULT_KEY_PREFIX;
    if (typeof this.#prefix !== 'string') throw new ValidationError('prefix must be a string');
    this.#maxLength = wholeNumber('maxLength', options.maxLength, DEFAULT_MAX_LENGTH, 0);
    this.#maxAgeMs = wholeNumber('maxAgeMs', options.maxAgeMs, DEFAULT_MAX_AGE_MS, 0);
    this.#idempotencyTtlMs = wholeNumber('idempotencyTtlMs', options.idempotencyTtlMs, DEFAULT_IDEMPOTENCY_TTL_MS, 1);
    this.#topicIdleTtlMs = wholeNumber('topicIdleTtlMs', options.topicIdleTtlMs, 0, 0);
    this.#minReplicas = wholeNumber('minReplicas', options.minReplicas, 0, 0);
    this.#replicaTimeoutMs = wholeNumber('replicaTimeoutMs', options.replicaTimeoutMs, DEFAULT_REPLICA_TIMEOUT_MS, 1);
    this.#maxQueuedEvents = wholeNumber('maxQueuedEvents', options.maxQueuedEvents, DEFAULT_MAX_QUEUED_EVENTS, 0);
    this.#maxRetryTimeMs = wholeNumber('maxRetryTimeMs', options.maxRetryTimeMs, DEFAULT_MAX_RETRY_TIME_MS, 1);
    const connectionName = options.connectionName ?? DEFAULT_CONNECTION_NAME;
    if (typeof connectionName !== 'string' || connectionName === '' || /\s/.test(connectionName)) {
      throw new ValidationError('connectionName must be a non-empty string without spaces');
    }
    if (options.shardedPubSub !== undefined && typeof options.shardedPubSub !== 'boolean') {
      throw new ValidationError('shardedPubSub must be a boolean');
    }

    const redis = options.redis;
    if (typeof redis === 'string' || isRedisTarget(redis)) {
      const target = typeof redis === 'string' ? parseRedisUrl(redis) : redis;
      this.#client = createRedisClient(target, { connectionName });
      this.#ownsClient = true;
    } else if (redis && typeof redis === 'object' && 'defineCommand' in redis) {
      this.#client = redis;
      this.#ownsClient = false;
    } else {
      throw new ValidationError(
        'redis must be a redis://, redis+sentinel:// or redis+cluster:// URL, a RedisTarget, or an ioredis Redis or Cluster instance',
      );
    }
    this.#cluster = isRedisCluster(this.#client);
    if (this.#cluster && this.#minReplicas > 0) {
      // WAIT answers for the node it runs on; a cluster batch spans nodes. Refused rather than half-kept.
      if (this.#ownsClient) this.#client.disconnect();
      throw new ValidationError('minReplicas is not supported on Redis Cluster');
    }
    this.#sharded = options.shardedPubSub ?? this.#cluster;
    this.#failInFlightOnClose = !this.#cluster && !clientResends(this.#client as Redis);
    this.#client.defineCommand(COMMAND, { lua: PUBLISH_SCRIPT });
    this.#downSince = this.#client.status === 'ready' ? 0 : Date.now();
    // A lazyConnect client would wait for a first command, and this transport sends none until it is ready.
    if (this.#client.status === 'wait') this.#client.connect().catch(() => {});
    this.#listen('ready', () => this.#onReady());
    this.#listen('close', () => this.#onClose());
    const remember = (error: unknown) => {
      this.#lastError = error as Error;
    };
    this.#listen('error', remember);
    if (this.#cluster) this.#listen('node error', remember);
  }

  async publish(events: readonly OutgoingEvent[]): Promise<string[]> {
    const positions = await this.publishPositions(events);
    return positions.map(formatPosition);
  }

  /** Like `publish`, with positions instead of formatted ids (for the gateway's engine). */
  publishPositions(events: readonly OutgoingEvent[]): Promise<Position[]> {
    if (this.#closed) return Promise.reject(new ClosedError());
    const problem = events.map((event) => idempotencyKeyProblem(event.idempotencyKey)).find(Boolean);
    if (problem) return Promise.reject(new ValidationError(problem));
    if (events.length === 0) return Promise.resolve([]);
    if (this.#downSince !== 0 && Date.now() - this.#downSince >= this.#maxRetryTimeMs) {
      return Promise.reject(this.#unreachable(`Redis has been unreachable for over ${this.#maxRetryTimeMs} ms`, false));
    }
    if (this.#queuedEvents + events.length > this.#maxQueuedEvents) {
      return Promise.reject(
        this.#unreachable(
          `${this.#queuedEvents} events already wait for Redis (maxQueuedEvents ${this.#maxQueuedEvents})`,
          false,
        ),
      );
    }
    return new Promise<Position[]>((resolve, reject) => {
      const batch: Batch = {
        events,
        resolve,
        reject,
        deadline: Date.now() + this.#maxRetryTimeMs,
        order: this.#created++,
        settled: false,
        unanswered: 0,
        ran: false,
        refusal: undefined,
        outcomes: undefined,
        pending: 0,
      };
      if (this.#canSend() && this.#queue.length === 0) this.#send(batch);
      else this.#enqueue(batch);
      this.#armTimer();
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const batch of this.#queue.splice(0)) {
      this.#settle(batch, new NetworkError('the Redis transport was closed', { maybeStored: false }));
    }
    this.#queuedEvents = 0;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    // Lanes still hold events of batches already accepted: let them go out (or time out) before quitting.
    if (this.#ownsClient && this.#cluster && this.#inFlight.size > 0) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    if (this.#timer) clearTimeout(this.#timer);
    for (const [event, listener] of this.#listeners) this.#client.off(event, listener);
    if (!this.#ownsClient) return;
    const client = this.#client;
    // A connect still under way may fail after this; without a listener ioredis prints it as unhandled.
    client.on('error', () => {});
    if (client.status === 'ready') {
      await client.quit().catch(() => client.disconnect());
    } else {
      client.disconnect();
    }
  }

  #listen(event: string, listener: (...args: unknown[]) => void): void {
    this.#client.on(event, listener);
    this.#listeners.push([event, listener]);
  }

  /** Ready, and the socket still takes writes (it may have closed without ioredis knowing yet). */
  #canSend(): boolean {
    if (this.#client.status !== 'ready') return false;
    const stream = (this.#client as { stream?: { writable?: boolean } }).stream;
    return this.#cluster || stream?.writable !== false;
  }

  #enqueue(batch: Batch): void {
    this.#queue.push(batch);
    this.#queuedEvents += batch.events.length;
    if (this.#queue.length > 1 && (this.#queue.at(-2) as Batch).order > batch.order) {
      this.#queue.sort((a, b) => a.order - b.order);
    }
  }

  #onReady(): void {
    this.#downSince = 0;
    this.#sendQueued();
  }

  /** Queued batches go out in order: publish order is the caller's order within a topic. */
  #sendQueued(): void {
    const queued = this.#queue.splice(0);
    this.#queuedEvents = 0;
    for (const batch of queued) if (!batch.settled) this.#send(batch);
  }

  #onClose(): void {
    if (this.#downSince === 0) this.#downSince = Date.now();
    // A client that does not re-send would leave these promises pending forever; one that does may still
    // store them, so their answer is left to it.
    if (!this.#failInFlightOnClose) return;
    for (const batch of this.#inFlight) {
      this.#settle(
        batch,
        this.#unreachable(
          'the connection to Redis was lost while the events were in flight; they may have been stored',
          true,
        ),
      );
    }
  }

  #send(batch: Batch): void {
    this.#inFlight.add(batch);
    if (this.#cluster) {
      this.#sendToLanes(batch);
      return;
    }
    batch.unanswered = batch.events.length;
    this.#execute(batch.events).then(
      (outcomes) => {
        batch.unanswered = 0;
        this.#settleOutcomes(batch, outcomes);
      },
      (error: unknown) => {
        batch.unanswered = 0;
        this.#settle(batch, this.#classify(error));
      },
    );
  }

  /** One server: the whole batch as one pipeline, one script call per event. */
  async #execute(events: readonly OutgoingEvent[]): Promise<Outcome[]> {
    const pipeline = (this.#client as Redis).pipeline() as unknown as WithScript<ChainableCommander>;
    for (const event of events) pipeline[COMMAND](...this.#scriptArgs(event));
    if (this.#minReplicas === 0) return ((await pipeline.exec()) ?? []) as Outcome[];
    // WAIT covers every write this connection made before it: the whole batch, in the same round trip.
    pipeline.wait(this.#minReplicas, this.#replicaTimeoutMs);
    const outcomes = ((await pipeline.exec()) ?? []) as Outcome[];
    const [waitError, acknowledged] = outcomes.pop() ?? [new Error('no reply to WAIT'), 0];
    if (waitError === null && Number(acknowledged) >= this.#minReplicas) return outcomes;
    const shortfall = new Error(
      waitError
        ? `WAIT failed: ${waitError.message}`
        : `stored on the primary, but only ${acknowledged} of ${this.#minReplicas} replicas confirmed it within ${this.#replicaTimeoutMs} ms`,
    );
    // Stored on the primary, not yet durable: the answer must be "maybe stored", never "failed, retry freely".
    return outcomes.map(([error, reply]): Outcome => (error ? [error, reply] : [shortfall, null]));
  }

  // -------------------------------------------------------------------------------------------------
  // Cluster lanes
  // -------------------------------------------------------------------------------------------------

  #sendToLanes(batch: Batch): void {
    batch.outcomes = new Array(batch.events.length);
    batch.pending = batch.events.length;
    const touched = new Set<Lane>();
    batch.events.forEach((event, index) => {
      let lane = this.#lanes.get(event.topic);
      if (!lane) {
        lane = { topic: event.topic, retry: [], retryHead: 0, waiting: [], head: 0, busy: false };
        this.#lanes.set(event.topic, lane);
      }
      lane.waiting.push({ batch, index });
      touched.add(lane);
    });
    for (const lane of touched) if (!lane.busy) this.#drainLane(lane);
  }

  /** Writes the lane's next pipeline, or retires the lane when nothing waits. */
  #drainLane(lane: Lane): void {
    const taken = this.#takeFromLane(lane);
    if (taken.length === 0) {
      // Nothing waits (what was skipped belonged to rejected batches).
      lane.busy = false;
      this.#lanes.delete(lane.topic);
      return;
    }
    lane.busy = true;
    for (const { batch } of taken) batch.unanswered++;
    const pipeline = (this.#client as Cluster).pipeline() as unknown as WithScript<ChainableCommander>;
    for (const { batch, index } of taken) pipeline[COMMAND](...this.#scriptArgs(batch.events[index] as OutgoingEvent));
    trackWrites(pipeline);
    pipeline.exec().then(
      (outcomes) => this.#onLaneReplies(lane, taken, unwrittenAsNotSent(pipeline, (outcomes ?? []) as Outcome[])),
      // ioredis rejects a cluster pipeline as a whole only before writing it.
      (error: unknown) => {
        const notSent = new NotSentError(error instanceof Error ? error.message : String(error), { cause: error });
        this.#onLaneReplies(
          lane,
          taken,
          taken.map((): Outcome => [notSent, null]),
        );
      },
    );
  }

  /**
   * The lane's next pipeline: waiting events of live batches, in order, up to MAX_LANE_PIPELINE_EVENTS.
   *
   * It ends before an event without idempotency key that follows one with a key. While a slot migrates,
   * a call whose keys are only partly on the node is refused with TRYAGAIN; an idempotency key is a key
   * the node does not have yet, so a keyed publish is refused while the next, unkeyed one (stream and
   * epoch still there) runs and would be stored first. Keyed calls after unkeyed ones are safe: once an
   * unkeyed call is refused, the keys it needs are gone and every later call is refused as well.
   */
  #takeFromLane(lane: Lane): LaneEvent[] {
    const taken: LaneEvent[] = [];
    const now = Date.now();
    let previousKeyed = false;
    while (taken.length < MAX_LANE_PIPELINE_EVENTS) {
      const fromRetry = lane.retryHead < lane.retry.length;
      const next = fromRetry ? lane.retry[lane.retryHead] : lane.waiting[lane.head];
      if (!next) break;
      // A settled batch was rejected: its events must not be stored after all. An expired one is about to be.
      const skip = next.batch.settled || next.batch.deadline <= now;
      const keyed = (next.batch.events[next.index] as OutgoingEvent).idempotencyKey !== undefined;
      if (!skip && taken.length > 0 && previousKeyed && !keyed) break;
      if (fromRetry) lane.retryHead++;
      else lane.head++;
      if (skip) continue;
      previousKeyed = keyed;
      taken.push(next);
    }
    if (lane.retryHead >= lane.retry.length) {
      lane.retry = [];
      lane.retryHead = 0;
    }
    if (lane.head >= lane.waiting.length) {
      lane.waiting = [];
      lane.head = 0;
    } else if (lane.head > LANE_COMPACT_AFTER) {
      lane.waiting = lane.waiting.slice(lane.head);
      lane.head = 0;
    }
    return taken;
  }

  #onLaneReplies(lane: Lane, taken: readonly LaneEvent[], outcomes: readonly Outcome[]): void {
    for (const { batch } of taken) batch.unanswered--;
    // Events Redis refused without running them are re-sent, ahead of everything else in the lane, when
    // they are the pipeline's tail: all before them ran, nothing after them did, so order still holds.
    // A refused event followed by one that ran (which the cut in #takeFromLane should rule out) is failed
    // instead: re-sending it would store it after a later event of its topic.
    const firstRefused = outcomes.findIndex(([error]) => error !== null && wasNotRun(error));
    const retryTail =
      firstRefused >= 0 && outcomes.slice(firstRefused).every(([error]) => error !== null && wasNotRun(error));
    const retry: LaneEvent[] = [];
    taken.forEach((event, position) => {
      const outcome: Outcome = outcomes[position] ?? [new Error('no reply from Redis'), null];
      if (retryTail && position >= firstRefused) {
        event.batch.refusal = outcome[0] ?? undefined;
        retry.push(event);
        return;
      }
      const [error] = outcome;
      if (error === null || (!wasNotRun(error) && !(error instanceof ReplyError))) event.batch.ran = true;
      this.#answer(event, outcome);
    });
    if (retry.length === 0) {
      this.#drainLane(lane);
      return;
    }
    // Ahead of everything else; earlier refused events not taken this time (past a cut) come right after.
    lane.retry = [...retry, ...lane.retry.slice(lane.retryHead)];
    lane.retryHead = 0;
    // The lane stays busy while it waits: nothing later of this topic may overtake the refused events.
    setTimeout(() => this.#drainLane(lane), REFUSAL_RETRY_DELAY_MS).unref();
  }

  /** Records an event's final answer; the batch settles once every event has one. */
  #answer({ batch, index }: LaneEvent, outcome: Outcome): void {
    if (batch.settled || !batch.outcomes) return;
    batch.outcomes[index] = outcome;
    if (--batch.pending === 0) this.#settleOutcomes(batch, batch.outcomes as Outcome[]);
  }

  // -------------------------------------------------------------------------------------------------
  // Answers
  // -------------------------------------------------------------------------------------------------

  /** numkeys, keys, then ARGV, as the publish script takes them (see lua.ts). */
  #scriptArgs(event: OutgoingEvent): [number, ...(string | number)[]] {
    const keys = topicKeys(this.#prefix, event.topic);
    const keyArgs: string[] = [keys.stream, keys.epoch];
    // Only pass the idempotency key when there is one: an empty key name would be CROSSSLOT on a cluster.
    if (event.idempotencyKey !== undefined)
      keyArgs.push(idempotencyKey(this.#prefix, event.topic, event.idempotencyKey));
    const args: [number, ...(string | number)[]] = [
      keyArgs.length,
      ...keyArgs,
      keys.channel,
      this.#maxLength,
      this.#maxAgeMs,
      event.event,
      event.data,
      this.#idempotencyTtlMs,
      String(PROTOCOL_VERSION),
    ];
    // PUBLISH needs no flag: a single server gets exactly the arguments it always got.
    if (this.#sharded || this.#topicIdleTtlMs > 0) args.push(this.#sharded ? SHARDED_PUBLISH_FLAG : '0');
    if (this.#topicIdleTtlMs > 0) args.push(this.#topicIdleTtlMs);
    return args;
  }

  #settleOutcomes(batch: Batch, outcomes: readonly Outcome[]): void {
    if (!this.#cluster && outcomes.length > 0 && outcomes.every(([error]) => error !== null && wasNotRun(error))) {
      // Nothing ran (ioredis refused to write to a closing socket, or a demoted primary said READONLY):
      // the batch can wait for the connection, or for the next attempt, in its place in the queue.
      this.#inFlight.delete(batch);
      batch.refusal = outcomes[0]?.[0] ?? undefined;
      this.#enqueue(batch);
      this.#armTimer();
      this.#retryLater();
      return;
    }
    const positions: Position[] = [];
    for (let index = 0; index < batch.events.length; index++) {
      const [error, reply] = outcomes[index] ?? [new Error('no reply from Redis'), null];
      const position = error ? undefined : toPosition(reply);
      if (!position) {
        const cause = error ?? new Error(`unexpected publish script reply: ${JSON.stringify(reply)}`);
        const stored = outcomes.filter(([e]) => !e).length;
        const note = batch.events.length > 1 ? ` (event ${index + 1} of ${batch.events.length}; ${stored} stored)` : '';
        // Events that ran, or whose answer does not say, make the whole batch possibly stored.
        const maybeStored = outcomes.some(([e]) => e === null || (!(e instanceof ReplyError) && !wasNotRun(e)));
        this.#settle(batch, this.#classify(cause, note, maybeStored));
        return;
      }
      positions.push(position);
    }
    this.#settle(batch, undefined, positions);
  }

  /** One server: a batch that was refused while the connection stays up goes again after a pause. */
  #retryLater(): void {
    if (this.#retryTimer || this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      // Otherwise the queue waits for 'ready'.
      if (this.#canSend()) this.#sendQueued();
    }, REFUSAL_RETRY_DELAY_MS);
    this.#retryTimer.unref();
  }

  #settle(batch: Batch, error: Error | undefined, positions?: Position[]): void {
    if (batch.settled) return;
    batch.settled = true;
    this.#inFlight.delete(batch);
    if (error) batch.reject(error);
    else batch.resolve(positions as Position[]);
    if (this.#inFlight.size === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /**
   * Redis error replies are the server's, except refusals (the command did not run: retrying can help);
   * anything else (closed connection, timeouts) is the network's, and may have been stored unless ioredis
   * never wrote it.
   */
  #classify(error: unknown, note = '', maybeStored?: boolean): Error {
    const message = error instanceof Error ? error.message : String(error);
    const notRun = error instanceof Error && wasNotRun(error);
    if (error instanceof ReplyError && !notRun) {
      const code = message.split(' ', 1)[0];
      return new ServerError(`Redis refused the publish: ${message}${note}`, { cause: error, code });
    }
    return this.#unreachable(`could not publish to Redis${note}: ${message}`, maybeStored ?? !notRun, error);
  }

  #unreachable(message: string, maybeStored: boolean, cause: unknown = this.#lastError): NetworkError {
    const detail = cause instanceof Error && !message.includes(cause.message) ? `: ${cause.message}` : '';
    return new NetworkError(`${message}${detail}`, { cause, maybeStored });
  }

  /** One timer for the whole queue and in-flight set: fires at the earliest deadline. */
  #armTimer(): void {
    if (this.#timer) return;
    const earliest = this.#earliestDeadline();
    if (earliest === undefined) return;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, earliest - Date.now()));
    this.#timer.unref();
  }

  #earliestDeadline(): number | undefined {
    let earliest: number | undefined;
    for (const batch of this.#queue) if (earliest === undefined || batch.deadline < earliest) earliest = batch.deadline;
    for (const batch of this.#inFlight)
      if (earliest === undefined || batch.deadline < earliest) earliest = batch.deadline;
    return earliest;
  }

  #expire(): void {
    this.#timer = undefined;
    const now = Date.now();
    const waiting = this.#queue.splice(0);
    this.#queuedEvents = 0;
    for (const batch of waiting) {
      if (batch.settled) continue;
      if (batch.deadline <= now) {
        this.#settle(batch, this.#timedOut(batch));
      } else {
        this.#queue.push(batch);
        this.#queuedEvents += batch.events.length;
      }
    }
    for (const batch of this.#inFlight) {
      if (batch.deadline <= now) this.#settle(batch, this.#timedOut(batch));
    }
    if (!this.#closed || this.#inFlight.size > 0) this.#armTimer();
  }

  /** The error of a batch whose deadline passed: written and unanswered, refused until now, or never sent. */
  #timedOut(batch: Batch): NetworkError {
    const limit = `${this.#maxRetryTimeMs} ms`;
    if (batch.ran || batch.unanswered > 0) {
      return this.#unreachable(`Redis did not answer within ${limit}; the events may have been stored`, true);
    }
    if (batch.refusal) {
      return this.#unreachable(`Redis refused the events until the deadline (${limit})`, false, batch.refusal);
    }
    return this.#unreachable(`Redis could not be reached within ${limit}`, false);
  }
}

/**
 * Answers that mean the command did not run, so sending it again cannot store it twice: ioredis refusing
 * to write (a closing socket, a cluster that is not ready), cluster redirects and refusals, and READONLY
 * (a demoted primary refuses a script at its first write, before it changed anything).
 */
function wasNotRun(error: Error): boolean {
  if (error instanceof NotSentError) return true;
  const message = error.message;
  return (
    NOT_RUN_REPLY.test(message) ||
    message.includes("Stream isn't writeable") ||
    message.includes("Cluster isn't ready and enableOfflineQueue options is false")
  );
}
/** Replies of a script refused before its first write (NOREPLICAS: a primary left without its replicas). */
const NOT_RUN_REPLY = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|READONLY|NOREPLICAS) /;

/**
 * ioredis answers "Connection is closed." both for commands in flight when a node connection dropped (they
 * may have run) and for commands it never wrote: the node connection had already ended (a dead primary, until
 * the slot map names its successor) or was dropped before it connected. Only whether it wrote the command in
 * its latest attempt tells the two apart (an earlier attempt may have been answered MOVED, which means it did
 * not run), so each command of a cluster pipeline records that: ioredis calls the command's `toWritable` to
 * write it, and the pipeline's `exec` again for every attempt after a redirect. Without those methods
 * (another ioredis version) nothing is recorded and every such answer keeps the cautious reading: it may
 * have run.
 */
function trackWrites(pipeline: ChainableCommander): void {
  const commands = pipelineCommands(pipeline);
  const exec = (pipeline as unknown as { exec?: unknown }).exec;
  if (!commands || typeof exec !== 'function' || commands.some((c) => typeof c.toWritable !== 'function')) return;
  for (const command of commands) {
    const toWritable = command.toWritable as (...args: unknown[]) => unknown;
    command.toWritable = function (this: TrackedCommand, ...args: unknown[]) {
      this[WRITTEN] = true;
      return toWritable.apply(this, args);
    };
  }
  (pipeline as unknown as { exec: unknown }).exec = function (this: ChainableCommander, ...args: unknown[]) {
    for (const command of pipelineCommands(this) ?? []) command[WRITTEN] = false;
    return exec.apply(this, args);
  };
}

function unwrittenAsNotSent(pipeline: ChainableCommander, outcomes: Outcome[]): Outcome[] {
  // ASKING commands ioredis adds on an ASK redirect are left out of the replies.
  const commands = pipelineCommands(pipeline)?.filter((command) => !command.ignore);
  if (!commands || commands.length !== outcomes.length) return outcomes;
  return outcomes.map((outcome, index) => {
    const [error] = outcome;
    if (error?.message !== CONNECTION_CLOSED || commands[index]?.[WRITTEN] !== false) return outcome;
    return [new NotSentError(`${CONNECTION_CLOSED} (never written)`, { cause: error }), null];
  });
}

const WRITTEN = Symbol('written in the latest attempt');
interface TrackedCommand {
  toWritable?: unknown;
  ignore?: unknown;
  [WRITTEN]?: boolean;
}

/** ioredis' Pipeline keeps its commands in `_queue`. */
function pipelineCommands(pipeline: ChainableCommander): TrackedCommand[] | undefined {
  const queue = (pipeline as unknown as { _queue?: unknown })._queue;
  return Array.isArray(queue) ? (queue as TrackedCommand[]) : undefined;
}
/** ioredis' CONNECTION_CLOSED_ERROR_MSG. */
const CONNECTION_CLOSED = 'Connection is closed.';

/** Whether ioredis re-sends commands in flight when the connection drops. */
function clientResends(client: Redis): boolean {
  const options = (client as { options?: { autoResendUnfulfilledCommands?: boolean } }).options;
  return options?.autoResendUnfulfilledCommands !== false;
}

function wholeNumber(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min)
    throw new ValidationError(`${name} must be a whole number >= ${min}`);
  return value;
}

function idempotencyKeyProblem(key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (typeof key !== 'string' || key.length === 0) return 'idempotencyKey must be a non-empty string';
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH)
    return `idempotencyKey is longer than ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`;
  return undefined;
}

/** The script answers `{ epoch, 'ms-seq' }`; undefined for anything else. */
function toPosition(reply: unknown): Position | undefined {
  if (!Array.isArray(reply)) return undefined;
  const [epoch, id] = reply as unknown[];
  const streamId = typeof id === 'string' ? parseStreamId(id) : undefined;
  if (typeof epoch !== 'string' || !streamId) return undefined;
  return { epoch, ms: streamId.ms, seq: streamId.seq };
}
