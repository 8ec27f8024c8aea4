/**
 * Sharded pub/sub on Redis Cluster: one subscriber connection per primary, each channel SSUBSCRIBEd at the
 * primary that owns its slot. This module owns those subscriptions instead of leaving them to ioredis, so
 * the engine learns exactly when a subscription was lost (the connection dropped, or the slot moved and
 * the server sent an unsolicited SUNSUBSCRIBE) and when it is confirmed again at the new owner: only then
 * may a refill from the stream start without missing what was published in between.
 */
import { type Cluster, Command, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { HealthOptions } from './connections.js';
import { PingMonitor } from './ping-monitor.js';
import { type Batch, type SubscriptionRequest as Request, SubscriptionBatch } from './subscription-batch.js';
import type { SubscriptionEvents, Subscriptions } from './subscriptions.js';

/** One primary's subscriber connection and the channels it holds. */
interface Shard {
  readonly address: string;
  readonly client: Redis;
  readonly monitor: PingMonitor;
  readonly held: Set<string>;
  wasReady: boolean;
  /** Re-reads the slot map while the shard is down and still holds channels (see #watchWhileDown). */
  downWatch: NodeJS.Timeout | undefined;
}

/**
 * A SSUBSCRIBE answered MOVED (stale slot map) or found its slot unserved (a failover in progress): re-read
 * the slot map and try again, this many times (about a minute with the backoff below).
 */
const MAX_SUBSCRIBE_ATTEMPTS = 30;
const MAX_RESUBSCRIBE_BACKOFF_MS = 2000;
const DISCONNECT_TIMEOUT_MS = 100;
/** Pause before each further SSUBSCRIBE attempt, times the attempt: a failover takes seconds to settle. */
const RESUBSCRIBE_BACKOFF_MS = 250;
/**
 * While a shard holding channels is disconnected, the slot map is re-read this often, so its channels follow
 * a promoted replica within a fraction of a second instead of at the cluster client's next periodic refresh
 * (a node that publishes nothing itself learns of a failover no other way).
 */
const DOWN_SLOT_REFRESH_MS = 500;

export class ShardedSubscriptions implements Subscriptions {
  readonly #cluster: Cluster;
  readonly #events: SubscriptionEvents;
  readonly #log: Logger;
  readonly #health: HealthOptions;
  readonly #shards = new Map<string, Shard>();
  /** Channel -> the shard holding it. */
  readonly #owner = new Map<string, Shard>();
  readonly #batch = new SubscriptionBatch((batch) => this.#flush(batch));
  #closed = false;

  constructor(cluster: Cluster, health: HealthOptions, events: SubscriptionEvents, log: Logger) {
    this.#cluster = cluster;
    this.#health = health;
    this.#events = events;
    this.#log = log;
    // A resharding or failover the cluster client learned of: channels whose slot moved follow it.
    cluster.on('refresh', () => this.#followSlotMap());
    // Connected before the first stream needs them, so a first subscription does not wait for a handshake.
    cluster.on('ready', () => {
      for (const slot of Object.values(this.#cluster.slots)) {
        const address = slot?.[0];
        if (address && !this.#shards.has(address) && !this.#closed) this.#openShard(address);
      }
    });
  }

  request(channel: string): Promise<void> {
    return this.#batch.request(channel);
  }

  release(channel: string): void {
    if (!this.#closed) this.#batch.release(channel);
  }

  /**
   * No primary stopped answering, and no shard holding channels lost its connection. Every primary gets a
   * shard subscriber at cluster ready, so a frozen one is noticed by its PING deadline even while it holds
   * no channel (a publish to it would hang; see ownerUnresponsive). A shard still connecting for the first
   * time does not count: its subscriptions simply wait, and the node stays ready meanwhile.
   */
  isReady(): boolean {
    for (const shard of this.#shards.values()) {
      if (!shard.wasReady) continue;
      if (!shard.monitor.responsive) return false;
      if (shard.held.size > 0 && shard.client.status !== 'ready') return false;
    }
    return true;
  }

  /** Whether the primary owning `channel`'s slot (and its topic's keys) has stopped answering PINGs. */
  ownerUnresponsive(channel: string): boolean {
    const address = this.#cluster.slots[slotOf(channel)]?.[0];
    const shard = address === undefined ? undefined : this.#shards.get(address);
    return shard?.wasReady === true && !shard.monitor.responsive;
  }

  close(): void {
    this.#closed = true;
    this.#batch.close();
    for (const shard of this.#shards.values()) this.#dropShard(shard);
  }

  #flush(batch: Batch): void {
    for (const channel of batch.release) {
      const shard = this.#owner.get(channel);
      if (!shard?.held.delete(channel)) continue;
      this.#owner.delete(channel);
      shard.client.sunsubscribe(channel).catch((error: unknown) => {
        this.#log.debug({ err: error }, 'SUNSUBSCRIBE failed');
      });
    }
    if (batch.subscribe.size > 0) void this.#subscribe(batch.subscribe, 1);
  }

  /**
   * SSUBSCRIBEs each channel at the owner of its slot and answers the requests. One command per slot (Redis
   * refuses a SSUBSCRIBE spanning slots), written back to back on each shard's connection.
   */
  async #subscribe(channels: Map<string, Request[]>, attempt: number): Promise<void> {
    const bySlot = new Map<string, { shard: Shard; list: string[] }>();
    const retry = new Map<string, Request[]>();
    for (const [channel, requests] of channels) {
      const slot = slotOf(channel);
      const shard = this.#shardFor(slot);
      if (!shard) {
        retry.set(channel, requests);
        continue;
      }
      const previous = this.#owner.get(channel);
      if (previous && previous !== shard) previous.held.delete(channel);
      shard.held.add(channel);
      this.#owner.set(channel, shard);
      const key = `${shard.address}/${slot}`;
      const group = bySlot.get(key);
      if (group) group.list.push(channel);
      else bySlot.set(key, { shard, list: [channel] });
    }
    await Promise.all(
      [...bySlot.values()].map(async ({ shard, list }) => {
        try {
          await shard.client.ssubscribe(...list);
          for (const channel of list) for (const request of channels.get(channel) ?? []) request.resolve();
        } catch (error) {
          if (this.#closed) return;
          for (const channel of list) {
            if (this.#owner.get(channel) === shard) {
              shard.held.delete(channel);
              this.#owner.delete(channel);
            }
            retry.set(channel, channels.get(channel) ?? []);
          }
          this.#log.debug({ err: error, shard: shard.address, channels: list.length }, 'SSUBSCRIBE failed');
          if (attempt >= MAX_SUBSCRIBE_ATTEMPTS) this.#events.error(error);
        }
      }),
    );
    this.#pruneShards();
    if (retry.size === 0 || this.#closed) return;
    if (attempt >= MAX_SUBSCRIBE_ATTEMPTS) {
      const error = new Error(`could not SSUBSCRIBE ${retry.size} channel(s) at the owner of their slot`);
      for (const requests of retry.values()) for (const request of requests) request.reject(error);
      return;
    }
    // The slot map was stale (MOVED) or the slot unserved for now (failover): re-read it, then try again.
    await this.#refreshSlots();
    const backoffMs = Math.min(RESUBSCRIBE_BACKOFF_MS * attempt, MAX_RESUBSCRIBE_BACKOFF_MS);
    if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, backoffMs));
    await this.#subscribe(retry, attempt + 1);
  }

  /** The primary serving `slot`, with its subscriber connection; undefined while the slot is unserved. */
  #shardFor(slot: number): Shard | undefined {
    const address = this.#cluster.slots[slot]?.[0];
    if (!address) return undefined;
    return this.#shards.get(address) ?? this.#openShard(address);
  }

  #openShard(address: string): Shard {
    const node = this.#cluster.nodes('master').find((candidate) => nodeAddress(candidate) === address);
    const [host, port] = splitAddress(address);
    const options = node?.options ?? {};
    const client = new Redis({
      host,
      port,
      username: options.username,
      password: options.password,
      tls: options.tls,
      protocol: 2,
      connectionName: 'sse-gateway:shard-subscriber',
      disconnectTimeout: DISCONNECT_TIMEOUT_MS,
      autoResubscribe: false,
      maxRetriesPerRequest: 5,
      // A primary that is gone for good (failed over) is dropped once its channels have moved elsewhere.
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000) + Math.random() * 50,
    });
    const monitor = new PingMonitor(client, {
      intervalMs: this.#health.pingIntervalMs,
      deadlineMs: this.#health.pingDeadlineMs,
      onUnresponsive: (waitedMs) => {
        this.#events.error(new Error('shard subscriber stopped answering'));
        this.#log.warn({ shard: address, waitedMs }, 'a shard stopped answering; reconnecting its subscriber');
      },
    });
    const shard: Shard = { address, client, monitor, held: new Set(), wasReady: false, downWatch: undefined };
    this.#shards.set(address, shard);
    client.on('smessage', (channel: string, text: string) => {
      if (shard.held.has(channel)) this.#events.message(channel, text);
    });
    client.on('error', () => {
      // Counted and logged by the engine's connection watch once per episode; a shard retries by itself.
    });
    client.on('ready', () => this.#onShardReady(shard));
    client.on('close', () => this.#watchWhileDown(shard));
    // The server dropped a channel whose slot moved away (unsolicited SUNSUBSCRIBE; ioredis does not say
    // which): every channel of the shard is subscribed again where its slot now lives, and refilled.
    client.on('moved', () => {
      this.#log.info({ shard: address }, 'a slot moved away from a shard; following it');
      if (shard.held.size > 0) this.#relocate([...shard.held]);
    });
    return shard;
  }

  /** After a reconnect, the shard's channels must be subscribed again: they were lost meanwhile. */
  #onShardReady(shard: Shard): void {
    if (!shard.wasReady) {
      shard.wasReady = true;
      return;
    }
    const channels = [...shard.held];
    if (channels.length === 0) return;
    this.#log.info({ shard: shard.address, channels: channels.length }, 'shard subscriber reconnected; resubscribing');
    this.#relocate(channels);
  }

  /** Moves every held channel whose slot is now served by another primary. */
  #followSlotMap(): void {
    const moved: string[] = [];
    for (const [channel, shard] of this.#owner) {
      if (this.#cluster.slots[slotOf(channel)]?.[0] !== shard.address) moved.push(channel);
    }
    if (moved.length === 0) return;
    this.#log.info({ channels: moved.length }, 'slots changed owner; channels follow them');
    this.#relocate(moved);
  }

  /** Subscribes `channels` again at their current owners and tells the engine they were lost until then. */
  #relocate(channels: string[]): void {
    const requests = new Map<string, Request[]>();
    const restored = Promise.all(
      channels.map(
        (channel) =>
          new Promise<void>((resolve, reject) => {
            requests.set(channel, [{ resolve, reject }]);
          }),
      ),
    );
    restored.catch((error: unknown) => this.#log.warn({ err: error }, 'resubscribe at the new owner failed'));
    this.#events.lost(channels, restored);
    void this.#subscribe(requests, 1);
  }

  /** A shard left with no channels whose node serves no slot any more (failed over, emptied) is disconnected. */
  #pruneShards(): void {
    const owners = new Set(Object.values(this.#cluster.slots).map((slot) => slot?.[0]));
    for (const [address, shard] of this.#shards) {
      if (shard.held.size > 0 || owners.has(address)) continue;
      this.#dropShard(shard);
    }
  }

  #dropShard(shard: Shard): void {
    clearTimeout(shard.downWatch);
    shard.downWatch = undefined;
    shard.monitor.stop();
    shard.client.disconnect();
    this.#shards.delete(shard.address);
  }

  /**
   * A shard's connection closed: if its primary died, a replica takes its slots once the cluster agrees
   * (cluster-node-timeout). Until the shard reconnects or its channels have moved, the slot map is re-read
   * every DOWN_SLOT_REFRESH_MS; each refresh lets #followSlotMap move channels whose slot has a new owner.
   */
  #watchWhileDown(shard: Shard): void {
    if (shard.downWatch || this.#closed) return;
    const tick = () => {
      shard.downWatch = undefined;
      if (this.#closed || this.#shards.get(shard.address) !== shard) return;
      if (shard.client.status === 'ready' || shard.held.size === 0) return;
      this.#cluster.refreshSlotsCache();
      shard.downWatch = setTimeout(tick, DOWN_SLOT_REFRESH_MS);
      shard.downWatch.unref();
    };
    shard.downWatch = setTimeout(tick, DOWN_SLOT_REFRESH_MS);
    shard.downWatch.unref();
  }

  #refreshSlots(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#cluster.refreshSlotsCache(() => resolve());
    });
  }
}

/** The cluster slot of a channel (its `{topic}` hash tag), as Redis computes it. */
function slotOf(channel: string): number {
  return new Command('ssubscribe', [channel]).getSlot() ?? 0;
}

function nodeAddress(node: Redis): string {
  return `${node.options.host}:${node.options.port}`;
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}
