/**
 * The cluster view and cluster-wide admin actions on `pnpm cluster`'s topology: real HAProxy, real
 * redis-server, three gateway processes. `eventsource` clients join and leave through the balancer; the
 * counts every node's /stats reports converge to what is really open, within the documented time, also
 * after a kill -9 of one node (it leaves the view once its report expires: 3 report intervals). An admin
 * action sent to one node acts on every node and is logged once, with who asked.
 */
import { existsSync } from 'node:fs';
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const haveHaproxy = existsSync(haproxy);
if (!haveHaproxy) {
  console.warn('cluster view e2e skipped: haproxy is not installed (apt-get install haproxy; .ci/run installs it)');
}

const REPORT_MS = 300;
/** A dead node's report expires after 3 intervals; the rest is slack for a busy 2-core CI machine. */
const CONVERGE_MS = 3 * REPORT_MS + 10_000;
const PREFIX = `cluster-view-e2e:${process.pid}:`;
const ADMIN_TOKEN = 'cluster-view-admin-token-0123456789';

interface Client {
  readonly topic: string;
  readonly source: EventSource;
  closedByOperator: boolean;
}

interface ClusterStats {
  readonly node: string;
  readonly cluster: {
    readonly nodes: ReadonlyArray<{ readonly id: string; readonly connections: number; readonly draining: boolean }>;
    readonly connections: number;
    readonly consumers: Record<string, { readonly total: number; readonly nodes: Record<string, number> }>;
  };
}

describe.skipIf(!haveHaproxy)('cluster view: haproxy + 3 gateways + redis', () => {
  let cluster: LocalCluster;
  const clients: Client[] = [];

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 3,
      haproxyPath: haproxy,
      env: {
        LOG_LEVEL: 'info',
        NODE_REPORT_MS: String(REPORT_MS),
        // Behind a proxy a departed client is noticed at the next heartbeat.
        HEARTBEAT_MS: '500',
        RETRY_MS: '300',
        RETRY_JITTER: '0.5',
        DRAIN_MS: '0',
        ADMIN_TOKEN,
        REDIS_PREFIX: PREFIX,
      },
    });
  }, 120_000);

  afterAll(async () => {
    for (const client of clients) client.source.close();
    await cluster?.stop();
  });

  const open = (topic: string): Client => {
    const client: Client = {
      topic,
      source: new EventSource(`${cluster.url}/events?topic=${topic}`),
      closedByOperator: false,
    };
    client.source.addEventListener('gateway.closed', () => {
      client.closedByOperator = true;
      // What a page does with the documented event: stop, do not reconnect.
      client.source.close();
    });
    clients.push(client);
    return client;
  };
  const live = (topic: string) =>
    clients.filter((client) => client.topic === topic && client.source.readyState !== EventSource.CLOSED).length;
  const statsOf = async (adminUrl: string, topics: readonly string[]): Promise<ClusterStats> => {
    const query = topics.map((topic) => `topic=${encodeURIComponent(topic)}`).join('&');
    return (await (await fetch(`${adminUrl}/stats?${query}`)).json()) as ClusterStats;
  };
  /** Waits until every running node's /stats shows `expected` consumers per topic, cluster-wide. */
  const converged = async (expected: Record<string, number>, nodes: number, what: string) =>
    waitFor(
      async () => {
        const running = cluster.nodes.filter((node) => node.running);
        const views = await Promise.all(running.map((node) => statsOf(node.adminUrl, Object.keys(expected))));
        const ok = views.every(
          (view) =>
            view.cluster.nodes.length === nodes &&
            Object.entries(expected).every(([topic, count]) => view.cluster.consumers[topic]?.total === count),
        );
        return ok ? views : undefined;
      },
      { timeoutMs: CONVERGE_MS, what },
    );
  const post = (adminUrl: string, path: string, body: unknown) =>
    fetch(`${adminUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify(body),
    });

  it('counts converge as clients join and leave, and after a node is killed', async () => {
    for (let i = 0; i < 30; i++) open('cv/a');
    for (let i = 0; i < 12; i++) open('cv/b');
    await waitFor(() => clients.every((client) => client.source.readyState === EventSource.OPEN), {
      timeoutMs: 30_000,
      what: '42 clients connected through haproxy',
    });
    const views = await converged({ 'cv/a': 30, 'cv/b': 12 }, 3, 'every node counting 30 + 12 consumers');
    const view = views[0] as ClusterStats;
    // The per-node counts add up, and leastconn spread the streams over all three.
    expect(Object.values(view.cluster.consumers['cv/a']?.nodes ?? {}).reduce((a, b) => a + b, 0)).toBe(30);
    expect(view.cluster.nodes.map((node) => node.id)).toEqual(['gateway1', 'gateway2', 'gateway3']);
    expect(view.cluster.connections).toBe(42);

    for (const client of clients.filter((c) => c.topic === 'cv/a').slice(0, 10)) client.source.close();
    await converged({ 'cv/a': 20, 'cv/b': 12 }, 3, '10 clients gone from the counts');

    const victim = cluster.nodes[2];
    if (!victim) throw new Error('no third node');
    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    // Its clients reconnect through HAProxy to the two others; its report expires.
    await converged(
      { 'cv/a': live('cv/a'), 'cv/b': live('cv/b') },
      2,
      'the killed node gone, its clients counted elsewhere',
    );
    console.log(
      `[cluster-view] killed node left the view and counts converged ${Date.now() - killedAt} ms after kill -9`,
    );
    const after = await statsOf(cluster.nodes[0]?.adminUrl ?? '', ['cv/a']);
    expect(after.cluster.nodes.map((node) => node.id)).toEqual(['gateway1', 'gateway2']);
  }, 120_000);

  it('an action sent to one node acts on every node, and is logged once with who asked', async () => {
    const [first, second] = cluster.nodes;
    if (!first || !second) throw new Error('two nodes needed');
    const targets = clients.filter(
      (client) => client.topic === 'cv/b' && client.source.readyState !== EventSource.CLOSED,
    );
    const spread = await statsOf(first.adminUrl, ['cv/b']);
    // Streams of the topic sit on both remaining nodes.
    expect(Object.keys(spread.cluster.consumers['cv/b']?.nodes ?? {}).length).toBeGreaterThan(1);
    const reply = await post(second.adminUrl, '/admin/close', { topic: 'cv/b' });
    expect(reply.status).toBe(200);
    await waitFor(() => targets.every((client) => client.closedByOperator), {
      what: 'gateway.closed at every cv/b client, on both nodes',
    });
    await converged({ 'cv/a': live('cv/a'), 'cv/b': 0 }, 2, 'no cv/b consumer left anywhere');
    const logged = cluster.nodes
      .filter((node) => node.running)
      .flatMap((node) => node.log().split('\n'))
      .filter((line) => line.includes('"admin action"') && line.includes('close-topic'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('"by":"admin-token"');
    expect(logged[0]).toContain('"topic":"cv/b"');
    // cv/a streams were not touched.
    expect(clients.filter((client) => client.topic === 'cv/a' && client.closedByOperator)).toHaveLength(0);
  }, 60_000);
});
