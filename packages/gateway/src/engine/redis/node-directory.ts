/**
 * The cluster view in Redis (layout in docs/wire-format.md, "Node directory"):
 *   <prefix>gw:nodes                  ZSET   node id -> when its report expires (the list to look in)
 *   <prefix>gw:node:{<id>}:info       STRING the node's NodeInfo as JSON, with a TTL (alive while it exists)
 *   <prefix>gw:node:{<id>}:consumers  HASH   topic -> consumers on that node, with the same TTL
 * A report sends only the counts that changed since the previous one, so 100k quiet topics cost nothing
 * per report; when the hash turns out to be gone (expired while Redis was away, flushed) the next report
 * rewrites it whole. The two per-node keys share a hash tag: one slot, one MULTI, on a Cluster too.
 */
import type { Cluster, Redis } from 'ioredis';
import type { NodeDirectory, NodeInfo, NodeReport } from '../node-directory.js';

/** Fields per HSET / HMGET command, so a node with 100k topics never sends one giant command. */
const FIELDS_PER_COMMAND = 1000;
/** Members of the node list whose report expired this long ago are removed from it. */
const FORGET_AFTER_MS = 60_000;

export class RedisNodeDirectory implements NodeDirectory {
  readonly #redis: Redis | Cluster;
  readonly #prefix: string;
  /** The counts Redis holds for this node, as of the last successful report. */
  #sent = new Map<string, number>();
  #rewrite = true;

  constructor(redis: Redis | Cluster, prefix: string) {
    this.#redis = redis;
    this.#prefix = prefix;
  }

  async report(report: NodeReport, ttlMs: number): Promise<void> {
    const { info, consumers } = report;
    const keys = this.#keysOf(info.id);
    // First: whether the hash is still there (a diff applied to a lost hash would leave it partial).
    const transaction = this.#redis.multi().exists(keys.consumers);
    const changed: Array<string | number> = [];
    const gone: string[] = [];
    if (this.#rewrite) {
      transaction.del(keys.consumers);
      for (const [topic, count] of consumers) changed.push(topic, count);
    } else {
      for (const [topic, count] of consumers) if (this.#sent.get(topic) !== count) changed.push(topic, count);
      for (const topic of this.#sent.keys()) if (!consumers.has(topic)) gone.push(topic);
    }
    for (let at = 0; at < changed.length; at += 2 * FIELDS_PER_COMMAND) {
      transaction.hset(keys.consumers, ...(changed.slice(at, at + 2 * FIELDS_PER_COMMAND) as [string, number]));
    }
    for (let at = 0; at < gone.length; at += FIELDS_PER_COMMAND) {
      transaction.hdel(keys.consumers, ...gone.slice(at, at + FIELDS_PER_COMMAND));
    }
    transaction.pexpire(keys.consumers, ttlMs);
    transaction.set(keys.info, JSON.stringify(info), 'PX', ttlMs);
    const wasRewrite = this.#rewrite;
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await transaction.exec();
    } catch (error) {
      this.#rewrite = true;
      throw error;
    }
    if (!replies || replies.some(([error]) => error)) {
      this.#rewrite = true;
      throw replies?.find(([error]) => error)?.[0] ?? new Error('the node report transaction was discarded');
    }
    // No hash is expected while this node had no consumers; with some, it was lost: write it whole next time.
    if (!wasRewrite && replies[0]?.[1] === 0 && this.#sent.size > 0) {
      this.#rewrite = true;
      return this.report(report, ttlMs);
    }
    this.#rewrite = false;
    this.#sent = new Map(consumers);
    const now = Date.now();
    await this.#redis.zadd(this.#listKey(), now + ttlMs, info.id);
    await this.#redis.zremrangebyscore(this.#listKey(), '-inf', now - FORGET_AFTER_MS);
  }

  async remove(nodeId: string): Promise<void> {
    const keys = this.#keysOf(nodeId);
    await this.#redis.del(keys.info, keys.consumers);
    await this.#redis.zrem(this.#listKey(), nodeId);
    this.#sent = new Map();
    this.#rewrite = true;
  }

  async nodes(): Promise<NodeInfo[]> {
    const ids = await this.#redis.zrange(this.#listKey(), '0', '-1');
    const infos = await Promise.all(ids.map((id) => this.#redis.get(this.#keysOf(id).info)));
    return infos
      .filter((text): text is string => text !== null)
      .map((text) => JSON.parse(text) as NodeInfo)
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  async consumers(topics: readonly string[]): Promise<Record<string, Record<string, number>>> {
    const result: Record<string, Record<string, number>> = Object.fromEntries(topics.map((topic) => [topic, {}]));
    if (topics.length === 0) return result;
    const nodes = await this.nodes();
    await Promise.all(
      nodes.map(async ({ id }) => {
        const key = this.#keysOf(id).consumers;
        for (let at = 0; at < topics.length; at += FIELDS_PER_COMMAND) {
          const slice = topics.slice(at, at + FIELDS_PER_COMMAND);
          const counts = await this.#redis.hmget(key, ...slice);
          slice.forEach((topic, index) => {
            const count = Number(counts[index] ?? 0);
            if (count > 0) (result[topic] as Record<string, number>)[id] = count;
          });
        }
      }),
    );
    return result;
  }

  #listKey(): string {
    return `${this.#prefix}gw:nodes`;
  }

  #keysOf(nodeId: string) {
    const base = `${this.#prefix}gw:node:{${nodeId}}`;
    return { info: `${base}:info`, consumers: `${base}:consumers` };
  }
}
