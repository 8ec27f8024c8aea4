/**
 * Multi-node and fault tests with real processes: one redis-server, three gateway processes
 * (`node dist/main.js`) on their own loopback ports, real `eventsource` clients and SDK Redis publishers
 * (the harness is support/multinode.ts).
 * There is no load balancer: every client picks its node, and when it has to move (its node died, or the
 * test moves it) it closes its stream and opens one on another node with its last event id, as a browser
 * behind a balancer would.
 *
 * Every check compares what each client received with what the SDK said it stored: per topic, the events
 * whose `send` resolved, ordered by their ids (which strictly increase within a topic and are the publish
 * order). Faults that lose history (a Redis restart without persistence, FLUSHALL) must show up as one
 * `gateway.reset` (stream-lost) between the old epoch's events and the new epoch's, never as silent loss.
 *
 * The fault cases that touch the server itself (restart, CLIENT KILL, FLUSHALL) run only on the
 * redis-server this file spawns, never on a shared REDIS_URL.
 */
import { type Position, parsePosition } from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeAllCollectors, metric } from './support/gateway.js';
import {
  assertBuilt,
  Client,
  closeAllPublishers,
  closePublishers,
  compareEvents,
  type ExpectedReset,
  epochChangeProblems,
  exactProblems,
  type GatewayProcess,
  isReady,
  logTails,
  newPublishers,
  type PublishLog,
  publishProblems,
  runPublishers,
  type Sent,
  startGateways,
  stopGateways,
  WAIT_MS,
  waitForDelivery,
  waitForEach,
  waitForOpen,
} from './support/multinode.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor } from './support/wait.js';

/** This file's Redis is shared only when REDIS_URL is set: then nothing may restart, kill or flush it. */
const SHARED_REDIS = Boolean(process.env.REDIS_URL);
const PREFIX = uniquePrefix('multinode');
const NODE_COUNT = 3;
const TEST_MS = 120_000;
/** Events a client must receive between two steps of a scenario (so each step happens mid-stream). */
const STEP_EVENTS = 20;

let nodes: GatewayProcess[] = [];

/** A client of this file's nodes. */
const newClient = (name: string, topics: readonly string[], node: number) => new Client(nodes, name, topics, node);

// ---------------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------------

