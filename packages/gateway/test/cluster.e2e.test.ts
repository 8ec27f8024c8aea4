/**
 * The horizontal story end to end, on `pnpm cluster`'s topology: real haproxy, real redis-server, three
 * real gateway processes, 200 `eventsource` clients through the balancer. While thousands of sequenced
 * events are published, one replica is killed with SIGKILL and another drained with SIGTERM, then both
 * come back. Every client must get every event of its topic exactly once, in order.
 */
import { existsSync } from 'node:fs';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const haveHaproxy = existsSync(haproxy);
if (!haveHaproxy) {
  console.warn('cluster e2e skipped: haproxy is not installed (apt-get install haproxy; .ci/run installs it)');
}

const CLIENTS = 200;
const TOPICS = ['cluster/a', 'cluster/b', 'cluster/c'];
const EVENTS_PER_TOPIC = 1000;
/** Events per publish round; rounds are paced so the run lasts long enough to kill and restart nodes. */
const BATCH = 15;
const ROUND_MS = 40;

interface Client {
  readonly topic: string;
  readonly source: EventSource;
  readonly received: number[];
  disconnectedAt: number | undefined;
  readonly reconnectMs: number[];
  resets: number;
  warm: boolean;
  /** Why EventSource gave up for good, if it did (it does on any non-200 answer). */
  failure?: string;
}

describe.skipIf(!haveHaproxy)('cluster: haproxy + 3 gateways + redis, with failures', () => {
  let cluster: LocalCluster;
  let publisher: Publisher;
  const clients: Client[] = [];

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 3,
      haproxyPath: haproxy,
      env: {
        LOG_LEVEL: 'warn',
        DRAIN_MS: '1500',
        RETRY_MS: '250',
        RETRY_JITTER: '1',
        HEARTBEAT_MS: '2000',
        HISTORY_MAX_LENGTH: '100000',
        REDIS_PREFIX: `cluster-e2e:${process.pid}:`,
      },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: `cluster-e2e:${process.pid}:`, maxLength: 100000 });
  }, 120_000);

  afterAll(async () => {
    for (const client of clients) client.source.close();
    await publisher?.close();
    await cluster?.stop();
  });

  it('delivers every event exactly once, in order, across kill -9 and drain', async () => {
    for (let i = 0; i < CLIENTS; i++) clients.push(openClient(cluster.url, TOPICS[i % TOPICS.length] as string));
    await waitFor(() => clients.every((client) => client.source.readyState === EventSource.OPEN), {
      timeoutMs: 60_000,
      what: `${CLIENTS} clients connected through haproxy`,
    });
    // A first event per topic proves every client's subscription is live before the sequence starts.
    await publisher.sendMany(TOPICS.map((topic) => ({ topic, event: 'warmup', data: '' })));
    await waitFor(() => clients.every((client) => client.warm), { what: 'the warm-up event at every client' });

    const [victim, drained] = [cluster.nodes[0], cluster.nodes[1]];
    if (!victim || !drained) throw new Error('cluster has fewer than 2 nodes');
    let next = 0;
    const totalRounds = Math.ceil(EVENTS_PER_TOPIC / BATCH);
    const chaos: Promise<unknown>[] = [];
    for (let round = 0; round < totalRounds; round++) {
      const items = [];
      for (let i = 0; i < BATCH && next + i < EVENTS_PER_TOPIC; i++) {
        for (const topic of TOPICS) items.push({ topic, event: 'seq', data: String(next + i) });
      }
      next += BATCH;
      await publisher.sendMany(items);
      if (round === Math.floor(totalRounds * 0.2)) {
        chaos.push(victim.kill('SIGKILL'));
      }
      if (round === Math.floor(totalRounds * 0.4)) {
        chaos.push(drained.kill('SIGTERM').then((code) => expect(code).toBe(0)));
      }
      if (round === Math.floor(totalRounds * 0.6)) {
        await Promise.all(chaos);
        chaos.push(victim.restart(), drained.restart());
      }
      await new Promise((resolve) => setTimeout(resolve, ROUND_MS));
    }
    await Promise.all(chaos);

    await waitFor(() => clients.every((client) => client.received.length >= EVENTS_PER_TOPIC), {
      timeoutMs: 90_000,
      what: `every client to receive ${EVENTS_PER_TOPIC} events`,
    }).catch((error: Error) => {
      const stuck = clients.filter((client) => client.received.length < EVENTS_PER_TOPIC);
      const states = stuck.map(
        (c) => `${c.topic} state ${c.source.readyState} got ${c.received.length} ${c.failure ?? ''}`,
      );
      throw new Error(`${error.message}; ${stuck.length} clients behind: ${states.slice(0, 10).join('; ')}`);
    });
    const expected = Array.from({ length: EVENTS_PER_TOPIC }, (_, i) => i);
    for (const client of clients) {
      expect(client.resets).toBe(0);
      expect(client.received).toEqual(expected);
    }

    const reconnects = clients.flatMap((client) => client.reconnectMs).sort((a, b) => a - b);
    const pick = (p: number) => reconnects[Math.min(reconnects.length - 1, Math.floor(p * reconnects.length))];
    console.info(
      `cluster e2e: ${clients.length} clients, ${reconnects.length} reconnects, ` +
        `reconnect time p50 ${pick(0.5)?.toFixed(0)} ms, p99 ${pick(0.99)?.toFixed(0)} ms`,
    );
    // Clients of both failed replicas (about two thirds of them) had to move.
    expect(reconnects.length).toBeGreaterThan(CLIENTS / 3);
    await cluster.waitForHealthyBackends(3);
  }, 240_000);
});

function openClient(baseUrl: string, topic: string): Client {
  const source = new EventSource(`${baseUrl}/events?topic=${encodeURIComponent(topic)}`);
  const client: Client = {
    topic,
    source,
    received: [],
    disconnectedAt: undefined,
    reconnectMs: [],
    resets: 0,
    warm: false,
  };
  source.addEventListener('warmup', () => {
    client.warm = true;
  });
  source.addEventListener('seq', (event) => client.received.push(Number(event.data)));
  source.addEventListener('gateway.reset', () => client.resets++);
  source.addEventListener('open', () => {
    if (client.disconnectedAt !== undefined) {
      client.reconnectMs.push(performance.now() - client.disconnectedAt);
      client.disconnectedAt = undefined;
    }
  });
  source.addEventListener('error', (event) => {
    client.disconnectedAt ??= performance.now();
    if (source.readyState === EventSource.CLOSED) client.failure = `${event.code ?? ''} ${event.message ?? ''}`;
  });
  return client;
}
