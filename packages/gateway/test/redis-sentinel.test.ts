/**
 * The Redis engine on a Sentinel-managed primary (1 primary, 1 replica, 3 sentinels, real processes): the
 * shared contract, then failovers while publishing. Every publish that resolved reaches the sink exactly
 * once and in order, or the sink is told (a gap notice) about what the failover lost.
 */
import { formatPosition, type Position } from '@sse-gateway/publisher-sdk/protocol';
import { parseRedisUrl } from '@sse-gateway/publisher-sdk/redis-target';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Retention } from '../src/engine/engine.js';
import { RedisEngine } from '../src/engine/redis/redis-engine.js';
import { Recorder, runEngineContract } from './engine-contract.js';
import { getJson, publish, startTestGateway } from './support/gateway.js';
import { uniquePrefix } from './support/redis-server.js';
import { type SentinelGroup, startSentinelGroup } from './support/redis-topology.js';
import { waitFor } from './support/wait.js';

let group: SentinelGroup;

beforeAll(async () => {
  // As docs/deployment.md recommends: without it, a forced failover can acknowledge writes on the old
  // primary in the seconds before Sentinel demotes it, and those writes are then lost without a trace.
  group = await startSentinelGroup({ minReplicasToWrite: 1 });
}, 120_000);

afterAll(async () => {
  await group?.stop();
});

const silent = pino({ level: 'silent' });

function newEngine(retention: Retention, prefix = uniquePrefix('sentinel')): RedisEngine {
  return new RedisEngine({ target: parseRedisUrl(group.url), prefix, retention, logger: silent });
}

runEngineContract('redis sentinel', async (retention) => {
  const engine = newEngine(retention);
  return { engine, cleanup: () => engine.close() };
});

interface Gap {
  readonly reason: string;
  readonly position: Position;
}

