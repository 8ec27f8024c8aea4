/** The Redis transport against a real redis-server: ids, pipelining, idempotency, retention and typed errors. */
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis, uniquePrefix } from '../../gateway/test/support/redis-server.js';
import {
  createPublisher,
  NetworkError,
  type Publisher,
  parseRedisUrl,
  RedisTransport,
  ServerError,
  ValidationError,
} from '../src/index.js';
import { type Position, parsePosition, topicKeys } from '../src/protocol.js';

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

async function deletePrefix(prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}

/** A loopback port nobody listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function position(id: string): Position {
  const parsed = parsePosition(id);
  if (!parsed) throw new Error(`not an event id: ${id}`);
  return parsed;
}

function streamId(id: string): string {
  const p = position(id);
  return `${p.ms}-${p.seq}`;
}

/** Retries `check` until it stops throwing or the deadline passes (conditions, not sleeps). */
async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() >= deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('redis transport', () => {
  let prefix: string;
  const publishers: Publisher[] = [];

  function publisher(options: Record<string, unknown> = {}): Publisher {
    const created = createPublisher({ redis: redis.url, prefix, topic: 'clock', ...options });
    publishers.push(created);
    return created;
  }

  afterEach(async () => {
    await Promise.all(publishers.splice(0).map((p) => p.close()));
    // SCAN + DEL, never FLUSHALL: the server may be shared (REDIS_URL).
    if (prefix) await deletePrefix(prefix);
  });

  it('stores an event and answers its id', async () => {
    prefix = uniquePrefix('sdk');
    const id = await publisher().send('tick', { n: 1 });
    expect(id).toMatch(/^[0-9a-z]{1,16}:\d+-\d+$/);
    const keys = topicKeys(prefix, 'clock');
    const entries = await admin.xrange(keys.stream, '-', '+');
    expect(entries).toEqual([[streamId(id), ['e', 'tick', 'd', '{"n":1}', 'p', '0-0']]]);
    expect(await admin.get(keys.epoch)).toBe(position(id).epoch);
  });

  it('publishes the live message with its position', async () => {
    prefix = uniquePrefix('sdk');
    const subscriber = new Redis(redis.url, { protocol: 2 });
    try {
      const channel = topicKeys(prefix, 'live').channel;
      const received = new Promise<string>((resolve) =>
        subscriber.once('message', (_channel, message) => resolve(message)),
      );
      await subscriber.subscribe(channel);
      const id = await publisher().send('price', 'line 1\nline 2', { topic: 'live' });
      const p = position(id);
      // Protocol v2: the first event of an epoch names 0-0 as its predecessor.
      expect(await received).toBe(`2\n${p.epoch}\n${p.ms}-${p.seq}\n0-0\nprice\nline 1\nline 2`);
      const second = new Promise<string>((resolve) =>
        subscriber.once('message', (_channel, message) => resolve(message)),
      );
      const next = position(await publisher().send('price', 'x', { topic: 'live' }));
      expect(await second).toBe(`2\n${next.epoch}\n${next.ms}-${next.seq}\n${p.ms}-${p.seq}\nprice\nx`);
    } finally {
      subscriber.disconnect();
    }
  });

  it('sends a batch pipelined and answers the ids in order', async () => {
    prefix = uniquePrefix('sdk');
    const items = Array.from({ length: 50 }, (_, index) => ({
      topic: index % 2 ? 'odd' : 'even',
      event: 'n',
      data: String(index),
    }));
    const ids = await publisher().sendMany(items);
    expect(ids).toHaveLength(50);
    for (const topic of ['odd', 'even']) {
      const mine = ids.filter((_, index) => items[index]?.topic === topic);
      const entries = await admin.xrange(topicKeys(prefix, topic).stream, '-', '+');
      expect(entries.map(([entryId]) => entryId)).toEqual(mine.map(streamId));
      expect(entries.map(([, fields]) => fields[3])).toEqual(
        items.filter((item) => item.topic === topic).map((item) => item.data),
      );
    }
  });

  it('stores an event with an idempotency key once, and answers the same id on a retry', async () => {
    prefix = uniquePrefix('sdk');
    const p = publisher();
    const first = await p.send('order', { id: 7 }, { idempotencyKey: 'order-7' });
    const retry = await p.send('order', { id: 7 }, { idempotencyKey: 'order-7' });
    const other = await p.send('order', { id: 8 }, { idempotencyKey: 'order-8' });
    expect(retry).toBe(first);
    expect(other).not.toBe(first);
    expect(await admin.xlen(topicKeys(prefix, 'clock').stream)).toBe(2);
    const ttl = await admin.pttl(`${prefix}{clock}:i:order-7`);
    expect(ttl).toBeGreaterThan(0);
  });

  it('applies length retention exactly and records the newest removed entry', async () => {
    prefix = uniquePrefix('sdk');
    const ids = await publisher({ maxLength: 3 }).sendMany(Array.from({ length: 10 }, (_, n) => ({ data: n })));
    const stream = topicKeys(prefix, 'clock').stream;
    expect(await admin.xlen(stream)).toBe(3);
    const info = (await admin.xinfo('STREAM', stream)) as unknown[];
    expect(info[info.indexOf('max-deleted-entry-id') + 1]).toBe(streamId(ids[6] as string));
  });

  it('starts a new epoch when the stream is gone', async () => {
    prefix = uniquePrefix('sdk');
    const p = publisher();
    const before = position(await p.send('tick', 1));
    await admin.del(topicKeys(prefix, 'clock').stream);
    const after = position(await p.send('tick', 2));
    expect(after.epoch).not.toBe(before.epoch);
  });

  // SCRIPT FLUSH is server-wide: only on our own server.
  it.skipIf(Boolean(process.env.REDIS_URL))('reloads the script after Redis forgot it', async () => {
    prefix = uniquePrefix('sdk');
    const p = publisher();
    await p.send('tick', 1);
    await admin.script('FLUSH');
    const ids = await p.sendMany([{ data: 2 }, { data: 3 }]);
    expect(ids).toHaveLength(2);
    expect(await admin.xlen(topicKeys(prefix, 'clock').stream)).toBe(3);
  });

  it('rejects invalid events with ValidationError before sending anything', async () => {
    prefix = uniquePrefix('sdk');
    const p = publisher();
    await expect(p.send('tick', 1, { topic: 'bad topic' })).rejects.toBeInstanceOf(ValidationError);
    await expect(p.send('gateway.reset', 1)).rejects.toBeInstanceOf(ValidationError);
    await expect(p.send('tick', 1, { idempotencyKey: 'k'.repeat(201) })).rejects.toBeInstanceOf(ValidationError);
    await expect(p.send('tick', 1n)).rejects.toBeInstanceOf(ValidationError);
    expect(await admin.exists(topicKeys(prefix, 'clock').stream)).toBe(0);
  });

  it('rejects bad options with ValidationError', () => {
    expect(() => createPublisher({ redis: undefined })).toThrow(ValidationError);
    expect(() => createPublisher({ redis: 'http://127.0.0.1:6379' })).toThrow(ValidationError);
    expect(() => createPublisher({ redis: 'not a url' })).toThrow(ValidationError);
    expect(() => createPublisher({ redis: redis.url, maxLength: -1 })).toThrow(ValidationError);
  });

  it('turns a Redis error reply into ServerError', async () => {
    prefix = uniquePrefix('sdk');
    await admin.set(topicKeys(prefix, 'clock').stream, 'not a stream');
    const error = await rejection(publisher().send('tick', 1));
    expect(error).toBeInstanceOf(ServerError);
    expect((error as ServerError).code).toBe('WRONGTYPE');
  });

  it('gives up on an unreachable Redis after maxRetryTimeMs with a NetworkError carrying the cause', async () => {
    const url = `redis://127.0.0.1:${await closedPort()}`;
    const p = createPublisher({ redis: url, topic: 'x', maxRetryTimeMs: 300 });
    publishers.push(p);
    const started = Date.now();
    const error = await rejection(p.send('tick', 1));
    expect(error).toBeInstanceOf(NetworkError);
    expect((error as NetworkError).kind).toBe('network');
    expect((error as Error).cause).toBeInstanceOf(Error);
    expect(String(((error as Error).cause as Error).message)).toMatch(/ECONNREFUSED/);
    expect(Date.now() - started).toBeLessThan(20_000);
    // Nothing left the process: retrying cannot store it twice.
    expect((error as NetworkError).maybeStored).toBe(false);
    // Past the budget, sends fail at once instead of queueing.
    const atOnce = await rejection(p.send('tick', 2));
    expect(atOnce).toBeInstanceOf(NetworkError);
    expect((atOnce as NetworkError).maybeStored).toBe(false);
  });

  it('bounds the events waiting for Redis, and rejects them on close', async () => {
    const url = `redis://127.0.0.1:${await closedPort()}`;
    const transport = new RedisTransport({ redis: url, maxQueuedEvents: 2, maxRetryTimeMs: 60_000 });
    const event = { topic: 'x', event: 'tick', data: '1' };
    const waiting = transport.publish([event, event]);
    const full = await rejection(transport.publish([event]));
    expect(full).toBeInstanceOf(NetworkError);
    expect((full as NetworkError).maybeStored).toBe(false);
    await transport.close();
    const closed = await rejection(waiting);
    expect(closed).toBeInstanceOf(NetworkError);
    expect((closed as NetworkError).maybeStored).toBe(false);
  });

  // SIGSTOP and REPLICAOF on the server: only on our own one.
  describe.skipIf(Boolean(process.env.REDIS_URL))('outcomes of events in flight', () => {
    /** Stops the server (sockets stay open, nothing answers) for the duration of `use`. */
    async function whileFrozen<T>(use: () => Promise<T>): Promise<T> {
      const pid = redis.pid as number;
      process.kill(pid, 'SIGSTOP');
      try {
        return await use();
      } finally {
        process.kill(pid, 'SIGCONT');
      }
    }

    it('says maybeStored when the deadline passed with the events in flight, and they may indeed be stored', async () => {
      prefix = uniquePrefix('sdk');
      const transport = new RedisTransport({ redis: redis.url, prefix, maxRetryTimeMs: 300 });
      try {
        await transport.publish([{ topic: 'late', event: 'tick', data: 'warm-up' }]);
        const error = await whileFrozen(() =>
          rejection(transport.publish([{ topic: 'late', event: 'tick', data: 'x' }])),
        );
        expect(error).toBeInstanceOf(NetworkError);
        expect((error as NetworkError).maybeStored).toBe(true);
        expect(error.message).toMatch(/did not answer within 300 ms; the events may have been stored/);
        // It was written: once Redis runs again, it is stored.
        await eventually(async () => expect(await admin.xlen(topicKeys(prefix, 'late').stream)).toBe(2));
      } finally {
        await transport.close();
      }
    });

    it('says maybeStored when the connection dropped with the events in flight', async () => {
      prefix = uniquePrefix('sdk');
      const client = new Redis(redis.url, {
        protocol: 2,
        enableOfflineQueue: false,
        autoResendUnfulfilledCommands: false,
      });
      const transport = new RedisTransport({ redis: client, prefix });
      try {
        await transport.publish([{ topic: 'drop', event: 'tick', data: 'warm-up' }]);
        const error = await whileFrozen(async () => {
          const pending = rejection(transport.publish([{ topic: 'drop', event: 'tick', data: 'x' }]));
          // The script call is on the wire; the socket goes before any answer can come.
          (client as unknown as { stream: { destroy(): void } }).stream.destroy();
          return pending;
        });
        expect(error).toBeInstanceOf(NetworkError);
        expect((error as NetworkError).maybeStored).toBe(true);
      } finally {
        await transport.close();
        client.disconnect();
      }
    });

    it('holds a publish a read-only replica refused, and sends it once the server takes writes again', async () => {
      prefix = uniquePrefix('sdk');
      const transport = new RedisTransport({ redis: redis.url, prefix });
      try {
        await transport.publish([{ topic: 'ro', event: 'tick', data: 'warm-up' }]);
        // A replica of a primary that does not exist: it refuses every write with READONLY.
        await admin.replicaof('127.0.0.1', await closedPort());
        let settled = false;
        const pending = transport.publish([
          { topic: 'ro', event: 'tick', data: 'a' },
          { topic: 'ro', event: 'tick', data: 'b' },
        ]);
        pending.then(
          () => {
            settled = true;
          },
          () => {
            settled = true;
          },
        );
        // Refused at least once, still waiting (the retry pause is 100 ms, the deadline 30 s).
        await eventually(async () => {
          const stats = String(await admin.info('errorstats'));
          expect(stats).toMatch(/errorstat_READONLY:count=[1-9]/);
        });
        expect(settled).toBe(false);
        await admin.replicaof('NO', 'ONE');
        const ids = await pending;
        const stored = await admin.xrange(topicKeys(prefix, 'ro').stream, '-', '+');
        expect(stored.map(([, fields]) => fields[3])).toEqual(['warm-up', 'a', 'b']);
        expect(stored.slice(1).map(([id]) => id)).toEqual(ids.map(streamId));
      } finally {
        await admin.replicaof('NO', 'ONE');
        await transport.close();
      }
    });

    it('gives up on a refused publish at the deadline with maybeStored false', async () => {
      prefix = uniquePrefix('sdk');
      const transport = new RedisTransport({ redis: redis.url, prefix, maxRetryTimeMs: 500 });
      try {
        await transport.publish([{ topic: 'ro', event: 'tick', data: 'warm-up' }]);
        await admin.replicaof('127.0.0.1', await closedPort());
        const error = await rejection(transport.publish([{ topic: 'ro', event: 'tick', data: 'a' }]));
        expect(error).toBeInstanceOf(NetworkError);
        expect((error as NetworkError).maybeStored).toBe(false);
        expect(error.message).toMatch(/refused the events until the deadline \(500 ms\): READONLY/);
      } finally {
        await admin.replicaof('NO', 'ONE');
        await transport.close();
      }
      expect(await admin.xlen(topicKeys(prefix, 'ro').stream)).toBe(1);
    });
  });

  it('queues sends while Redis is away and sends them in order once it is back', async () => {
    prefix = uniquePrefix('sdk');
    // An injected client configured like the transport's own, so the test can watch its status.
    const client = new Redis(redis.url, {
      protocol: 2,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
    });
    const transport = new RedisTransport({ redis: client, prefix });
    try {
      await transport.publish([{ topic: 'q', event: 'tick', data: 'warm-up' }]);
      await admin.client('KILL', 'ID', String(await client.client('ID')));
      await eventually(() => expect(client.status).not.toBe('ready'));
      const first = transport.publish([{ topic: 'q', event: 'tick', data: 'a' }]);
      const second = transport.publish([
        { topic: 'q', event: 'tick', data: 'b' },
        { topic: 'q', event: 'tick', data: 'c' },
      ]);
      const ids = [...(await first), ...(await second)];
      const entries = await admin.xrange(topicKeys(prefix, 'q').stream, '-', '+');
      expect(entries.map(([, fields]) => fields[3])).toEqual(['warm-up', 'a', 'b', 'c']);
      expect(entries.slice(1).map(([id]) => id)).toEqual(ids.map(streamId));
    } finally {
      await transport.close();
      client.disconnect();
    }
  });

  // Kills every publisher connection on the server: only on our own one.
  it.skipIf(Boolean(process.env.REDIS_URL))(
    'stores a send that raced a dropped connection once when retried with its idempotency key',
    async () => {
      prefix = uniquePrefix('sdk');
      const p = publisher();
      await p.send('tick', 'warm-up');
      const clients = String(await admin.client('LIST'))
        .split('\n')
        .filter((line) => line.includes('name=sse-gateway-publisher'))
        .map((line) => /id=(\d+)/.exec(line)?.[1] as string);
      expect(clients.length).toBeGreaterThanOrEqual(1);
      for (const id of clients) await admin.client('KILL', 'ID', id);
      // The send may hit the dying socket (NetworkError: outcome unknown) or wait for the reconnect.
      const id = await eventually(() => p.send('tick', 'after-kill', { idempotencyKey: 'after-kill' }));
      expect(await admin.xlen(topicKeys(prefix, 'clock').stream)).toBe(2);
      expect(await p.send('tick', 'after-kill', { idempotencyKey: 'after-kill' })).toBe(id);
    },
  );

  it('takes a RedisTarget as well as a URL', async () => {
    prefix = uniquePrefix('sdk');
    const p = createPublisher({ redis: parseRedisUrl(redis.url), prefix, topic: 'target' });
    publishers.push(p);
    const id = await p.send('tick', 'x');
    expect(await admin.xrange(topicKeys(prefix, 'target').stream, '-', '+')).toEqual([
      [streamId(id), ['e', 'tick', 'd', 'x', 'p', '0-0']],
    ]);
  });

  it('uses a given ioredis client without closing it', async () => {
    prefix = uniquePrefix('sdk');
    const client = new Redis(redis.url, { protocol: 2 });
    try {
      const transport = new RedisTransport({ redis: client, prefix });
      const [id] = await transport.publish([{ topic: 'mine', event: 'tick', data: 'x' }]);
      expect(position(id as string).epoch).not.toBe('');
      await transport.close();
      expect(client.status).toBe('ready');
      expect(await client.ping()).toBe('PONG');
    } finally {
      client.disconnect();
    }
  });
});
