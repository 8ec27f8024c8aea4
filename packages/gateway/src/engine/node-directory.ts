/**
 * The cluster view: which gateway nodes are alive and how many consumers each holds per topic. A duty
 * beside the event store, like single-use claims: the Redis engine keeps it in Redis (every node sees
 * every node), the embedded engine in this process (one node). Nodes report on a timer; a node that stops
 * reporting leaves the view once its report expires.
 */

/** What a node says about itself at every report. */
export interface NodeInfo {
  readonly id: string;
  /** Public URL of the node (what clients connect to, when reached directly). */
  readonly url: string;
  /** URL of its admin listener, when it has one. */
  readonly adminUrl: string | undefined;
  readonly pid: number;
  /** Epoch ms. */
  readonly startedAt: number;
  /** Epoch ms of this report. */
  readonly reportedAt: number;
  readonly draining: boolean;
  readonly engineReady: boolean;
  readonly connections: number;
  readonly topics: number;
  /** Monotonic counts since the node started (rates are computed by readers from two reports). */
  readonly eventsDelivered: number;
  /** Publications received from the engine for topics with consumers here (the fan-out input). */
  readonly eventsReceived: number;
  /** Events stored through this node's HTTP API (publishes straight to Redis are not seen here). */
  readonly eventsPublished: number;
  /** The node's busiest topics, most consumers first (at most TOP_TOPICS). */
  readonly topTopics: ReadonlyArray<readonly [topic: string, consumers: number]>;
}

/** How many of its busiest topics each node reports. */
export const TOP_TOPICS = 20;

/** One node's report: its info and its per-topic consumer counts (all of them, not only the top). */
export interface NodeReport {
  readonly info: NodeInfo;
  readonly consumers: ReadonlyMap<string, number>;
}

export interface NodeDirectory {
  /** Stores this node's report; it expires after `ttlMs` unless reported again. */
  report(report: NodeReport, ttlMs: number): Promise<void>;
  /** Removes this node at once (a clean shutdown). */
  remove(nodeId: string): Promise<void>;
  /** Every node whose report has not expired, sorted by id. */
  nodes(): Promise<NodeInfo[]>;
  /** Consumers of each topic per live node (nodes without any are left out). */
  consumers(topics: readonly string[]): Promise<Record<string, Record<string, number>>>;
}

/** The embedded engine's directory: this process is the whole cluster. */
export class MemoryNodeDirectory implements NodeDirectory {
  readonly #reports = new Map<string, { report: NodeReport; expiresAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async report(report: NodeReport, ttlMs: number): Promise<void> {
    this.#reports.set(report.info.id, { report, expiresAt: this.now() + ttlMs });
  }

  async remove(nodeId: string): Promise<void> {
    this.#reports.delete(nodeId);
  }

  async nodes(): Promise<NodeInfo[]> {
    return this.#live()
      .map((report) => report.info)
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  async consumers(topics: readonly string[]): Promise<Record<string, Record<string, number>>> {
    const result: Record<string, Record<string, number>> = {};
    for (const topic of topics) {
      const perNode: Record<string, number> = {};
      for (const report of this.#live()) {
        const count = report.consumers.get(topic) ?? 0;
        if (count > 0) perNode[report.info.id] = count;
      }
      result[topic] = perNode;
    }
    return result;
  }

  #live(): NodeReport[] {
    const now = this.now();
    const live: NodeReport[] = [];
    for (const [id, entry] of this.#reports) {
      if (entry.expiresAt <= now) this.#reports.delete(id);
      else live.push(entry.report);
    }
    return live;
  }
}
