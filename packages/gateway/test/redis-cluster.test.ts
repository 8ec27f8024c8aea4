/**
 * The Redis engine on Redis Cluster (3 primaries + 3 replicas, real processes): the shared contract, then
 * faults while publishing on topics spread over every primary: a slot migration, a killed shard subscriber,
 * a SIGKILLed primary (its replica is promoted). Every publish that resolved reaches the sink exactly once
 * and in order, or the sink is told (a gap notice) what the cluster lost.
 */
import { formatPosition, type Position, topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { parseRedisUrl } from '@sse-gateway/publisher-sdk/redis-target';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PublishNotAppliedError, type Retention } from '../src/engine/engine.js';
import { RedisNodeDirectory } from '../src/engine/redis/node-directory.js';
import { RedisEngine } from '../src/engine/redis/redis-engine.js';
import { Recorder, runEngineContract } from './engine-contract.js';
import { runNodeDirectoryContract } from './node-directory-contract.js';
import { uniquePrefix } from './support/redis-server.js';
import { type RedisClusterFixture, slotOf, startRedisCluster } from './support/redis-topology.js';
import { waitFor } from './support/wait.js';

let cluster: RedisClusterFixture;

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

function newEngine(retention: Retention, prefix = uniquePrefix('cluster')): RedisEngine {
  return new RedisEngine({ target: parseRedisUrl(cluster.url), prefix, retention, logger: silent });
}

runEngineContract('redis cluster', async (retention) => {
  const engine = newEngine(retention);
  return { engine, cleanup: () => engine.close() };
});

// The per-node keys share a hash tag (one slot, one MULTI); the node list lives on another primary.
runNodeDirectoryContract('redis cluster', async () => {
  const target = parseRedisUrl(cluster.url);
  if (target.kind !== 'cluster') throw new Error('not a cluster URL');
  const client = new Cluster(
    target.nodes.map(({ host, port }) => ({ host, port })),
    { redisOptions: { protocol: 2 } },
  );
  const prefix = uniquePrefix('directory');
  return {
    directoryOfNode: () => new RedisNodeDirectory(client, prefix),
    loseCounts: async (nodeId) => {
      await client.del(`${prefix}gw:node:{${nodeId}}:consumers`);
    },
    cleanup: async () => {
      await client.quit().catch(() => client.disconnect());
    },
  };
});

interface Gap {
  readonly topic: string;
  readonly reason: string;
}

