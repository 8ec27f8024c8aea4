/**
 * Keeps this node in the cluster view: reports its counts every NODE_REPORT_MS (so a node that dies
 * leaves the view within REPORT_TTL_FACTOR reports), once more when it starts draining, and removes
 * itself when it stops. A failed report is logged and retried at the next tick; it never affects streams.
 */
import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.js';
import { type NodeDirectory, type NodeInfo, TOP_TOPICS } from '../engine/node-directory.js';
import type { Hub } from '../hub/hub.js';
import type { GatewayMetrics } from '../metrics.js';

/** A report lives this many report intervals: one or two missed reports do not drop a node. */
export const REPORT_TTL_FACTOR = 3;

export interface NodeReporterDeps {
  readonly directory: NodeDirectory;
  readonly hub: Hub;
  readonly engine: Engine;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly nodeId: string;
  readonly intervalMs: number;
  /** The node's public and admin URLs (filled in once its listeners are bound). */
  readonly urls: { readonly url: string; readonly adminUrl: string | undefined };
}

export class NodeReporter {
  readonly #deps: NodeReporterDeps;
  readonly #log: Logger;
  readonly #startedAt = Date.now();
  #timer: NodeJS.Timeout | undefined;
  /** The report in flight: reports never overlap (the directory sends differences between them). */
  #inFlight: Promise<void> = Promise.resolve();
  #failing = false;
  #stopped = false;

  constructor(deps: NodeReporterDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ mod: 'node-reporter' });
  }

  start(): void {
    void this.reportNow();
    this.#timer = setInterval(() => void this.reportNow(), this.#deps.intervalMs);
    this.#timer.unref();
  }

  /** What this node would report now (also what the admin API shows for "this node"). */
  async info(): Promise<NodeInfo> {
    const { hub, engine, metrics } = this.#deps;
    const counts = hub.consumerCounts();
    const published = (await metrics.eventsPublished.get()).values[0]?.value ?? 0;
    return {
      id: this.#deps.nodeId,
      url: this.#deps.urls.url,
      adminUrl: this.#deps.urls.adminUrl,
      pid: process.pid,
      startedAt: this.#startedAt,
      reportedAt: Date.now(),
      draining: hub.draining,
      engineReady: engine.isReady(),
      connections: hub.connectionCount,
      topics: counts.size,
      eventsDelivered: hub.eventsDelivered,
      eventsReceived: hub.eventsReceived,
      eventsPublished: published,
      topTopics: busiest(counts, TOP_TOPICS),
    };
  }

  /** Sends a report now (after the one in flight, if any). */
  reportNow(): Promise<void> {
    this.#inFlight = this.#inFlight.then(() => this.#report());
    return this.#inFlight;
  }

  /** Stops reporting and leaves the view at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#inFlight;
    await this.#deps.directory.remove(this.#deps.nodeId).catch((error: unknown) => {
      this.#log.warn({ err: error }, 'could not leave the cluster view; it expires by itself');
    });
  }

  async #report(): Promise<void> {
    if (this.#stopped) return;
    try {
      const info = await this.info();
      await this.#deps.directory.report(
        { info, consumers: this.#deps.hub.consumerCounts() },
        this.#deps.intervalMs * REPORT_TTL_FACTOR,
      );
      if (this.#failing) this.#log.info('reporting to the cluster view again');
      this.#failing = false;
    } catch (error) {
      // Once per outage, not once per tick.
      if (!this.#failing) this.#log.warn({ err: error }, 'could not report to the cluster view; retrying');
      this.#failing = true;
    }
  }
}

/** The `limit` entries with the most consumers, most first; one pass, no sort of 100k topics. */
export function busiest(counts: ReadonlyMap<string, number>, limit: number): Array<[string, number]> {
  const top: Array<[string, number]> = [];
  for (const [topic, count] of counts) {
    if (top.length === limit && count <= (top[limit - 1] as [string, number])[1]) continue;
    let at = top.length;
    while (at > 0 && (top[at - 1] as [string, number])[1] < count) at--;
    top.splice(at, 0, [topic, count]);
    if (top.length > limit) top.pop();
  }
  return top;
}
