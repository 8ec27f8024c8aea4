/**
 * The answer of GET /stats and each frame of the dashboard's stream: this node's live figures, and the
 * cluster view (every live node's last report). Cluster figures lag by up to one report interval.
 */
import type { Counter } from 'prom-client';
import type { NodeDirectory, NodeInfo } from '../engine/node-directory.js';
import type { Hub } from '../hub/hub.js';
import type { GatewayMetrics } from '../metrics.js';
import { busiest, type NodeReporter } from './node-reporter.js';

/** How many of the cluster's busiest topics the stats list. */
const BUSIEST_TOPICS = 10;

export interface StatsDeps {
  readonly hub: Hub;
  readonly reporter: NodeReporter;
  readonly directory: NodeDirectory;
}

/** A node as /stats shows it: its report, with times made readable and its top list left out. */
export type NodeView = Omit<NodeInfo, 'startedAt' | 'reportedAt' | 'topTopics'> & {
  readonly uptimeS: number;
  /** When the node last reported (ISO time) and how old that report is. */
  readonly reportedAt: string;
  readonly reportAgeMs: number;
};

export async function stats(deps: StatsDeps, topics: readonly string[]) {
  const { hub } = deps;
  const node = {
    node: (await deps.reporter.info()).id,
    connections: hub.connectionCount,
    topics: hub.topicCount,
    consumers: Object.fromEntries(topics.map((topic) => [topic, hub.consumers(topic)])),
  };
  return { ...node, cluster: await clusterStats(deps.directory, topics) };
}

async function clusterStats(directory: NodeDirectory, topics: readonly string[]) {
  let nodes: NodeInfo[];
  let perTopic: Record<string, Record<string, number>>;
  try {
    [nodes, perTopic] = await Promise.all([directory.nodes(), directory.consumers(topics)]);
  } catch (error) {
    return { error: `the cluster view is unavailable: ${(error as Error).message}` };
  }
  const now = Date.now();
  const merged = new Map<string, number>();
  for (const info of nodes) {
    for (const [topic, count] of info.topTopics) merged.set(topic, (merged.get(topic) ?? 0) + count);
  }
  return {
    nodes: nodes.map((info) => nodeView(info, now)),
    connections: nodes.reduce((sum, info) => sum + info.connections, 0),
    consumers: Object.fromEntries(
      Object.entries(perTopic).map(([topic, byNode]) => [
        topic,
        { total: Object.values(byNode).reduce((sum, count) => sum + count, 0), nodes: byNode },
      ]),
    ),
    // From each node's own top list: exact for topics busy everywhere, a lower bound for the others.
    busiestTopics: busiest(merged, BUSIEST_TOPICS).map(([topic, consumers]) => ({ topic, consumers })),
  };
}

function nodeView(info: NodeInfo, now: number): NodeView {
  const { startedAt, reportedAt, topTopics: _top, ...rest } = info;
  return {
    ...rest,
    uptimeS: Math.round((now - startedAt) / 1000),
    reportedAt: new Date(reportedAt).toISOString(),
    reportAgeMs: Math.max(0, now - reportedAt),
  };
}

/** This node's counters by label, for the dashboard (disconnect reasons, resets, replays, rejections). */
export async function nodeCounters(metrics: GatewayMetrics) {
  return {
    disconnects: await byLabel(metrics.disconnects, 'reason'),
    resets: await byLabel(metrics.resets, 'reason'),
    rejected: await byLabel(metrics.rejectedRequests, 'code'),
    replays: await total(metrics.replays),
    replayedEvents: await total(metrics.replayedEvents),
    writeTimeouts: await total(metrics.writeTimeouts),
  };
}

async function byLabel<L extends string>(counter: Counter<L>, label: L): Promise<Record<string, number>> {
  const values = (await counter.get()).values;
  return Object.fromEntries(values.map((value) => [String(value.labels[label] ?? ''), value.value]));
}

async function total(counter: Counter): Promise<number> {
  return (await counter.get()).values.reduce((sum, value) => sum + value.value, 0);
}
