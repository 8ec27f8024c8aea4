/**
 * The Redis engine against a real redis-server (one per file, a unique key prefix per engine): the shared
 * contract, then what only Redis can do wrong: subscriber disconnects, server restarts, lost streams.
 */
import { encodeLiveMessage, formatPosition, type Position, topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Publication, Retention } from '../src/engine/engine.js';
import { RedisNodeDirectory } from '../src/engine/redis/node-directory.js';
import { RedisEngine } from '../src/engine/redis/redis-engine.js';
import { runClaimStoreContract } from './claim-store-contract.js';
import { EMPTY, events, eventually, expectStrictlyIncreasing, Recorder, runEngineContract } from './engine-contract.js';
import { runNodeDirectoryContract } from './node-directory-contract.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';

let redis: TestRedis;
let admin: Redis;

beforeAll(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url, { protocol: 2, maxRetriesPerRequest: null });
});

afterAll(async () => {
  await admin?.quit().catch(() => admin.disconnect());
  await redis?.stop().catch(() => {});
});

const silent = pino({ level: 'silent' });
/**
 * With REDIS_URL the server may be shared: tests that kill every pub/sub client, restart the server or read
 * server-wide counters would disturb (or be disturbed by) other suites, so they only run on our own server.
 */
const sharedServer = Boolean(process.env.REDIS_URL);

function newEngine(
  retention: Retention,
  prefix = uniquePrefix('engine'),
  extra: Partial<ConstructorParameters<typeof RedisEngine>[0]> = {},
): RedisEngine {
  return new RedisEngine({ target: { kind: 'single', url: redis.url }, prefix, retention, logger: silent, ...extra });
}

/** Removes an engine's keys (SCAN, not FLUSHALL: other suites may share the server). */
async function deletePrefix(prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}

runEngineContract('redis', async (retention) => {
  const prefix = uniquePrefix('contract');
  const engine = newEngine(retention, prefix);
  return {
    engine,
    async cleanup() {
      await engine.close();
      await deletePrefix(prefix);
    },
  };
});

runClaimStoreContract('redis', async () => {
  const prefix = uniquePrefix('claims');
  const engine = newEngine({ maxLength: 0, maxAgeMs: 0 }, prefix);
  await engine.start(() => {});
  return {
    store: engine,
    async cleanup() {
      await engine.close();
      await deletePrefix(prefix);
    },
  };
});

