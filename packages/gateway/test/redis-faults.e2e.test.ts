/**
 * Redis faults under real load, per topology: three gateway processes (`node dist/main.js`), 30 `eventsource`
 * clients spread over them (every topic followed on every node, one client in five follows two topics), and
 * two SDK publishers writing straight to Redis the whole time. The harness is support/multinode.ts.
 *
 * - Redis Cluster, 3 primaries + 3 replicas, topics on every primary: a slot migration of a busy topic's slot,
 *   `CLIENT KILL TYPE pubsub` on every primary, SIGKILL of a primary (its replica is promoted; the old node
 *   is restarted and rejoins).
 * - Sentinel, 1 primary + 1 replica + 3 sentinels: SENTINEL FAILOVER, then SIGKILL of the current primary
 *   (restarted afterwards, it rejoins as a replica).
 * - One redis-server frozen (kill -STOP) for 8 s: every node turns unready within seconds and ready after.
 *
 * Every scenario checks each client against what the SDK acknowledged: every acknowledged event exactly once,
 * in id order, with the SDK's id. Where Redis itself can lose acknowledged writes (a promotion of an
 * asynchronous replica) an event may be missing only with a `gateway.reset` between the events around it;
 * elsewhere any reset is a failure. Each scenario logs one summary line (console.info): sends resolved and
 * rejected, the time until every client had an event sent after the fault, resets by reason, acknowledged
 * events lost by Redis, and the reconnects the clients had to make.
 *
 * Everything here is spawned by this file (never a shared REDIS_URL): one topology at a time.
 */
import type { Publisher } from '@sse-gateway/publisher-sdk';
import { topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeAllCollectors, metric } from './support/gateway.js';
import {
  assertBuilt,
  Client,
  closeAllPublishers,
  closePublishers,
  faultProblems,
  type GatewayProcess,
  logTails,
  newPublishers,
  publishProblems,
  readyStatus,
  runPublishers,
  startGateways,
  stopGateways,
  waitForCaughtUp,
  waitForDelivery,
  waitForEach,
  waitForOpen,
} from './support/multinode.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import {
  type Address,
  type RedisClusterFixture,
  type RedisNode,
  type SentinelGroup,
  slotOf,
  startRedisCluster,
  startSentinelGroup,
} from './support/redis-topology.js';
import { waitFor } from './support/wait.js';

const NODE_COUNT = 3;
const CLIENT_COUNT = 30;
const PUBLISHER_COUNT = 2;
/** Pause between publish rounds: about 40 rounds a second per publisher, one event per topic each. */
const PACE_MS = 20;
/** Events every client must have per topic before a fault (so the fault happens mid-stream). */
const STEP_EVENTS = 20;
/** Sends that must resolve after the clients caught up, before the run stops (the flow is live again). */
const AFTER_EVENTS = 100;
/** Deadline of the catch-up and of the final delivery: a failover on a loaded 2-core box. */
const CATCH_UP_MS = 60_000;
const WAIT_MS = 30_000;
const TOPOLOGY_MS = 120_000;
const SCENARIO_MS = 120_000;
/** The frozen-Redis case of docs/deployment.md: kill -STOP for 8 s. */
const FREEZE_MS = 8000;
const HEALTH_TIMEOUT_MS = 1000;

// ---------------------------------------------------------------------------------------------------
// One scenario: clients, publishers, a fault, the checks and the summary line
// ---------------------------------------------------------------------------------------------------

interface Scenario {
  readonly name: string;
  readonly redisUrl: string;
  readonly prefix: string;
  readonly nodes: readonly GatewayProcess[];
  /** Topics in the order clients are spread over them (consecutive ones on different primaries). */
  readonly topics: readonly string[];
  /** Redis may lose acknowledged writes here: a missing event is fine when a reset covers it. */
  readonly mayLoseWrites: boolean;
  /** The client streams must never break (one open, no error each). */
  readonly streamsUnbroken: boolean;
  /**
   * Injects the fault and recovers from it. It calls `mark()` when the fault takes effect: the catch-up
   * clock (until every client has an event sent after that instant) starts there, and runs while `fault`
   * goes on recovering (if `fault` never calls it, the clock starts when it returns).
   */
  readonly fault: (mark: () => void) => Promise<void>;
  /** An ioredis client (protocol 2) on the topology, to read back what the streams hold. */
  readonly connect: () => Redis | Cluster;
}