/** One publisher loop per topic until stopped; records what resolved, in order. */
function publishLoops(engine: RedisEngine, topics: readonly string[]) {
  const resolved = new Map<string, Position[]>(topics.map((topic) => [topic, []]));
  let failed = 0;
  let stop = false;
  const loops = topics.map(async (topic) => {
    for (let n = 0; !stop; n++) {
      try {
        const [position] = await engine.publish([{ topic, event: 'tick', data: `${topic}#${n}` }]);
        resolved.get(topic)?.push(position as Position);
      } catch {
        failed++;
        // A client backs off while the cluster fails over; the loop must also let timers and I/O run.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  });
  const total = () => [...resolved.values()].reduce((sum, list) => sum + list.length, 0);
  return {
    resolved,
    total,
    failed: () => failed,
    stop: async () => {
      stop = true;
      await Promise.all(loops);
    },
  };
}

/** Topics whose keys live on different primaries: `perPrimary` for each of them. */
async function topicsOnEveryPrimary(prefix: string, perPrimary: number): Promise<string[]> {
  const byOwner = new Map<number, string[]>();
  for (
    let index = 0;
    byOwner.size < cluster.primaries.length || [...byOwner.values()].some((t) => t.length < perPrimary);
    index++
  ) {
    const topic = `spread/${index}`;
    const owner = await cluster.slotOwner(slotOf(topicKeys(prefix, topic).stream));
    const list = byOwner.get(owner.port) ?? [];
    if (list.length < perPrimary) list.push(topic);
    byOwner.set(owner.port, list);
    if (index > 1000) throw new Error('could not spread topics over the primaries');
  }
  return [...byOwner.values()].flat();
}

describe('redis engine on Redis Cluster', () => {
  async function scenario(fault: (context: { prefix: string; topics: string[] }) => Promise<unknown>) {
    const prefix = uniquePrefix('cluster-fault');
    const engine = newEngine({ maxLength: 0, maxAgeMs: 0 }, prefix);
    const recorder = new Recorder();
    const gaps: Gap[] = [];
    await engine.start(recorder.sink, (topic, reason) => gaps.push({ topic, reason }));
    try {
      const topics = await topicsOnEveryPrimary(prefix, 2);
      await Promise.all(topics.map((topic) => engine.subscribe(topic)));
      const loops = publishLoops(engine, topics);
      await waitFor(() => loops.total() >= 200, { what: '200 publishes before the fault' });
      const startedAt = Date.now();
      await fault({ prefix, topics });
      const before = loops.total();
      await waitFor(() => loops.total() >= before + 200 && engine.isReady(), {
        what: '200 publishes after the fault, and the engine ready',
        timeoutMs: 60_000,
      });
      const recoveredMs = Date.now() - startedAt;
      await loops.stop();
      for (const topic of topics) {
        const resolved = (loops.resolved.get(topic) ?? []).map(formatPosition);
        await waitFor(
          () => {
            const delivered = new Set(recorder.of(topic).map((p) => formatPosition(p.position)));
            return resolved.slice(-20).every((id) => delivered.has(id));
          },
          { what: `the last publishes of ${topic} to reach the sink`, timeoutMs: 30_000 },
        );
        const delivered = recorder.of(topic).map((p) => formatPosition(p.position));
        expect(new Set(delivered).size, `duplicates on ${topic}`).toBe(delivered.length);
        const deliveredSet = new Set(delivered);
        const missing = resolved.filter((id) => !deliveredSet.has(id));
        if (missing.length > 0) {
          expect(
            gaps.some((gap) => gap.topic === topic),
            `${missing.length} missing on ${topic} without a reset`,
          ).toBe(true);
        }
        const resolvedSet = new Set(resolved);
        expect(delivered.filter((id) => resolvedSet.has(id))).toEqual(resolved.filter((id) => deliveredSet.has(id)));
      }
      return { recoveredMs, failed: loops.failed(), gaps: gaps.length };
    } finally {
      await engine.close();
    }
  }

  it('follows a slot migration of a busy topic (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE)', async () => {
    const outcome = await scenario(async ({ prefix, topics }) => {
      const topic = topics[0] as string;
      const slot = slotOf(topicKeys(prefix, topic).stream);
      const owner = await cluster.slotOwner(slot);
      const target = cluster.primaries.find((primary) => primary.port !== owner.port);
      if (!target) throw new Error('no other primary');
      await cluster.moveSlot(slot, target);
      expect((await cluster.slotOwner(slot)).port).toBe(target.port);
    });
    expect(outcome.gaps).toBe(0);
  }, 120_000);

  it('refills after CLIENT KILL TYPE pubsub on every primary', async () => {
    const outcome = await scenario(async () => {
      for (const primary of cluster.primaries) {
        const admin = new Redis({ host: primary.host, port: primary.port, protocol: 2, maxRetriesPerRequest: 1 });
        try {
          await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        } finally {
          admin.disconnect();
        }
      }
    });
    expect(outcome.gaps).toBe(0);
  }, 120_000);

  it('refuses publishes to a frozen primary at once, serves the others, and is unready until it answers', async () => {
    const prefix = uniquePrefix('cluster-frozen');
    const engine = new RedisEngine({
      target: parseRedisUrl(cluster.url),
      prefix,
      retention: { maxLength: 0, maxAgeMs: 0 },
      logger: silent,
      pingIntervalMs: 200,
      pingDeadlineMs: 500,
    });
    const recorder = new Recorder();
    await engine.start(recorder.sink, () => {});
    try {
      const [frozenTopic, otherTopic] = (await topicsOnEveryPrimary(prefix, 1)) as [string, string];
      await Promise.all([frozenTopic, otherTopic].map((topic) => engine.subscribe(topic)));
      await waitFor(() => engine.isReady(), { what: 'the engine ready' });
      const owner = await cluster.slotOwner(slotOf(topicKeys(prefix, frozenTopic).stream));
      // Frozen well under cluster-node-timeout (2 s), so no failover starts: only the gateway's PING notices.
      owner.freeze();
      try {
        await waitFor(() => !engine.isReady(), { what: 'the engine to turn unready', timeoutMs: 5_000 });
        const startedAt = Date.now();
        const refused = await engine.publish([{ topic: frozenTopic, event: 'tick', data: 'x' }]).catch((e) => e);
        expect(refused).toBeInstanceOf(PublishNotAppliedError);
        expect(Date.now() - startedAt).toBeLessThan(1_000);
        await engine.publish([{ topic: otherTopic, event: 'tick', data: 'still served' }]);
      } finally {
        owner.thaw();
      }
      await waitFor(() => engine.isReady(), { what: 'the engine ready after the thaw', timeoutMs: 30_000 });
      const [position] = await waitFor(
        () => engine.publish([{ topic: frozenTopic, event: 'tick', data: 'after' }]).catch(() => undefined),
        { what: 'a publish to the thawed primary', timeoutMs: 30_000 },
      );
      await waitFor(
        () => recorder.of(frozenTopic).some((p) => formatPosition(p.position) === formatPosition(position as Position)),
        { what: 'the event to reach the sink' },
      );
    } finally {
      await engine.close();
    }
    await cluster.waitForHealthy();
  }, 90_000);

  it('comes through a SIGKILL of a primary that has a replica (promotion)', async () => {
    await scenario(async ({ prefix, topics }) => {
      const owner = await cluster.slotOwner(slotOf(topicKeys(prefix, topics[0] as string).stream));
      await owner.kill('SIGKILL');
      await cluster.waitForHealthy();
      // Back as a replica of the promoted node, so later tests have a full cluster again.
      await owner.restart();
      await cluster.waitForHealthy();
    });
  }, 150_000);
});
