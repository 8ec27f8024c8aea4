/**
 * The Redis transport on real topologies: a Sentinel group (publishing through redis+sentinel://, and on after
 * a failover) and a Redis Cluster (SPUBLISH to the slot owner, per-topic order while a busy topic's slot
 * moves). Waits are on conditions with generous deadlines; each test has its own key prefix.
 */
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniquePrefix } from '../../gateway/test/support/redis-server.js';
import {
  type RedisClusterFixture,
  type RedisNode,
  type SentinelGroup,
  slotOf,
  startRedisCluster,
  startSentinelGroup,
} from '../../gateway/test/support/redis-topology.js';
import { waitFor } from '../../gateway/test/support/wait.js';
import { createPublisher, NetworkError, type Publisher, parseRedisUrl, RedisTransport } from '../src/index.js';
import { encodeLiveMessage, type Position, parsePosition, topicKeys } from '../src/protocol.js';

/** Building a topology on a loaded 2-core CI box: spawn, sync, discovery, agreement. */
const TOPOLOGY_TIMEOUT_MS = 120_000;
/** A failover: detection, election, promotion, sentinels agreeing, the client reconnecting. */
const FAILOVER_TEST_TIMEOUT_MS = 180_000;
/** Waiting for something Redis or the client will do soon (a message, a reconnect). */
const CONDITION_TIMEOUT_MS = 30_000;

function position(id: string): Position {
  const parsed = parsePosition(id);
  if (!parsed) throw new Error(`not an event id: ${id}`);
  return parsed;
}

function streamId(id: string): string {
  const p = position(id);
  return `${p.ms}-${p.seq}`;
}

/** A plain connection to one node (no cluster routing, no retries past a dead node). */
function nodeClient(node: { host: string; port: number }): Redis {
  const client = new Redis({ host: node.host, port: node.port, protocol: 2, maxRetriesPerRequest: 3 });
  client.on('error', () => {});
  return client;
}

/** [entry id, data] of every entry of a stream, read on the node that holds it. */
async function entries(node: { host: string; port: number }, stream: string): Promise<[string, string][]> {
  const client = nodeClient(node);
  try {
    const raw = await client.xrange(stream, '-', '+');
    return raw.map(([id, fields]) => [id, fields[fields.indexOf('d') + 1] as string]);
  } finally {
    client.disconnect();
  }
}

/** The `name=` connections on a node (CLIENT LIST), to see where a publisher is connected. */
async function connectionsNamed(node: { host: string; port: number }, name: string): Promise<number> {
  const client = nodeClient(node);
  try {
    const list = String(await client.client('LIST'));
    return list.split('\n').filter((line) => line.includes(` name=${name} `)).length;
  } finally {
    client.disconnect();
  }
}