interface Summary {
  readonly resolved: number;
  readonly rejected: number;
  readonly catchUpMs: number;
  readonly resets: Record<string, number>;
  /** Client deliveries of lost events that a reset covered. */
  readonly covered: number;
  /** Acknowledged events the streams no longer hold. */
  readonly lostByRedis: number;
}

/**
 * 30 clients over the nodes: client i on node i % 3, following topic floor(i / 3) % topics (so each topic
 * has clients on every node); one client in five also follows the next topic (on another primary).
 */
function spreadClients(nodes: readonly GatewayProcess[], topics: readonly string[]): Client[] {
  return Array.from({ length: CLIENT_COUNT }, (_, i) => {
    const first = Math.floor(i / NODE_COUNT) % topics.length;
    const followed = [topics[first] as string];
    if (i % 5 === 4) followed.push(topics[(first + 1) % topics.length] as string);
    return new Client(nodes, `c${i}@${i % NODE_COUNT}`, followed, i % NODE_COUNT);
  });
}

async function runScenario(scenario: Scenario): Promise<Summary> {
  const clients = spreadClients(scenario.nodes, scenario.topics);
  let publishers: Publisher[] = [];
  try {
    await waitForOpen(clients);
    publishers = newPublishers(scenario.redisUrl, PUBLISHER_COUNT, { prefix: scenario.prefix });
    const run = runPublishers({ publishers, topics: scenario.topics, tag: 'p', paceMs: PACE_MS });
    let catchUp: Promise<number> | undefined;
    const mark = () => {
      if (catchUp) return;
      catchUp = waitForCaughtUp(clients, run.log, Date.now(), CATCH_UP_MS);
      // Awaited below; a fault that throws first must not leave it unhandled.
      catchUp.catch(() => {});
    };
    try {
      await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client before the fault`);
      await scenario.fault(mark);
      mark();
      await catchUp;
      const resolvedAfter = run.resolvedCount();
      await waitFor(() => run.resolvedCount() >= resolvedAfter + AFTER_EVENTS, {
        timeoutMs: WAIT_MS,
        what: `${AFTER_EVENTS} more sends to resolve after the catch-up`,
      });
    } finally {
      await run.stop();
    }
    const catchUpMs = await (catchUp as Promise<number>);
    expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
    await waitForDelivery(clients, run.log, CATCH_UP_MS);
    const outcomes = clients.map((client) => faultProblems(client, run.log, { allowResets: scenario.mayLoseWrites }));
    const resets: Record<string, number> = {};
    for (const outcome of outcomes)
      for (const [reason, count] of Object.entries(outcome.resets)) resets[reason] = (resets[reason] ?? 0) + count;
    const covered = outcomes.reduce((sum, outcome) => sum + outcome.covered, 0);
    const rejectedDelivered = outcomes.reduce((sum, outcome) => sum + outcome.rejectedDelivered, 0);
    const reconnects = clients.reduce(
      (sum, client) => sum + client.streams.reduce((count, stream) => count + stream.opens - 1, 0),
      0,
    );
    // What Redis still holds: acknowledged events missing from it were lost by Redis, not by the gateway.
    const stored = await storedData(scenario);
    const lostByRedis = [...run.log.resolved.values()].flat().filter((sent) => !stored.has(sent.data));
    const problems = outcomes.flatMap((outcome) => outcome.problems);
    // A rewound stream (failover to a replica that missed writes) must reach every client as a reset:
    // an acknowledged event a client never got, with no reset covering it, is always a problem.
    for (const [index, outcome] of outcomes.entries()) {
      const client = clients[index] as Client;
      for (const sent of outcome.uncovered) {
        const where = `${client.name} ${sent.topic}: ${sent.data} (${sent.id}) never arrived and no reset covers it`;
        if (stored.has(sent.data)) problems.push(`${where}; Redis still has it`);
        else problems.push(`${where}; Redis lost it`);
      }
    }
    const resolved = run.resolvedCount();
    const line =
      `[redis-faults] ${scenario.name}: ${resolved} sends resolved, ${run.log.rejected.size} rejected ` +
      `(${rejectedDelivered} deliveries of rejected-but-stored sends); every client caught up ${catchUpMs} ms ` +
      `after the fault; resets ${JSON.stringify(resets)}; ${lostByRedis.length} acknowledged events lost by Redis ` +
      `(${covered} client deliveries covered by a reset); ${reconnects} client reconnects`;
    console.info(line);
    expect(problems).toEqual([]);
    // Without a promotion nothing acknowledged may vanish from Redis.
    if (!scenario.mayLoseWrites) expect(lostByRedis.map((sent) => sent.data)).toEqual([]);
    if (scenario.streamsUnbroken) {
      expect(
        clients.filter((client) => client.current.opens !== 1 || client.current.errors !== 0).map(describeClient),
      ).toEqual([]);
    }
    return {
      resolved,
      rejected: run.log.rejected.size,
      catchUpMs,
      resets,
      covered,
      lostByRedis: lostByRedis.length,
    };
  } finally {
    await closePublishers(publishers);
    for (const client of clients) for (const stream of client.streams) stream.close();
  }
}

/** The data of every entry the scenario's topic streams hold now. */
async function storedData(scenario: Scenario): Promise<Set<string>> {
  const client = scenario.connect();
  client.on('error', () => {});
  try {
    const data = new Set<string>();
    for (const topic of scenario.topics) {
      const entries = (await client.xrange(topicKeys(scenario.prefix, topic).stream, '-', '+')) as [string, string[]][];
      for (const [, fields] of entries) {
        for (let at = 0; at + 1 < fields.length; at += 2) if (fields[at] === 'd') data.add(fields[at + 1] as string);
      }
    }
    return data;
  } finally {
    client.disconnect();
  }
}

const describeClient = (client: Client) => client.describe();

// ---------------------------------------------------------------------------------------------------
// Admin helpers
// ---------------------------------------------------------------------------------------------------

/** One short-lived admin connection (protocol 2, no retries) to `address`. */
async function withAdmin<T>(address: Address, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({
    host: address.host,
    port: address.port,
    protocol: 2,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 2000,
    commandTimeout: 5000,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

/** Whether `node` is a replica whose link to its primary is up. */
async function isSyncedReplica(node: Address): Promise<boolean> {
  const info = await withAdmin(node, async (client) => String(await client.info('replication')));
  return infoField(info, 'role') === 'slave' && infoField(info, 'master_link_status') === 'up';
}

/** Refill counters of every node (sse_gateway_engine_events_total{counter="refills"}). */
function refills(nodes: readonly GatewayProcess[]): Promise<number[]> {
  return Promise.all(
    nodes.map((node) => metric(node.adminUrl, 'sse_gateway_engine_events_total', { counter: 'refills' })),
  );
}

async function waitForRefills(nodes: readonly GatewayProcess[], before: readonly number[], what: string) {
  await waitFor(async () => (await refills(nodes)).every((value, index) => value > (before[index] as number)), {
    timeoutMs: WAIT_MS,
    what,
  });
}

function installLogDump(nodes: () => readonly GatewayProcess[]) {
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      console.warn(logTails(nodes()));
    });
  });
}

beforeAll(() => {
  assertBuilt();
});

afterAll(async () => {
  closeAllCollectors();
  await closeAllPublishers();
});

// ---------------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------------

describe('Redis Cluster (3 primaries + 3 replicas): 3 gateways, 30 clients, continuous publishing', () => {
  const prefix = uniquePrefix('faults-cluster');
  let cluster: RedisClusterFixture;
  let nodes: GatewayProcess[] = [];
  installLogDump(() => nodes);

  beforeAll(async () => {
    cluster = await startRedisCluster();
    nodes = await startGateways(NODE_COUNT, cluster.url, { prefix });
  }, TOPOLOGY_MS);

  afterAll(async () => {
    await stopGateways(nodes);
    await cluster?.stop();
  }, 60_000);

  const slotOfTopic = (topic: string) => slotOf(topicKeys(prefix, topic).stream);

  /** `perPrimary` topics named `<name>/<n>` on each primary, interleaved (consecutive ones on different primaries). */
  async function topicsOnEveryPrimary(name: string, perPrimary: number): Promise<string[]> {
    const byOwner = new Map<number, string[]>(cluster.primaries.map((primary) => [primary.port, []]));
    for (let n = 0; [...byOwner.values()].some((topics) => topics.length < perPrimary); n++) {
      if (n > 1000) throw new Error('could not spread topics over the primaries');
      const topic = `${name}/${n}`;
      const owner = await cluster.slotOwner(slotOfTopic(topic));
      const topics = byOwner.get(owner.port);
      if (topics && topics.length < perPrimary) topics.push(topic);
    }
    const lists = [...byOwner.values()];
    return Array.from({ length: perPrimary }, (_, index) => lists.map((topics) => topics[index] as string)).flat();
  }

  const scenario = (name: string, topics: string[], fault: Scenario['fault'], options: Partial<Scenario> = {}) =>
    runScenario({
      name: `cluster ${name}`,
      redisUrl: cluster.url,
      connect: () =>
        new Cluster(
          cluster.nodes.map(({ host, port }) => ({ host, port })),
          { redisOptions: { protocol: 2 } },
        ),
      prefix,
      nodes,
      topics,
      mayLoseWrites: false,
      streamsUnbroken: true,
      fault,
      ...options,
    });

  it(
    'slot migration of a busy topic: every acknowledged event once, in order, no reset',
    async () => {
      const topics = await topicsOnEveryPrimary('move', 2);
      const busy = topics[0] as string;
      const slot = slotOfTopic(busy);
      const source = await cluster.slotOwner(slot);
      const target = cluster.primaries.find((primary) => primary.port !== source.port) as RedisNode;
      const summary = await scenario('slot migration', topics, async (mark) => {
        mark();
        await cluster.moveSlot(slot, target);
      });
      expect((await cluster.slotOwner(slot)).port).toBe(target.port);
      expect(summary.resets).toEqual({});
    },
    SCENARIO_MS,
  );

  it(
    'CLIENT KILL TYPE pubsub on every primary: every node re-subscribes and refills, clients miss nothing',
    async () => {
      const topics = await topicsOnEveryPrimary('pubsub', 2);
      const summary = await scenario('CLIENT KILL TYPE pubsub', topics, async (mark) => {
        const before = await refills(nodes);
        mark();
        const killed = await Promise.all(
          cluster.primaries.map((primary) =>
            withAdmin(primary, async (client) => Number(await client.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))),
          ),
        );
        // One shard subscriber per gateway on every primary.
        expect(
          killed.every((count) => count >= NODE_COUNT),
          `killed ${killed.join(', ')}`,
        ).toBe(true);
        await waitForRefills(nodes, before, 'every node to refill after CLIENT KILL TYPE pubsub');
      });
      expect(summary.resets).toEqual({});
    },
    SCENARIO_MS,
  );

  it(
    'SIGKILL of a primary (its replica is promoted, the old node restarts and rejoins): no silent loss',
    async () => {
      const topics = await topicsOnEveryPrimary('crash', 2);
      const victim = await cluster.slotOwner(slotOfTopic(topics[0] as string));
      await scenario(
        'SIGKILL of a primary',
        topics,
        async (mark) => {
          mark();
          await victim.kill('SIGKILL');
          await cluster.waitForHealthy();
          expect((await cluster.slotOwner(slotOfTopic(topics[0] as string))).port).not.toBe(victim.port);
          await victim.restart();
          await cluster.waitForHealthy();
          await waitFor(() => isSyncedReplica(victim), {
            timeoutMs: CATCH_UP_MS,
            what: 'the restarted node to rejoin as a synced replica',
          });
        },
        // The promoted replica may miss writes the dead primary acknowledged (asynchronous replication).
        { mayLoseWrites: true, streamsUnbroken: false },
      );
    },
    SCENARIO_MS,
  );
});

// ---------------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------------

describe('Sentinel (1 primary, 1 replica, 3 sentinels): 3 gateways, 30 clients, continuous publishing', () => {
  const prefix = uniquePrefix('faults-sentinel');
  let group: SentinelGroup;
  let nodes: GatewayProcess[] = [];
  installLogDump(() => nodes);

  beforeAll(async () => {
    group = await startSentinelGroup();
    nodes = await startGateways(NODE_COUNT, group.url, { prefix });
  }, TOPOLOGY_MS);

  afterAll(async () => {
    await stopGateways(nodes);
    await group?.stop();
  }, 60_000);

  const dataNodes = () => [group.primary, ...group.replicas];
  const nodeAt = (address: Address) => dataNodes().find((node) => node.port === address.port) as RedisNode;

  /** The node that is not primary is a synced replica, and every sentinel sees it so (a failover can use it). */
  async function waitForGoodReplica(): Promise<void> {
    await waitFor(
      async () => {
        const primary = await group.currentPrimary();
        const replica = dataNodes().find((node) => node.port !== primary.port) as RedisNode;
        if (!(await isSyncedReplica(replica))) return false;
        for (const sentinel of group.sentinels) {
          const replicas = (await withAdmin(sentinel, (client) =>
            client.call('SENTINEL', 'REPLICAS', group.name),
          )) as string[][];
          const fields = replicas.map((flat) => {
            const pairs: Record<string, string> = {};
            for (let at = 0; at + 1 < flat.length; at += 2) pairs[String(flat[at])] = String(flat[at + 1]);
            return pairs;
          });
          const seen = fields.find((entry) => Number(entry.port) === replica.port);
          if (seen?.flags !== 'slave' || seen['master-link-status'] !== 'ok') return false;
        }
        return true;
      },
      { timeoutMs: CATCH_UP_MS, intervalMs: 100, what: 'a synced replica every sentinel knows' },
    );
  }

  const scenario = (name: string, topic: string, fault: Scenario['fault']) =>
    runScenario({
      name: `sentinel ${name}`,
      redisUrl: group.url,
      connect: () =>
        new Redis({
          sentinels: group.sentinelAddresses.map(({ host, port }) => ({ host, port })),
          name: group.name,
          role: 'master',
          protocol: 2,
        }),
      prefix,
      nodes,
      topics: [`${topic}/a`, `${topic}/b`, `${topic}/c`],
      // A promotion of an asynchronous replica may drop what the old primary acknowledged last.
      mayLoseWrites: true,
      streamsUnbroken: false,
      fault,
    });

  it(
    'SENTINEL FAILOVER: the gateways follow the new primary, no silent loss',
    async () => {
      const before = await group.currentPrimary();
      await scenario('SENTINEL FAILOVER', 'failover', async (mark) => {
        mark();
        const after = await group.failover();
        expect(after.port).not.toBe(before.port);
      });
    },
    SCENARIO_MS,
  );

  it(
    'SIGKILL of the current primary (promotion; the old one restarts and rejoins as replica): no silent loss',
    async () => {
      await waitForGoodReplica();
      const previous = await group.currentPrimary();
      const victim = nodeAt(previous);
      await scenario('SIGKILL of the primary', 'kill', async (mark) => {
        mark();
        await victim.kill('SIGKILL');
        const promoted = await group.waitForNewPrimary(previous);
        // Back as the new primary's replica, as an orchestrator would start it. Left to the sentinels, the
        // conversion waits for their next INFO round, and for 30 s more whenever a loaded machine delays
        // their timer enough to put them in TILT mode: longer than any deadline here.
        await victim.restart({ replicaOf: promoted });
        await waitFor(() => isSyncedReplica(victim), {
          timeoutMs: CATCH_UP_MS,
          intervalMs: 100,
          what: 'the restarted old primary to rejoin as a synced replica',
        });
      });
    },
    SCENARIO_MS,
  );
});

// ---------------------------------------------------------------------------------------------------
// One redis-server, frozen
// ---------------------------------------------------------------------------------------------------

describe('one redis-server frozen (kill -STOP 8 s, kill -CONT): 3 gateways, 30 clients', () => {
  const prefix = uniquePrefix('faults-single');
  let redis: TestRedis;
  let nodes: GatewayProcess[] = [];
  let frozenPid: number | undefined;
  installLogDump(() => nodes);

  beforeAll(async () => {
    redis = await startRedis();
    if (redis.pid === undefined) throw new Error('this scenario needs a redis-server spawned by the test');
    nodes = await startGateways(NODE_COUNT, redis.url, {
      prefix,
      env: { REDIS_HEALTH_TIMEOUT_MS: String(HEALTH_TIMEOUT_MS) },
    });
  }, TOPOLOGY_MS);

  afterAll(async () => {
    if (frozenPid !== undefined) process.kill(frozenPid, 'SIGCONT');
    await stopGateways(nodes);
    await redis?.stop().catch(() => {});
  }, 60_000);

  const statuses = () => Promise.all(nodes.map((node) => readyStatus(node.url)));

  it(
    '/readyz turns 503 on every node within seconds and 200 after; connected clients miss nothing',
    async () => {
      let unreadyMs = 0;
      let readyAgainMs = 0;
      await runScenario({
        name: 'single redis-server kill -STOP 8 s',
        redisUrl: redis.url,
        connect: () => new Redis(redis.url, { protocol: 2 }),
        prefix,
        nodes,
        topics: ['frozen/a', 'frozen/b', 'frozen/c'],
        mayLoseWrites: false,
        streamsUnbroken: false,
        fault: async (mark) => {
          const pid = redis.pid as number;
          process.kill(pid, 'SIGSTOP');
          frozenPid = pid;
          const frozenAt = Date.now();
          try {
            await waitFor(async () => (await statuses()).every((status) => status === 503), {
              timeoutMs: 4 * HEALTH_TIMEOUT_MS + 4000,
              intervalMs: 50,
              what: 'every node to answer 503 on /readyz',
            });
            unreadyMs = Date.now() - frozenAt;
            // The fault itself: Redis stays frozen this long (a duration, not a synchronisation).
            await new Promise((resolve) => setTimeout(resolve, Math.max(0, FREEZE_MS - (Date.now() - frozenAt))));
          } finally {
            process.kill(pid, 'SIGCONT');
            frozenPid = undefined;
          }
          const thawedAt = Date.now();
          mark();
          await waitFor(async () => (await statuses()).every((status) => status === 200), {
            timeoutMs: WAIT_MS,
            intervalMs: 50,
            what: 'every node to answer 200 on /readyz again',
          });
          readyAgainMs = Date.now() - thawedAt;
        },
      });
      console.info(
        `[redis-faults] single redis-server kill -STOP: every /readyz 503 ${unreadyMs} ms after the freeze, ` +
          `200 again ${readyAgainMs} ms after the thaw`,
      );
      expect(unreadyMs).toBeLessThan(4 * HEALTH_TIMEOUT_MS + 1000);
      expect(readyAgainMs).toBeLessThan(15_000);
    },
    SCENARIO_MS,
  );
});