/** Publishes `topic#n` in a loop until stopped; records what resolved and how many were refused. */
function publishLoop(engine: RedisEngine, topic: string) {
  const resolved: Position[] = [];
  let failed = 0;
  let stop = false;
  const done = (async () => {
    for (let n = 0; !stop; n++) {
      try {
        const [position] = await engine.publish([{ topic, event: 'tick', data: `${topic}#${n}` }]);
        resolved.push(position as Position);
      } catch {
        failed++;
        // A client backs off while Redis fails over; the loop must also let timers and I/O run.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  })();
  return {
    resolved,
    failed: () => failed,
    stop: () => {
      stop = true;
      return done;
    },
  };
}

/**
 * Every resolved position reached the sink once, in order per epoch, unless a gap notice covers it: Sentinel
 * replication is asynchronous, so a failover may lose acknowledged writes; the engine must then say so.
 */
function expectExactlyOnceOrReported(recorder: Recorder, topic: string, resolved: Position[], gaps: Gap[]) {
  const delivered = recorder.of(topic).map((publication) => formatPosition(publication.position));
  expect(new Set(delivered).size).toBe(delivered.length);
  const deliveredSet = new Set(delivered);
  const missing = resolved.filter((position) => !deliveredSet.has(formatPosition(position)));
  if (missing.length > 0)
    expect(gaps.length, `${missing.length} resolved events missing without a reset`).toBeGreaterThan(0);
}

describe('redis engine on Sentinel', () => {
  async function scenario(fail: () => Promise<unknown>) {
    const engine = newEngine({ maxLength: 0, maxAgeMs: 0 });
    const recorder = new Recorder();
    const gaps: Gap[] = [];
    await engine.start(recorder.sink, (_topic, reason, position) => gaps.push({ reason, position }));
    try {
      const topic = 'failover';
      await engine.subscribe(topic);
      const loop = publishLoop(engine, topic);
      await waitFor(() => loop.resolved.length >= 100, { what: '100 publishes before the failover' });
      const startedAt = Date.now();
      await fail();
      const beforeRecovery = loop.resolved.length;
      await waitFor(() => loop.resolved.length >= beforeRecovery + 100, {
        what: '100 publishes after the failover',
        timeoutMs: 60_000,
      });
      const recoveredMs = Date.now() - startedAt;
      await loop.stop();
      await waitFor(
        () => {
          const delivered = new Set(recorder.of(topic).map((p) => formatPosition(p.position)));
          return loop.resolved.slice(-50).every((position) => delivered.has(formatPosition(position)));
        },
        { what: 'the last publishes to reach the sink', timeoutMs: 30_000 },
      );
      expectExactlyOnceOrReported(recorder, topic, loop.resolved, gaps);
      // Publish order: each resolved position follows the previous one of its epoch.
      const sinkOrder = recorder.of(topic).map((p) => formatPosition(p.position));
      const resolvedIds = new Set(loop.resolved.map(formatPosition));
      const sinkIds = new Set(sinkOrder);
      expect(sinkOrder.filter((id) => resolvedIds.has(id))).toEqual(
        loop.resolved.map(formatPosition).filter((id) => sinkIds.has(id)),
      );
      return { recoveredMs, failed: loop.failed(), gaps };
    } finally {
      await engine.close();
    }
  }

  it('comes through SENTINEL FAILOVER while publishing', async () => {
    const outcome = await scenario(() => group.failover());
    expect(outcome.recoveredMs).toBeLessThan(60_000);
  }, 120_000);

  it('comes through a SIGKILL of the primary while publishing', async () => {
    const outcome = await scenario(async () => {
      const primary = await group.currentPrimary();
      const node = [group.primary, ...group.replicas].find((candidate) => candidate.port === primary.port);
      await node?.kill('SIGKILL');
      const promoted = await group.waitForNewPrimary(primary);
      // Back as a replica of the new primary, so a later failover has somewhere to go (started as one, as an
      // orchestrator would: the sentinels' own conversion can stall in TILT mode on a loaded machine).
      await node?.restart({ replicaOf: promoted });
    });
    expect(outcome.recoveredMs).toBeLessThan(90_000);
  }, 150_000);
});

async function hasOnlineReplica(primary: { host: string; port: number }): Promise<boolean> {
  const client = new Redis({ host: primary.host, port: primary.port, protocol: 2, maxRetriesPerRequest: 1 });
  try {
    return /slave\d+:[^\n]*state=online/.test(await client.info('replication'));
  } finally {
    client.disconnect();
  }
}

describe('PUBLISH_MIN_REPLICAS on Sentinel', () => {
  it('answers 200 once the replica has the event, and 504 outcome_unknown while the replica is frozen', async () => {
    const node = await startTestGateway({
      redisUrl: group.url,
      redisPrefix: uniquePrefix('min-replicas'),
      publishMinReplicas: 1,
      publishReplicaTimeoutMs: 300,
    });
    try {
      await waitFor(async () => (await getJson(`${node.url}/readyz`)).status === 200, { what: 'the node to be ready' });
      const primary = await group.currentPrimary();
      // After the failover tests above, the old primary may still be rejoining as a replica.
      await waitFor(() => hasOnlineReplica(primary), { what: 'an online replica', timeoutMs: 60_000 });
      // "online" can still mean catching up after a failover: on a loaded machine the first WAIT may
      // outlast its 300 ms. Retried with one idempotency key, it is one event however often it is sent.
      await waitFor(
        async () =>
          (await publish(node.url, { topic: 'durable', data: 'confirmed' }, { 'idempotency-key': 'k0' })).status ===
          200,
        { what: 'a publish confirmed by the online replica' },
      );
      const replica = [group.primary, ...group.replicas].find((candidate) => candidate.port !== primary.port);
      if (!replica) throw new Error('no replica');
      replica.freeze();
      try {
        const unconfirmed = await publish(node.url, { topic: 'durable', data: 'x' }, { 'idempotency-key': 'k1' });
        expect(unconfirmed.status).toBe(504);
        expect(unconfirmed.body).toMatchObject({ error: { code: 'outcome_unknown' } });
      } finally {
        replica.thaw();
      }
      await waitFor(
        async () =>
          (await publish(node.url, { topic: 'durable', data: 'x' }, { 'idempotency-key': 'k1' })).status === 200,
        { what: 'the retried publish to be confirmed' },
      );
    } finally {
      await node.close();
    }
  });
});