describe('Redis Sentinel', () => {
  let group: SentinelGroup;
  const publishers: Publisher[] = [];

  beforeAll(async () => {
    group = await startSentinelGroup();
  }, TOPOLOGY_TIMEOUT_MS);

  afterAll(async () => {
    await Promise.all(publishers.splice(0).map((p) => p.close()));
    await group?.stop();
  });

  it('stores on the primary and publishes the live message with PUBLISH', async () => {
    const prefix = uniquePrefix('sdk-sentinel');
    const publisher = createPublisher({ redis: group.url, prefix, topic: 'news' });
    publishers.push(publisher);
    const primary = await group.currentPrimary();
    const subscriber = nodeClient(primary);
    try {
      const keys = topicKeys(prefix, 'news');
      const received = new Promise<string>((resolve) => subscriber.once('message', (_channel, text) => resolve(text)));
      await subscriber.subscribe(keys.channel);
      const id = await publisher.send('headline', { n: 1 });
      const p = position(id);
      expect(await received).toBe(
        encodeLiveMessage({ ...p, prev: { ms: 0, seq: 0 }, event: 'headline', data: '{"n":1}' }),
      );
      expect(await entries(primary, keys.stream)).toEqual([[streamId(id), '{"n":1}']]);
    } finally {
      subscriber.disconnect();
    }
  });

  it('minReplicas: resolves once the replica has the writes; a frozen replica makes sends maybeStored', async () => {
    const prefix = uniquePrefix('sdk-wait');
    const publisher = createPublisher({
      redis: group.url,
      prefix,
      topic: 'durable',
      minReplicas: 1,
      replicaTimeoutMs: 300,
    });
    publishers.push(publisher);
    const primary = await group.currentPrimary();
    const replica = [group.primary, ...group.replicas].find((node) => node.port !== primary.port);
    if (!replica) throw new Error('no replica');
    const id = await publisher.send('tick', 'confirmed');
    // Confirmed by WAIT: the replica has it already.
    expect(await entries(replica, topicKeys(prefix, 'durable').stream)).toEqual([[streamId(id), 'confirmed']]);
    replica.freeze();
    try {
      const error = await publisher.send('tick', 'unconfirmed', { idempotencyKey: 'u-1' }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(NetworkError);
      expect((error as NetworkError).maybeStored).toBe(true);
      expect((error as Error).message).toContain('0 of 1 replicas');
    } finally {
      replica.thaw();
    }
    // The retry with the same key stores nothing new and is confirmed once the replica caught up.
    const retried = await waitFor(
      () => publisher.send('tick', 'unconfirmed', { idempotencyKey: 'u-1' }).catch(() => undefined),
      { what: 'the retried send to be confirmed', timeoutMs: CONDITION_TIMEOUT_MS },
    );
    const stored = await entries(primary, topicKeys(prefix, 'durable').stream);
    expect(stored.map(([, data]) => data)).toEqual(['confirmed', 'unconfirmed']);
    expect(streamId(retried)).toBe(stored[1]?.[0]);
    expect(() => createPublisher({ redis: 'redis+cluster://127.0.0.1:1', minReplicas: 1 })).toThrow(
      'minReplicas is not supported on Redis Cluster',
    );
  });

  it(
    'keeps publishing after a failover: every event sent after it is on the new primary exactly once',
    async () => {
      const prefix = uniquePrefix('sdk-sentinel');
      const connectionName = `sdk-failover-${prefix.split(':')[2]}`;
      const transport = new RedisTransport({ redis: group.url, prefix, connectionName });
      const stream = topicKeys(prefix, 'orders').stream;
      const event = (data: string) => ({ topic: 'orders', event: 'n', data });
      try {
        const before = await transport.publish(['b1', 'b2', 'b3'].map(event));
        const previous = await group.currentPrimary();
        // Replicated before the failover, so the new primary has them (replication is asynchronous).
        const admin = nodeClient(previous);
        try {
          expect(await admin.wait(group.replicas.length, CONDITION_TIMEOUT_MS)).toBe(group.replicas.length);
        } finally {
          admin.disconnect();
        }

        const next = await group.failover();
        expect(next).not.toEqual(previous);
        // The same transport finds the new primary by itself (failover detector, Sentinel); until it has, a
        // send may still reach the old one, whose writes the resync discards (Redis replication's own limit).
        await waitFor(
          async () =>
            (await connectionsNamed(next, connectionName)) === 1 &&
            (await connectionsNamed(previous, connectionName)) === 0,
          { timeoutMs: CONDITION_TIMEOUT_MS, what: `the publisher's connection to move to ${next.host}:${next.port}` },
        );

        const after: string[] = [];
        for (let n = 1; n <= 20; n++) after.push(...(await transport.publish([event(`a${n}`)])));
        after.push(...(await transport.publish(['a21', 'a22', 'a23'].map(event))));

        const stored = await entries(next, stream);
        const expected = [...before, ...after];
        expect(stored.map(([id]) => id)).toEqual(expected.map(streamId));
        expect(stored.map(([, data]) => data)).toEqual([
          'b1',
          'b2',
          'b3',
          ...Array.from({ length: 23 }, (_, index) => `a${index + 1}`),
        ]);
      } finally {
        await transport.close();
      }
    },
    FAILOVER_TEST_TIMEOUT_MS,
  );
});

describe('Redis Cluster', () => {
  let cluster: RedisClusterFixture;

  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, TOPOLOGY_TIMEOUT_MS);

  afterAll(async () => {
    await cluster?.stop();
  });

  /** One topic per primary: named `<stem>-<n>`, the first whose slot that primary owns. */
  async function topicPerPrimary(prefix: string, stem: string): Promise<Map<RedisNode, string>> {
    const found = new Map<RedisNode, string>();
    for (let n = 0; found.size < cluster.primaries.length && n < 10_000; n++) {
      const topic = `${stem}-${n}`;
      const owner = await cluster.slotOwner(slotOf(topicKeys(prefix, topic).stream));
      if (!found.has(owner)) found.set(owner, topic);
    }
    expect(found.size).toBe(cluster.primaries.length);
    return found;
  }

  /** SSUBSCRIBEs on the owner of each topic's slot and collects the live messages per topic. */
  async function shardedSubscribers(prefix: string, topics: Map<RedisNode, string>) {
    const clients: Redis[] = [];
    const received = new Map<string, string[]>();
    for (const [owner, topic] of topics) {
      const client = nodeClient(owner);
      clients.push(client);
      const channel = topicKeys(prefix, topic).channel;
      received.set(topic, []);
      client.on('smessage', (from: string, text: string) => {
        if (from === channel) received.get(topic)?.push(text);
      });
      await client.ssubscribe(channel);
    }
    const close = () => {
      for (const client of clients) client.disconnect();
    };
    return { received, close };
  }

  it('stores each topic in its slot owner and publishes with SPUBLISH, for a URL and for a Cluster given', async () => {
    const prefix = uniquePrefix('sdk-cluster');
    const topics = await topicPerPrimary(prefix, 'spread');
    const subscribers = await shardedSubscribers(prefix, topics);
    const publisher = createPublisher({ redis: cluster.url, prefix });
    // As the gateway does: its own ioredis Cluster, handed to the transport (SPUBLISH picked from isCluster).
    const own = new Cluster(
      cluster.nodes.map(({ host, port }) => ({ host, port })),
      { redisOptions: { protocol: 2 } },
    );
    const given = new RedisTransport({ redis: own, prefix });
    try {
      const items = [...topics.values()].flatMap((topic) => [
        { topic, event: 'via-url', data: `${topic} 1` },
        { topic, event: 'via-url', data: `${topic} 2` },
      ]);
      const ids = await publisher.sendMany(items);
      await waitFor(() => own.status === 'ready', {
        timeoutMs: CONDITION_TIMEOUT_MS,
        what: 'the given Cluster to connect',
      });
      const givenIds = await given.publish(
        [...topics.values()].map((topic) => ({ topic, event: 'given', data: topic })),
      );

      for (const [owner, topic] of topics) {
        const stream = topicKeys(prefix, topic).stream;
        const mine = ids.filter((_, index) => items[index]?.topic === topic);
        const givenId = givenIds[[...topics.values()].indexOf(topic)] as string;
        expect(await entries(owner, stream)).toEqual([
          [streamId(mine[0] as string), `${topic} 1`],
          [streamId(mine[1] as string), `${topic} 2`],
          [streamId(givenId), topic],
        ]);
        const first = position(mine[0] as string);
        const second = position(mine[1] as string);
        const third = position(givenId);
        const expected = [
          encodeLiveMessage({ ...first, prev: { ms: 0, seq: 0 }, event: 'via-url', data: `${topic} 1` }),
          encodeLiveMessage({ ...second, prev: first, event: 'via-url', data: `${topic} 2` }),
          encodeLiveMessage({ ...third, prev: second, event: 'given', data: topic }),
        ];
        await waitFor(() => subscribers.received.get(topic)?.length === expected.length, {
          timeoutMs: CONDITION_TIMEOUT_MS,
          what: `3 sharded live messages of ${topic} on ${owner.url}`,
        });
        expect(subscribers.received.get(topic)).toEqual(expected);
      }
    } finally {
      subscribers.close();
      await publisher.close();
      await given.close();
      own.disconnect();
    }
  });

  it('stores a busy topic in send order, each event once, while its slot moves to another primary', async () => {
    const prefix = uniquePrefix('sdk-cluster');
    const topic = 'busy';
    const stream = topicKeys(prefix, topic).stream;
    const slot = slotOf(stream);
    const source = await cluster.slotOwner(slot);
    const target = cluster.primaries.find((node) => node !== source) as RedisNode;
    // No retention: every event must still be there to be counted.
    const transport = new RedisTransport({ redis: parseRedisUrl(cluster.url), prefix, maxLength: 0 });

    // Every send gets the next number; single sends and small batches, a third of them with idempotency
    // keys (a keyed call is refused with TRYAGAIN mid-migration while an unkeyed one runs).
    let next = 0;
    const resolved = new Map<number, string>();
    const failures: Error[] = [];
    let stop = false;
    let moving = false;
    let resolvedWhileMoving = 0;
    const item = (n: number) => ({
      topic,
      event: 'n',
      data: String(n),
      idempotencyKey: n % 3 === 0 ? `k${n}` : undefined,
    });
    async function sendLoop(batchSize: number): Promise<void> {
      while (!stop) {
        const numbers = Array.from({ length: batchSize }, () => next++);
        try {
          const ids = await transport.publish(numbers.map(item));
          for (const [index, n] of numbers.entries()) resolved.set(n, ids[index] as string);
          if (moving) resolvedWhileMoving += numbers.length;
        } catch (error) {
          failures.push(error as Error);
        }
      }
    }

    try {
      // The transport waits for the cluster to be ready: one event before the loops start.
      await transport.publish([item(next++)]);
      const loops = [1, 1, 1, 1, 3, 5].map((size) => sendLoop(size));
      // A few hundred idempotency keys in the slot: MIGRATE moves them in several batches, so the slot
      // spends a while half moved (ASK for some keys, TRYAGAIN for calls whose keys are split).
      await waitFor(() => resolved.size >= 600, {
        timeoutMs: CONDITION_TIMEOUT_MS,
        what: '600 events before the move',
      });
      moving = true;
      await cluster.moveSlot(slot, target);
      moving = false;
      const atMove = resolved.size;
      await waitFor(() => resolved.size >= atMove + 200, {
        timeoutMs: CONDITION_TIMEOUT_MS,
        what: '200 events after the move',
      });
      stop = true;
      await Promise.all(loops);

      expect(failures).toEqual([]);
      expect(await cluster.slotOwner(slot)).toBe(target);
      const stored = await entries(target, stream);
      const numbers = stored.map(([, data]) => Number(data));
      // Each event once, in send order: the numbers only grow.
      expect(new Set(numbers).size).toBe(numbers.length);
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
      // Every resolved id is the entry of its event.
      const byNumber = new Map(stored.map(([id, data]) => [Number(data), id]));
      for (const [n, id] of resolved) expect(byNumber.get(n), `event ${n}`).toBe(streamId(id));
      // The warm-up event and the resolved ones are all there is (nothing was stored for a failed send).
      expect(stored.length).toBe(resolved.size + 1);
      console.info(
        `slot ${slot} moved ${source.port} -> ${target.port}: ${stored.length} events, ${resolvedWhileMoving} resolved during the move`,
      );
    } finally {
      stop = true;
      await transport.close();
    }
  });

  it('stores a batch bigger than one pipeline in order, topics interleaved', async () => {
    const prefix = uniquePrefix('sdk-cluster');
    const topics = [...(await topicPerPrimary(prefix, 'big')).entries()];
    const publisher = createPublisher({ redis: cluster.url, prefix });
    try {
      // 2500 events per topic: several pipelines of one lane, in a row.
      const items = Array.from({ length: 7500 }, (_, n) => ({
        topic: (topics[n % topics.length] as [RedisNode, string])[1],
        data: String(n),
        idempotencyKey: n % 7 === 0 ? `k${n}` : undefined,
      }));
      const ids = await publisher.sendMany(items);
      for (const [owner, topic] of topics) {
        const stored = await entries(owner, topicKeys(prefix, topic).stream);
        const mine = items.flatMap((item, n) =>
          item.topic === topic ? [[streamId(ids[n] as string), item.data]] : [],
        );
        // Retention keeps the newest 1000.
        expect(stored).toEqual(mine.slice(-1000));
      }
    } finally {
      await publisher.close();
    }
  });

  // Last: it leaves the cluster with one primary dead (its replica took over).
  it(
    'rejects the publish in flight on a primary that dies with maybeStored, and holds later ones until the failover',
    async () => {
      const prefix = uniquePrefix('sdk-cluster');
      const topic = 'doomed';
      const stream = topicKeys(prefix, topic).stream;
      const slot = slotOf(stream);
      const owner = await cluster.slotOwner(slot);
      // Long enough for failure detection and a replica's election on a loaded box.
      const transport = new RedisTransport({
        redis: cluster.url,
        prefix,
        maxLength: 0,
        maxRetryTimeMs: FAILOVER_TEST_TIMEOUT_MS,
      });
      let next = 0;
      const resolved = new Map<number, string>();
      const failures: Error[] = [];
      let stop = false;
      async function sendLoop(): Promise<void> {
        while (!stop) {
          const n = next++;
          try {
            const [id] = await transport.publish([{ topic, event: 'n', data: String(n) }]);
            resolved.set(n, id as string);
          } catch (error) {
            failures.push(error as Error);
          }
        }
      }
      try {
        await transport.publish([{ topic, event: 'n', data: String(next++) }]);
        // Frozen, the primary takes the publish into its socket and never answers; then it dies.
        owner.freeze();
        const inFlight = transport.publish([{ topic, event: 'n', data: 'in flight' }]).then(
          () => undefined,
          (error: unknown) => error,
        );
        await owner.kill('SIGKILL');
        const error = await inFlight;
        expect(error).toBeInstanceOf(NetworkError);
        expect((error as NetworkError).maybeStored).toBe(true);

        // Publishes made while the slot has no live primary wait (they were never written) instead of failing.
        const loops = [sendLoop(), sendLoop(), sendLoop()];
        await waitFor(() => resolved.size >= 100, {
          timeoutMs: FAILOVER_TEST_TIMEOUT_MS,
          what: `100 publishes after ${owner.url} died`,
        });
        stop = true;
        await Promise.all(loops);
        expect(failures).toEqual([]);

        // The node asked may not have heard of the promotion yet, although the publisher has.
        const promoted = await waitFor(
          async () => {
            const current = await cluster.slotOwner(slot);
            return current !== owner ? current : undefined;
          },
          { timeoutMs: CONDITION_TIMEOUT_MS, what: `every live node to name a new owner of slot ${slot}` },
        );
        expect(promoted).not.toBe(owner);
        const numbers = (await entries(promoted, stream))
          .map(([id, data]) => [id, Number(data)] as const)
          .filter(([, n]) => resolved.has(n));
        expect(numbers.map(([id]) => id)).toEqual(
          [...resolved.entries()].sort(([a], [b]) => a - b).map(([, id]) => streamId(id)),
        );
      } finally {
        stop = true;
        await transport.close();
      }
    },
    FAILOVER_TEST_TIMEOUT_MS,
  );

  it('rejects with NetworkError, maybeStored false, when the cluster cannot be reached in time', async () => {
    const transport = new RedisTransport({ redis: 'redis+cluster://127.0.0.1:1', maxRetryTimeMs: 300 });
    try {
      const error = await transport.publish([{ topic: 'x', event: 'n', data: '1' }]).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(NetworkError);
      expect((error as NetworkError).maybeStored).toBe(false);
    } finally {
      await transport.close();
    }
  });
});