describe('multi-node: 3 gateway processes on one Redis, clients on specific nodes', () => {
  let redis: TestRedis;
  let admin: Redis | undefined;

  beforeAll(async () => {
    assertBuilt();
    redis = await startRedis();
    nodes = await startGateways(NODE_COUNT, redis.url, { prefix: PREFIX });
  }, 90_000);

  beforeEach(({ onTestFailed }) => {
    // What the nodes logged (warnings and up) is often the quickest way to the cause of a failure.
    onTestFailed(() => {
      console.warn(logTails(nodes));
    });
  });

  afterAll(async () => {
    closeAllCollectors();
    await closeAllPublishers();
    admin?.disconnect();
    await stopGateways(nodes);
    await redis?.stop().catch(() => {});
  }, 60_000);

  const adminConnection = (): Redis => {
    if (!admin) {
      admin = new Redis(redis.url, { protocol: 2, maxRetriesPerRequest: 3, connectionName: 'multinode-test-admin' });
      // It reconnects by itself after the Redis restart; its errors meanwhile are expected.
      admin.on('error', () => {});
    }
    return admin;
  };

  it(
    '30 clients over 3 nodes, 5 parallel publishers: every event once, in publish order, with the SDK ids',
    async () => {
      const topics = ['fanout/a', 'fanout/b', 'fanout/c'];
      const clients: Client[] = [];
      for (let i = 0; i < 30; i++) {
        const node = i % NODE_COUNT;
        const first = Math.floor(i / NODE_COUNT) % topics.length;
        // Every topic has clients on every node; one client in five follows two topics.
        const followed = [topics[first] as string];
        if (i % 5 === 4) followed.push(topics[(first + 1) % topics.length] as string);
        clients.push(newClient(`c${i}`, followed, node));
      }
      await waitForOpen(clients);

      const publishers = newPublishers(redis.url, 5, { prefix: PREFIX });
      const rounds = 150;
      const run = runPublishers({ publishers, topics, tag: 'p', rounds, window: 8, paceMs: 0 });
      await run.done;
      await closePublishers(publishers);
      expect(run.log.rejected.size).toBe(0);
      expect(run.resolvedCount()).toBe(5 * rounds * topics.length);
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);

      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      // Spelled out: each publisher's sequence of each topic is complete and in order at every client.
      const sequenceProblems: string[] = [];
      for (const client of clients) {
        for (const topic of client.topics) {
          const items = client.items(topic);
          for (let p = 0; p < publishers.length; p++) {
            const ns = items.flatMap((item) =>
              item.kind === 'event' && item.data.split('|')[1] === `p${p}` ? [Number(item.data.split('|')[2])] : [],
            );
            if (ns.length !== rounds || ns.some((n, index) => n !== index)) {
              sequenceProblems.push(
                `${client.name} ${topic} p${p}: ${ns.length} events, not 0..${rounds - 1} in order`,
              );
            }
          }
        }
      }
      expect(sequenceProblems).toEqual([]);
      // Nobody had to reconnect: this is delivery on live connections.
      expect(clients.filter((client) => client.current.opens !== 1).map((client) => client.describe())).toEqual([]);
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it(
    'a client that drops and resumes on a different node with its last id gets no gap and no duplicate (single and multi-topic)',
    async () => {
      const topics = ['resume/a', 'resume/b'];
      const movers = [
        newClient('single-a', ['resume/a'], 0),
        newClient('single-b', ['resume/b'], 1),
        newClient('multi-0', topics, 0),
        newClient('multi-2', topics, 2),
      ];
      const stayers = [newClient('stay-a', ['resume/a'], 2), newClient('stay-ab', topics, 1)];
      const clients = [...movers, ...stayers];
      await waitForOpen(clients);
      const publishers = newPublishers(redis.url, 2, { prefix: PREFIX });
      const run = runPublishers({ publishers, topics, tag: 'r' });
      try {
        // Three hops each (around all three nodes), one of them with the id as query parameter.
        for (const via of ['header', 'query', 'header'] as const) {
          await waitFor(() => movers.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
            timeoutMs: WAIT_MS,
            what: `${STEP_EVENTS} events on every mover's current stream`,
          });
          const ids = movers.map((client) => client.drop());
          // Events published while the clients are away must come from history.
          const mark = run.resolvedCount();
          await waitFor(() => run.resolvedCount() >= mark + STEP_EVENTS, {
            timeoutMs: WAIT_MS,
            what: 'publishing to go on while the clients are away',
          });
          movers.forEach((client, index) => {
            client.open((client.node + 1) % NODE_COUNT, ids[index], via);
          });
        }
        await waitFor(() => movers.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on every mover's last stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      for (const client of movers) {
        expect(client.streams.map((stream) => stream.opens)).toEqual([1, 1, 1, 1]);
        // Every hop went to a different node.
        expect(client.visited.every((node, index) => index === 0 || node !== client.visited[index - 1])).toBe(true);
      }
      expect(stayers.map((client) => client.current.opens)).toEqual([1, 1]);
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'CLIENT KILL TYPE pubsub while publishing: connected clients miss nothing (the nodes refill from the streams)',
    async () => {
      const topics = ['pubsub/a', 'pubsub/b'];
      const clients = [
        newClient('a@0', ['pubsub/a'], 0),
        newClient('b@1', ['pubsub/b'], 1),
        newClient('ab@2', topics, 2),
        newClient('ab@0', topics, 0),
        newClient('a@1', ['pubsub/a'], 1),
        newClient('b@2', ['pubsub/b'], 2),
      ];
      await waitForOpen(clients);
      const redisAdmin = adminConnection();
      const publishers = newPublishers(redis.url, 2, { prefix: PREFIX });
      const run = runPublishers({ publishers, topics, tag: 'k' });
      try {
        for (let kill = 1; kill <= 3; kill++) {
          await waitForEach(clients, () => kill * STEP_EVENTS, `${kill * STEP_EVENTS} events per topic per client`);
          const refills = await Promise.all(
            nodes.map((node) => metric(node.adminUrl, 'sse_gateway_engine_events_total', { counter: 'refills' })),
          );
          const killed = Number(await redisAdmin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'));
          // One subscriber connection per node (nothing else on this server subscribes).
          expect(killed).toBeGreaterThanOrEqual(NODE_COUNT);
          // Each node noticed and reconnected (its refill started) before the next kill.
          await waitFor(
            async () => {
              const now = await Promise.all(
                nodes.map((node) => metric(node.adminUrl, 'sse_gateway_engine_events_total', { counter: 'refills' })),
              );
              return now.every((value, index) => value > (refills[index] as number));
            },
            { timeoutMs: WAIT_MS, what: `every node to refill after CLIENT KILL #${kill}` },
          );
        }
        await waitForEach(clients, () => 4 * STEP_EVENTS, `${4 * STEP_EVENTS} events per topic per client`);
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      // Connected clients: their streams never broke.
      expect(clients.map((client) => [client.current.opens, client.current.errors])).toEqual(clients.map(() => [1, 0]));
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'subscriber away while history is trimmed past a live client: gateway.reset (trimmed), then what history still holds',
    async () => {
      const topics = ['trim/a', 'trim/b'];
      const clients = [
        newClient('a@0', ['trim/a'], 0),
        newClient('a@1', ['trim/a'], 1),
        newClient('ab@2', topics, 2),
        newClient('ab@0', topics, 0),
      ];
      await waitForOpen(clients);
      const redisAdmin = adminConnection();
      // These topics' only publisher keeps 50 events (retention is applied by whoever publishes).
      const keep = 50;
      const [publisher] = newPublishers(redis.url, 1, { prefix: PREFIX, maxLength: keep });
      if (!publisher) throw new Error('no publisher');
      const log: PublishLog = { resolved: new Map(topics.map((topic) => [topic, []])), rejected: new Set() };
      const publish = async (topic: string, name: string, count: number) => {
        const datas = Array.from({ length: count }, (_, n) => `${topic}|${name}|${n}`);
        const ids = await publisher.sendMany(datas.map((data) => ({ topic, event: 'message', data })));
        return datas.map((data, n): Sent => {
          const id = ids[n] as string;
          const sent = {
            topic,
            data,
            id,
            position: parsePosition(id) as Position,
            publisher: name,
            n,
            sentAt: Date.now(),
          };
          log.resolved.get(topic)?.push(sent);
          return sent;
        });
      };
      const before = [...(await publish('trim/a', 'before', 10)), ...(await publish('trim/b', 'before', 5))];
      await waitForDelivery(clients, log);

      const refills = await Promise.all(
        nodes.map((node) => metric(node.adminUrl, 'sse_gateway_engine_events_total', { counter: 'refills' })),
      );
      const [, maxClients = '10000'] = (await redisAdmin.config('GET', 'maxclients')) as string[];
      let burst: Sent[];
      let quiet: Sent[];
      // Keep the killed subscribers out while 200 events go in: the server refuses every new connection
      // (the connections open now, this one and the publisher's included, stay).
      await redisAdmin.config('SET', 'maxclients', '1');
      try {
        expect(Number(await redisAdmin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBe(NODE_COUNT);
        burst = await publish('trim/a', 'burst', 200);
        quiet = await publish('trim/b', 'quiet', 5);
        expect(String(await redisAdmin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).trim()).toBe('');
      } finally {
        await redisAdmin.config('SET', 'maxclients', maxClients);
      }
      await waitFor(
        async () => {
          const now = await Promise.all(
            nodes.map((node) => metric(node.adminUrl, 'sse_gateway_engine_events_total', { counter: 'refills' })),
          );
          return now.every((value, index) => value > (refills[index] as number));
        },
        { timeoutMs: WAIT_MS, what: 'every node to start a refill once its subscriber is back' },
      );
      // The refill is over once the clients have the last burst event: only then may more events come, or
      // they would trim what the refill has yet to read (an honest second reset, but not this test's point).
      await waitForDelivery(clients, log);
      const after = [...(await publish('trim/a', 'after', 10)), ...(await publish('trim/b', 'after', 5))];
      await waitForDelivery(clients, log);
      await closePublishers([publisher]);

      const ofTopic = (sent: readonly Sent[], topic: string) => sent.filter((event) => event.topic === topic);
      const trimmedUpTo = burst[burst.length - keep - 1] as Sent;
      const expected = new Map<string, (Sent | ExpectedReset)[]>([
        [
          'trim/a',
          [
            ...ofTopic(before, 'trim/a'),
            { kind: 'reset', reason: 'trimmed', id: trimmedUpTo.id },
            ...burst.slice(-keep),
            ...ofTopic(after, 'trim/a'),
          ],
        ],
        // Nothing of trim/b was trimmed: the refill brings all of it, without a reset.
        ['trim/b', [...ofTopic(before, 'trim/b'), ...quiet, ...ofTopic(after, 'trim/b')]],
      ]);
      const problems = clients.flatMap((client) => [
        ...client.problems,
        ...client.topics.flatMap((topic) => {
          const difference = compareEvents(client.items(topic), expected.get(topic) ?? []);
          return difference ? [`${client.name} ${topic}: ${difference}`] : [];
        }),
      ]);
      expect(problems).toEqual([]);
      expect(clients.map((client) => [client.current.opens, client.current.errors])).toEqual(clients.map(() => [1, 0]));
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it(
    'kill -9 of a gateway while publishing: its clients resume on the other nodes and lose nothing',
    async () => {
      const topics = ['crash/a', 'crash/b'];
      const victims = [
        newClient('v-a', ['crash/a'], 0),
        newClient('v-b', ['crash/b'], 0),
        newClient('v-ab', topics, 0),
        newClient('v-ab2', topics, 0),
      ];
      const survivors = [
        newClient('s-a', ['crash/a'], 1),
        newClient('s-b', ['crash/b'], 2),
        newClient('s-ab', topics, 1),
      ];
      const clients = [...victims, ...survivors];
      await waitForOpen(clients);
      const victim = nodes[0] as GatewayProcess;
      const publishers = newPublishers(redis.url, 2, { prefix: PREFIX });
      const run = runPublishers({ publishers, topics, tag: 'x' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        await victim.kill('SIGKILL');
        // Each victim saw its stream die (and read whatever arrived before), then moves, like behind a balancer.
        await waitFor(() => victims.every((client) => client.current.errors >= 1), {
          timeoutMs: WAIT_MS,
          what: 'the victims to notice their node died',
        });
        victims.forEach((client, index) => {
          client.moveTo(1 + (index % 2));
        });
        await waitFor(() => victims.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on every victim's new stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
        // The later tests need three nodes again.
        if (!victim.running) await victim.start();
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      expect(victims.map((client) => client.streams.length)).toEqual(victims.map(() => 2));
      expect(survivors.map((client) => [client.current.opens, client.current.errors])).toEqual(
        survivors.map(() => [1, 0]),
      );
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'redis-server down and restarted empty while publishing: every resolved send arrives once, in order; one stream-lost reset between the epochs',
    async () => {
      const topics = ['restart/a', 'restart/b'];
      const clients = [
        newClient('a@0', ['restart/a'], 0),
        newClient('b@1', ['restart/b'], 1),
        newClient('ab@2', topics, 2),
        newClient('ab@0', topics, 0),
        newClient('a@2', ['restart/a'], 2),
        newClient('ab@1', topics, 1),
      ];
      await waitForOpen(clients);
      // Sends give up after 1 s without Redis, so the outage below makes some of them reject.
      const publishers = newPublishers(redis.url, 2, { prefix: PREFIX, maxRetryTimeMs: 1000 });
      const run = runPublishers({ publishers, topics, tag: 'z' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        await redis.stop();
        // The outage lasts until every node says it is not ready, and then until sends made during the
        // outage gave up (besides those in flight when the connection dropped).
        await waitFor(async () => (await Promise.all(nodes.map((node) => isReady(node.url)))).every((ok) => !ok), {
          timeoutMs: WAIT_MS,
          what: 'every node to answer 503 on /readyz',
        });
        const rejectedInFlight = run.log.rejected.size;
        await waitFor(() => run.log.rejected.size > rejectedInFlight, {
          timeoutMs: WAIT_MS,
          what: 'sends made during the outage to reject',
        });
        // Same port, empty server (no persistence): every topic's history is gone.
        await redis.restart();
        const mark = run.resolvedCount();
        await waitFor(() => run.resolvedCount() >= mark + 4 * STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: 'publishing to resume on the restarted Redis',
        });
        await waitFor(async () => (await Promise.all(nodes.map((node) => isReady(node.url)))).every(Boolean), {
          timeoutMs: WAIT_MS,
          what: 'every node ready again',
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: false })).toEqual([]);
      await waitForDelivery(clients, run.log);
      const results = clients.map((client) => epochChangeProblems(client, run.log, { completeBefore: false }));
      expect(results.flatMap((result) => result.problems)).toEqual([]);
      const lost = results.reduce((sum, result) => sum + result.lostBefore, 0);
      console.info(
        `redis restart: ${run.resolvedCount()} sends resolved, ${run.log.rejected.size} rejected; ` +
          `${lost} pre-restart events missed by clients (each followed by its reset)`,
      );
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'FLUSHALL: a client resuming with an old id, and every connected client, get gateway.reset (stream-lost) before new events',
    async () => {
      const topics = ['flush/a', 'flush/b'];
      const connected = [
        newClient('a@0', ['flush/a'], 0),
        newClient('ab@1', topics, 1),
        newClient('b@2', ['flush/b'], 2),
      ];
      // Resume with an old id: one before anything is published again (no stream at all), one after.
      const early = newClient('early-a', ['flush/a'], 0);
      const late = newClient('late-ab', topics, 2);
      const clients = [...connected, early, late];
      await waitForOpen(clients);
      const publishers = newPublishers(redis.url, 2, { prefix: PREFIX });
      const run = runPublishers({ publishers, topics, tag: 'f' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        const earlyId = early.drop();
        const lateId = late.drop();
        await run.pause();
        await waitForDelivery(connected, run.log);
        expect(await adminConnection().flushall()).toBe('OK');

        early.open(1, earlyId);
        await waitFor(() => early.items('flush/a').some((item) => item.stream === 1), {
          timeoutMs: WAIT_MS,
          what: 'the early resumer to get its reset',
        });
        const first = early.items('flush/a').find((item) => item.stream === 1);
        expect(first).toMatchObject({ kind: 'reset', reason: 'stream-lost' });

        run.resume();
        const mark = run.resolvedCount();
        await waitFor(() => run.resolvedCount() >= mark + 2 * STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: 'publishing into the new epoch',
        });
        late.open(0, lateId);
        await waitFor(() => late.receivedOnCurrent() >= STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on the late resumer's new stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: false })).toEqual([]);
      await waitForDelivery(clients, run.log);
      // Connected clients had every old event: theirs must be complete; the resumers left early.
      const problems = [
        ...connected.flatMap((client) => epochChangeProblems(client, run.log, { completeBefore: true }).problems),
        ...[early, late].flatMap((client) => epochChangeProblems(client, run.log, { completeBefore: false }).problems),
      ];
      expect(problems).toEqual([]);
      // The resumers' new streams start with the reset of each topic (before anything of that topic).
      for (const client of [early, late]) {
        for (const topic of client.topics) {
          const first = client.items(topic).find((item) => item.stream === 1);
          expect(first, `${client.name} ${topic}`).toMatchObject({ kind: 'reset', reason: 'stream-lost' });
        }
      }
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );
});