describe('redis engine', () => {
  let engine: RedisEngine;
  let prefix: string;
  let recorder: Recorder;

  async function start(
    retention: Retention = { maxLength: 0, maxAgeMs: 0 },
    extra: Partial<ConstructorParameters<typeof RedisEngine>[0]> = {},
  ): Promise<void> {
    prefix = uniquePrefix('redis-engine');
    engine = newEngine(retention, prefix, extra);
    recorder = new Recorder();
    await engine.start(recorder.sink);
  }

  afterEach(async () => {
    await engine?.close();
    if (prefix) await deletePrefix(prefix);
  });

  it('never lets a foreign publisher break the SSE framing with a CR/LF event name', async () => {
    await start();
    const topic = 'foreign';
    await engine.subscribe(topic);
    const keys = topicKeys(prefix, topic);
    await admin.set(keys.epoch, 'abc');
    const id = await admin.xadd(keys.stream, '*', 'e', 'x\ndata: forged', 'd', 'payload');
    await admin.publish(keys.channel, `1\nabc\n${id}\nx\ndata: forged\npayload`);
    await eventually(() => expect(recorder.of(topic)).toHaveLength(1));
    // The live message's event name ends at the first LF: it decodes as 'x' with data 'data: forged\npayload'.
    expect(recorder.of(topic)[0]?.event).not.toMatch(/[\r\n]/);
    const page = await engine.readAfter(topic, EMPTY, 10);
    expect(page.kind === 'events' && page.events.map((event) => event.event)).toEqual(['message']);
  });

  /** An entry appended behind the engine's back: its live message is "lost" (never published). */
  async function appendWithoutLiveMessage(topic: string, data: string): Promise<void> {
    await admin.xadd(topicKeys(prefix, topic).stream, '*', 'e', 'tick', 'd', data);
  }

  it('refills when a live message names a predecessor it never got, without any disconnect', async () => {
    await start();
    await engine.subscribe('gap');
    await engine.publish([{ topic: 'gap', event: 'tick', data: 'first' }]);
    await eventually(() => expect(recorder.dataOf('gap')).toEqual(['first']));
    await appendWithoutLiveMessage('gap', 'lost-live');
    await engine.publish([{ topic: 'gap', event: 'tick', data: 'third' }]);
    await eventually(() => expect(recorder.dataOf('gap')).toEqual(['first', 'lost-live', 'third']));
    expect(engine.stats.gapsDetected).toBeGreaterThanOrEqual(1);
    expectStrictlyIncreasing(recorder.of('gap').map((p) => p.position));
  });

  it('tells the gap sink (ahead) when history was rewound under a live topic, and reads say so too', async () => {
    prefix = uniquePrefix('redis-engine');
    engine = newEngine({ maxLength: 0, maxAgeMs: 0 }, prefix);
    recorder = new Recorder();
    const gaps: Array<{ reason: string; position: Position }> = [];
    await engine.start(recorder.sink, (_topic, reason, position) => gaps.push({ reason, position }));
    await engine.subscribe('rewind');
    const [first, second] = await engine.publish(events('rewind', 2));
    await eventually(() => expect(recorder.dataOf('rewind')).toHaveLength(2));
    // What a failover to a replica that only had `first` looks like: the next entry names `first` as its
    // predecessor although `second` was delivered.
    const keys = topicKeys(prefix, 'rewind');
    const a = first as Position;
    const b = second as Position;
    const next = { epoch: b.epoch, ms: b.ms + 1000, seq: 0 };
    await admin.xadd(keys.stream, `${next.ms}-0`, 'e', 'tick', 'd', 'after-failover', 'p', `${a.ms}-${a.seq}`);
    await admin.publish(
      keys.channel,
      encodeLiveMessage({ ...next, prev: { ms: a.ms, seq: a.seq }, event: 'tick', data: 'after-failover' }),
    );
    await eventually(() => expect(recorder.dataOf('rewind')).toEqual(['rewind#0', 'rewind#1', 'after-failover']));
    expect(gaps).toEqual([{ reason: 'ahead', position: a }]);
    // A client resuming from `second` is told too, and resumes after the entry history has.
    expect(await engine.readAfter('rewind', b, 10)).toEqual({ kind: 'reset', reason: 'ahead', position: a });
    expect((await engine.readAfter('rewind', a, 10)).kind).toBe('events');
  });

  it('finds a lost live message on an idle topic with the periodic head check', async () => {
    await start({ maxLength: 0, maxAgeMs: 0 }, { headCheckIntervalMs: 200 });
    await engine.subscribe('quiet');
    await engine.publish([{ topic: 'quiet', event: 'tick', data: 'first' }]);
    await eventually(() => expect(recorder.dataOf('quiet')).toEqual(['first']));
    await appendWithoutLiveMessage('quiet', 'lost-live');
    await eventually(() => expect(recorder.dataOf('quiet')).toEqual(['first', 'lost-live']));
    expect(engine.stats.gapsDetected).toBeGreaterThanOrEqual(1);
  });

  it('lets the keys of an idle topic expire (TOPIC_IDLE_TTL_MS), and answers stream-lost for its old ids', async () => {
    await start({ maxLength: 0, maxAgeMs: 0 }, { topicIdleTtlMs: 400 });
    const [position] = await engine.publish([{ topic: 'ttl', event: 'tick', data: 'x' }]);
    const keys = topicKeys(prefix, 'ttl');
    for (const key of [keys.stream, keys.epoch]) {
      const ttl = await admin.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(400);
    }
    await eventually(async () => expect(await admin.exists(keys.stream, keys.epoch)).toBe(0), 15_000, 50);
    const page = await engine.readAfter('ttl', position as Position, 10);
    expect(page).toMatchObject({ kind: 'reset', reason: 'stream-lost' });
    const [next] = await engine.publish([{ topic: 'ttl', event: 'tick', data: 'y' }]);
    expect(next?.epoch).not.toBe(position?.epoch);
  });

  it('is ready once both connections are up, and not after close', async () => {
    await start();
    expect(engine.isReady()).toBe(true);
    await engine.close();
    expect(engine.isReady()).toBe(false);
  });

  it.skipIf(sharedServer)('refills every subscribed topic after the subscriber connection is killed', async () => {
    await start();
    const topics = ['kill/a', 'kill/b', 'kill/c'];
    await Promise.all(topics.map((topic) => engine.subscribe(topic)));
    const published = new Map<string, Position[]>(topics.map((topic) => [topic, []]));
    const publishRound = async (round: number) => {
      for (const topic of topics) {
        published.get(topic)?.push(...(await engine.publish(events(topic, 5, round * 5))));
      }
    };
    await publishRound(0);
    await eventually(() => expect(recorder.received).toHaveLength(15));

    // Kill the subscriber; what is published before it is back exists only in the streams.
    const killed = await (admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub') as Promise<number>);
    expect(killed).toBeGreaterThanOrEqual(1);
    await publishRound(1);
    await publishRound(2);
    await eventually(() => expect(engine.stats.refills).toBeGreaterThanOrEqual(topics.length));
    await publishRound(3);

    for (const topic of topics) {
      const expected = published.get(topic) as Position[];
      await eventually(() => expect(recorder.of(topic).map((p) => p.position)).toEqual(expected));
      expect(recorder.dataOf(topic)).toEqual(events(topic, 20).map((e) => e.data));
    }
    expect(engine.stats.resets).toBe(0);
  });

  it.skipIf(sharedServer)('keeps delivery exact while publishes race repeated subscriber kills', async () => {
    await start();
    const topics = ['race/a', 'race/b'];
    await Promise.all(topics.map((topic) => engine.subscribe(topic)));
    const published = new Map<string, Position[]>(topics.map((topic) => [topic, []]));
    let stop = false;
    const publishers = topics.map(async (topic) => {
      for (let n = 0; !stop; n++) {
        const [position] = await engine.publish([{ topic, event: 'tick', data: `${topic}#${n}` }]);
        published.get(topic)?.push(position as Position);
      }
    });
    const total = () => [...published.values()].reduce((sum, positions) => sum + positions.length, 0);
    for (let kill = 1; kill <= 3; kill++) {
      await eventually(() => expect(total()).toBeGreaterThanOrEqual(kill * 60), 30_000);
      await (admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub') as Promise<number>);
      await eventually(() => expect(engine.stats.refills).toBeGreaterThanOrEqual(kill * topics.length), 30_000);
    }
    stop = true;
    await Promise.all(publishers);
    for (const topic of topics) {
      const expected = published.get(topic) as Position[];
      await eventually(() => expect(recorder.of(topic).length).toBeGreaterThanOrEqual(expected.length), 30_000);
      expect(recorder.of(topic).map((p) => p.position)).toEqual(expected);
    }
    expect(engine.stats.resets).toBe(0);
  });

  it.skipIf(sharedServer)('sends the SUBSCRIBEs of one event-loop turn as one command', async () => {
    await start();
    const subscribeCalls = async () => {
      const info = await admin.info('commandstats');
      return Number(/cmdstat_subscribe:calls=(\d+)/.exec(info)?.[1] ?? 0);
    };
    const before = await subscribeCalls();
    const topics = Array.from({ length: 50 }, (_, index) => `many/${index}`);
    await Promise.all(topics.map((topic) => engine.subscribe(topic)));
    expect((await subscribeCalls()) - before).toBe(1);
    const positions = await engine.publish(topics.map((topic) => ({ topic, event: 'tick', data: topic })));
    await eventually(() => expect(recorder.received.map((p) => p.position)).toEqual(positions));
  });

  it.skipIf(sharedServer)(
    'delivers every publish that resolved exactly once across a redis-server restart',
    async () => {
      await start();
      await engine.subscribe('restart');
      const resolved: Position[] = [];
      let failed = 0;
      let stop = false;
      let counter = 0;
      const publisher = (async () => {
        while (!stop) {
          try {
            const [position] = await engine.publish([{ topic: 'restart', event: 'tick', data: `#${counter++}` }]);
            resolved.push(position as Position);
          } catch {
            failed++; // Rejected while Redis was away: allowed, as long as resolved ones are never lost.
          }
        }
      })();

      await eventually(() => expect(resolved.length).toBeGreaterThanOrEqual(50), 30_000);
      const beforeRestart = resolved.length;
      await redis.restart();
      await eventually(() => expect(resolved.length).toBeGreaterThanOrEqual(beforeRestart + 50), 30_000);
      stop = true;
      await publisher;

      const key = (p: Position) => formatPosition(p);
      await eventually(() => {
        const delivered = new Set(recorder.of('restart').map((p) => key(p.position)));
        expect(resolved.filter((p) => !delivered.has(key(p)))).toEqual([]);
      }, 30_000);
      const delivered = recorder.of('restart').map((p) => key(p.position));
      expect(new Set(delivered).size).toBe(delivered.length);
      // The restart lost the stream (no persistence): the events after it carry a new epoch, each in order.
      const epochs = [...new Set(recorder.of('restart').map((p) => p.position.epoch))];
      expect(epochs.length).toBeGreaterThanOrEqual(2);
      for (const epoch of epochs) {
        expectStrictlyIncreasing(
          recorder
            .of('restart')
            .filter((p) => p.position.epoch === epoch)
            .map((p) => p.position),
        );
      }
      expect(failed).toBeGreaterThanOrEqual(0);
    },
  );

  it('reports a lost stream when its keys disappear, and starts a new epoch on the next publish', async () => {
    await start();
    await engine.subscribe('gone');
    const before = await engine.publish(events('gone', 3));
    const last = before[2] as Position;
    await eventually(() => expect(recorder.of('gone')).toHaveLength(3));

    const keys = topicKeys(prefix, 'gone');
    await admin.del(keys.stream, keys.epoch);
    expect(await engine.head('gone')).toEqual(EMPTY);
    expect(await engine.readAfter('gone', last, 10)).toEqual({ kind: 'reset', reason: 'stream-lost', position: EMPTY });

    const [fresh] = (await engine.publish(events('gone', 1, 3))) as [Position];
    expect(fresh.epoch).not.toBe(last.epoch);
    expect(await engine.readAfter('gone', last, 10)).toEqual({
      kind: 'reset',
      reason: 'stream-lost',
      position: { epoch: fresh.epoch, ms: 0, seq: 0 },
    });
    const page = await engine.readAfter('gone', { epoch: fresh.epoch, ms: 0, seq: 0 }, 10);
    expect(page.kind === 'events' && page.events.map((p: Publication) => p.position)).toEqual([fresh]);
    await eventually(() => expect(recorder.of('gone').at(-1)?.position).toEqual(fresh));
    expect(recorder.of('gone')).toHaveLength(4);
  });

  it('trims exactly and records the newest removed entry, by length and by age', async () => {
    await start({ maxLength: 3, maxAgeMs: 60_000 });
    const keys = topicKeys(prefix, 'retention');
    const positions = await engine.publish(events('retention', 10));
    expect(await admin.xlen(keys.stream)).toBe(3);
    expect(await engine.readAfter('retention', positions[0] as Position, 10)).toMatchObject({
      kind: 'reset',
      reason: 'trimmed',
      position: positions[6],
    });

    // Age: an entry far in the past (added by hand) leaves history with the next publish.
    const epoch = (positions[0] as Position).epoch;
    const agedPrefix = uniquePrefix('aged');
    const aged = topicKeys(agedPrefix, 'old');
    await admin.set(aged.epoch, epoch);
    await admin.xadd(aged.stream, '1000-0', 'e', 'tick', 'd', 'ancient');
    const other = newEngine({ maxLength: 0, maxAgeMs: 60_000 }, agedPrefix);
    try {
      await other.start(() => {});
      const [fresh] = await other.publish(events('old', 1));
      expect(await admin.xlen(aged.stream)).toBe(1);
      expect(await other.readAfter('old', EMPTY, 10)).toEqual({
        kind: 'reset',
        reason: 'trimmed',
        position: { epoch, ms: 1000, seq: 0 },
      });
      const page = await other.readAfter('old', { epoch, ms: 1000, seq: 0 }, 10);
      expect(page.kind === 'events' && page.events.map((p) => p.position)).toEqual([fresh]);
    } finally {
      await other.close();
      await deletePrefix(agedPrefix);
    }
  });

  it.skipIf(sharedServer)('counts nothing against Redis on a clean run, and exposes its stats', async () => {
    await start();
    await engine.subscribe('stats');
    await engine.publish(events('stats', 2));
    await eventually(() => expect(recorder.of('stats')).toHaveLength(2));
    // One read for the subscription's head, one pipelined publish.
    expect(engine.stats).toEqual({ refills: 0, resets: 0, redisErrors: 0, roundTrips: 2, gapsDetected: 0 });
  });
});

runNodeDirectoryContract('redis', async () => {
  const prefix = uniquePrefix('directory');
  return {
    directoryOfNode: () => new RedisNodeDirectory(admin, prefix),
    loseCounts: async (nodeId) => {
      await admin.del(`${prefix}gw:node:{${nodeId}}:consumers`);
    },
    cleanup: () => deletePrefix(prefix),
  };
});
