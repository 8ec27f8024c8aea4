/**
 * `pnpm cluster:redis-cluster` end to end: haproxy, three gateway processes and a 3+3 Redis Cluster, all
 * spawned as that command does. Clients through the balancer on topics spread over the shards get every
 * event published with the SDK (straight to the cluster) exactly once, in order.
 */
import { existsSync } from 'node:fs';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { type Collector, closeAllCollectors, collect, eventsUrl } from './support/gateway.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const haveHaproxy = existsSync(haproxy);
if (!haveHaproxy) console.warn('redis-cluster e2e skipped: haproxy is not installed (.ci/run installs it)');

const PREFIX = `rc-e2e:${process.pid}:`;
const TOPICS = Array.from({ length: 6 }, (_, index) => `shard/${index}`);
const CLIENTS_PER_TOPIC = 5;
const EVENTS_PER_TOPIC = 200;

describe.skipIf(!haveHaproxy)('pnpm cluster:redis-cluster topology', () => {
  let cluster: LocalCluster;
  let publisher: Publisher;

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 3,
      haproxyPath: haproxy,
      redisTopology: 'cluster',
      env: { LOG_LEVEL: 'warn', REDIS_PREFIX: PREFIX, RETRY_MS: '250' },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: PREFIX });
  }, 120_000);

  afterAll(async () => {
    closeAllCollectors();
    await publisher?.close();
    await cluster?.stop();
  });

  it('runs on a Redis Cluster: every client gets every event of its topic once, in order', async () => {
    expect(cluster.redisUrl.startsWith('redis+cluster://')).toBe(true);
    const clients: Array<{ topic: string; collector: Collector }> = [];
    for (const topic of TOPICS) {
      for (let index = 0; index < CLIENTS_PER_TOPIC; index++) {
        clients.push({ topic, collector: collect(eventsUrl(cluster.url, [topic]), { events: ['tick'] }) });
      }
    }
    await waitFor(() => clients.every(({ collector }) => collector.opens > 0), { what: 'every stream to open' });
    // Published with the SDK straight to the cluster (SPUBLISH), round after round over every topic.
    for (let n = 0; n < EVENTS_PER_TOPIC; n += 20) {
      await publisher.sendMany(
        TOPICS.flatMap((topic) =>
          Array.from({ length: 20 }, (_, offset) => ({ topic, event: 'tick', data: `${topic}#${n + offset}` })),
        ),
      );
    }
    await waitFor(() => clients.every(({ collector }) => collector.events.length >= EVENTS_PER_TOPIC), {
      what: `${EVENTS_PER_TOPIC} events on every client`,
      timeoutMs: 60_000,
    });
    // A node opening its first subscriber on a shard stays ready: no stream was turned away meanwhile.
    expect(clients.map(({ collector }) => collector.errors)).toEqual(clients.map(() => 0));
    for (const { topic, collector } of clients) {
      expect(collector.events.map((event) => event.data)).toEqual(
        Array.from({ length: EVENTS_PER_TOPIC }, (_, index) => `${topic}#${index}`),
      );
    }
  }, 120_000);
});
