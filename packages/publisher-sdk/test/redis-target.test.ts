/** parseRedisUrl and describeRedisTarget, table-driven: every scheme, auth, defaults, db, TLS and each error. */
import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  createRedisClient,
  describeRedisTarget,
  isRedisCluster,
  isRedisTarget,
  parseRedisUrl,
  type RedisTarget,
  ValidationError,
} from '../src/index.js';

interface Case {
  readonly url: string;
  readonly target: RedisTarget;
  /** describeRedisTarget's answer: passwords masked. */
  readonly described: string;
}

const parsed: readonly Case[] = [
  // One server: the URL is kept for ioredis to read (auth, db, TLS and options are its business).
  {
    url: 'redis://127.0.0.1:6379',
    target: { kind: 'single', url: 'redis://127.0.0.1:6379' },
    described: 'redis://127.0.0.1:6379',
  },
  { url: 'redis://localhost', target: { kind: 'single', url: 'redis://localhost' }, described: 'redis://localhost' },
  {
    url: 'rediss://alice:s%40cret@cache.internal:6380/2',
    target: { kind: 'single', url: 'rediss://alice:s%40cret@cache.internal:6380/2' },
    described: 'rediss://alice:***@cache.internal:6380/2',
  },
  { url: 'redis://:pw@h:1/0', target: { kind: 'single', url: 'redis://:pw@h:1/0' }, described: 'redis://:***@h:1/0' },
  {
    url: 'redis://h:1?password=pw&family=6',
    target: { kind: 'single', url: 'redis://h:1?password=pw&family=6' },
    described: 'redis://h:1?password=***&family=6',
  },
  {
    url: 'redis://[::1]:6379/3',
    target: { kind: 'single', url: 'redis://[::1]:6379/3' },
    described: 'redis://[::1]:6379/3',
  },
  // ioredis turns TLS on for a literal rediss:// only, so the scheme is lowercased.
  { url: 'REDISS://h:1', target: { kind: 'single', url: 'rediss://h:1' }, described: 'rediss://h:1' },

  // Sentinel: default port 26379, name required, db optional, auth is the primary's.
  {
    url: 'redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster',
    target: {
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
      ],
      name: 'mymaster',
      tls: false,
      db: 0,
    },
    described: 'redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/0',
  },
  {
    url: 'redis+sentinel://s1,s2:1,[::1]/main/4',
    target: {
      kind: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 1 },
        { host: '::1', port: 26379 },
      ],
      name: 'main',
      tls: false,
      db: 4,
    },
    described: 'redis+sentinel://s1:26379,s2:1,[::1]:26379/main/4',
  },
  {
    url: 'rediss+sentinel://app:p%3Aw%2Bd@s1:5000/my%20master/1/?sentinelPassword=a%26b+c',
    target: {
      kind: 'sentinel',
      sentinels: [{ host: 's1', port: 5000 }],
      name: 'my master',
      username: 'app',
      password: 'p:w+d',
      sentinelPassword: 'a&b+c',
      tls: true,
      db: 1,
    },
    described: 'rediss+sentinel://app:***@s1:5000/my%20master/1?sentinelPassword=***',
  },
  {
    url: 'redis+sentinel://:only-password@s1/m',
    target: {
      kind: 'sentinel',
      sentinels: [{ host: 's1', port: 26379 }],
      name: 'm',
      password: 'only-password',
      tls: false,
      db: 0,
    },
    described: 'redis+sentinel://:***@s1:26379/m/0',
  },
  {
    url: 'redis+sentinel://user-only@s1/m',
    target: {
      kind: 'sentinel',
      sentinels: [{ host: 's1', port: 26379 }],
      name: 'm',
      username: 'user-only',
      tls: false,
      db: 0,
    },
    described: 'redis+sentinel://user-only@s1:26379/m/0',
  },

  // Cluster: default port 6379, no db, startup nodes in order.
  {
    url: 'redis+cluster://127.0.0.1:7000,127.0.0.1:7001',
    target: {
      kind: 'cluster',
      nodes: [
        { host: '127.0.0.1', port: 7000 },
        { host: '127.0.0.1', port: 7001 },
      ],
      tls: false,
    },
    described: 'redis+cluster://127.0.0.1:7000,127.0.0.1:7001',
  },
  {
    url: 'rediss+cluster://ops:pa%24%24@node-a,node-b:7002/',
    target: {
      kind: 'cluster',
      nodes: [
        { host: 'node-a', port: 6379 },
        { host: 'node-b', port: 7002 },
      ],
      username: 'ops',
      password: 'pa$$',
      tls: true,
    },
    described: 'rediss+cluster://ops:***@node-a:6379,node-b:7002',
  },
  {
    url: 'Redis+Cluster://:pw@[fe80::1%25eth0]:7000',
    target: { kind: 'cluster', nodes: [{ host: 'fe80::1%25eth0', port: 7000 }], password: 'pw', tls: false },
    described: 'redis+cluster://:***@[fe80::1%25eth0]:7000',
  },
];

const refused: readonly { readonly url: string; readonly error: RegExp }[] = [
  { url: '', error: /^Redis URL is empty$/ },
  { url: '127.0.0.1:6379', error: /has no scheme: expected redis:\/\/, rediss:\/\// },
  {
    url: 'http://127.0.0.1:6379',
    error: /^unknown Redis URL scheme http:\/\/: expected redis:\/\/, rediss:\/\/, redis\+sentinel/,
  },
  { url: 'redis+proxy://h:1', error: /^unknown Redis URL scheme redis\+proxy:\/\// },
  { url: 'redis://h:99999', error: /^redis:\/\/ URL has a bad port "99999": expected 1-65535$/ },
  { url: 'redis://h:0', error: /^redis:\/\/ URL has a bad port "0"/ },
  { url: 'rediss://u:p@h:x/1', error: /^rediss:\/\/ URL has a bad port "x"/ },
  { url: 'redis://h1:1,h2:2', error: /^redis:\/\/ takes one host; for several use .*, got "h1:1,h2:2"$/ },
  {
    url: 'redis://h1,h2',
    error: /^redis:\/\/ takes one host; for several use redis\+sentinel:\/\/ or redis\+cluster:\/\//,
  },
  { url: 'redis://h/db1', error: /^redis:\/\/ URL path must be a database number \(\/0, \/1\.\.\.\), got "\/db1"$/ },
  { url: 'redis://h/1?protocol=3', error: /must not set protocol: the SDK always speaks RESP2/ },
  { url: 'redis+sentinel://s1:26379', error: /^redis\+sentinel:\/\/ URL has no master name: put it in the path/ },
  { url: 'redis+sentinel://s1:26379/', error: /has no master name/ },
  { url: 'redis+sentinel://s1/m/x', error: /^redis\+sentinel:\/\/ URL has a bad database number "x"/ },
  { url: 'redis+sentinel://s1/m/1/2', error: /URL path must be \/<master name>\[\/<db>\], got "\/m\/1\/2"$/ },
  { url: 'redis+sentinel://s1/m?password=x', error: /unknown query parameter "password": only sentinelPassword$/ },
  { url: 'redis+sentinel:///m', error: /^redis\+sentinel:\/\/ URL has no hosts: expected host:port/ },
  { url: 'redis+sentinel://s1:26379,/m', error: /has an empty host list entry \(number 2 in "s1:26379,"\)$/ },
  { url: 'redis+cluster://', error: /^redis\+cluster:\/\/ URL has no hosts/ },
  { url: 'redis+cluster://u:p@', error: /^redis\+cluster:\/\/ URL has no hosts/ },
  { url: 'redis+cluster://a,,b', error: /has an empty host list entry \(number 2 in "a,,b"\)$/ },
  { url: 'redis+cluster://a:x', error: /^redis\+cluster:\/\/ URL has a bad port "x" in "a:x": expected 1-65535$/ },
  { url: 'redis+cluster://a:65536', error: /bad port "65536"/ },
  { url: 'redis+cluster://a:0', error: /bad port "0"/ },
  { url: 'redis+cluster://a:', error: /bad port ""/ },
  { url: 'redis+cluster://:7000', error: /has an empty host in ":7000"$/ },
  { url: 'redis+cluster://a b:7000', error: /has a bad host "a b"$/ },
  { url: 'redis+cluster://[::1:7000', error: /has a bad IPv6 address "\[::1:7000": expected \[addr\]:port$/ },
  { url: 'redis+cluster://a:7000/0', error: /has a path \("\/0"\); a Redis Cluster has only database 0/ },
  { url: 'redis+cluster://a:7000?readOnly=1', error: /takes no query parameters, got readOnly$/ },
  { url: 'redis+cluster://u:p#x@a', error: /has a #fragment \(percent-encode # in passwords\)$/ },
  { url: 'redis+cluster://u:%E0%A4%A@a', error: /has a password that is not valid percent-encoding$/ },
  { url: 'redis+sentinel://s1/%E0%A4%A', error: /has a master name that is not valid percent-encoding$/ },
];

describe('parseRedisUrl', () => {
  it.each(parsed)('parses $url', ({ url, target }) => {
    expect(parseRedisUrl(url)).toEqual(target);
  });

  it.each(refused)('refuses $url', ({ url, error }) => {
    let thrown: unknown;
    try {
      parseRedisUrl(url);
    } catch (caught) {
      thrown = caught;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    expect((thrown as Error).message).toMatch(error);
  });

  it('never echoes a password in an error', () => {
    for (const url of ['redis://u:hunter2@h:99999', 'redis+cluster://u:hunter2@a:x', 'redis+sentinel://u:hunter2@s1']) {
      expect(() => parseRedisUrl(url)).toThrow(ValidationError);
      try {
        parseRedisUrl(url);
      } catch (error) {
        expect((error as Error).message).not.toContain('hunter2');
      }
    }
  });
});

describe('describeRedisTarget', () => {
  it.each(parsed)('describes $url', ({ target, described }) => {
    expect(describeRedisTarget(target)).toBe(described);
  });

  it('describes a target built by hand, and parses its own description back (passwords aside)', () => {
    const target: RedisTarget = {
      kind: 'sentinel',
      sentinels: [{ host: 'a', port: 1 }],
      name: 'm/1',
      password: 'x',
      sentinelPassword: 'y',
      tls: true,
      db: 2,
    };
    const text = describeRedisTarget(target);
    expect(text).toBe('rediss+sentinel://:***@a:1/m%2F1/2?sentinelPassword=***');
    expect(parseRedisUrl(text)).toEqual({ ...target, password: '***', sentinelPassword: '***' });
  });
});

describe('createRedisClient', () => {
  // lazyConnect: these only look at the options ioredis was given.
  const lazy = { connectionName: 'unit', redisOptions: { lazyConnect: true } } as const;

  it('builds a RESP2 Redis for one server, with the URL deciding host, db and TLS', () => {
    const client = createRedisClient(parseRedisUrl('rediss://:pw@127.0.0.1:1/3'), {
      ...lazy,
      redisOptions: { lazyConnect: true, protocol: 3 },
    }) as Redis;
    expect(isRedisCluster(client)).toBe(false);
    expect(client.options).toMatchObject({
      host: '127.0.0.1',
      port: 1,
      db: 3,
      password: 'pw',
      tls: {},
      protocol: 2,
      connectionName: 'unit',
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
    });
    client.disconnect();
  });

  it('builds a Sentinel client for the primary with the failover detector and TLS everywhere', () => {
    const client = createRedisClient(
      parseRedisUrl('rediss+sentinel://u:p@127.0.0.1:1,127.0.0.1:2/m/5?sentinelPassword=s'),
      {
        ...lazy,
        redisOptions: { lazyConnect: true, role: 'slave', failoverDetector: false },
      },
    ) as Redis;
    expect(client.options).toMatchObject({
      sentinels: [
        { host: '127.0.0.1', port: 1 },
        { host: '127.0.0.1', port: 2 },
      ],
      name: 'm',
      role: 'master',
      failoverDetector: true,
      username: 'u',
      password: 'p',
      sentinelPassword: 's',
      db: 5,
      tls: {},
      sentinelTLS: {},
      enableTLSForSentinelMode: true,
      protocol: 2,
    });
    expect(
      client.options.reconnectOnError?.(new Error('READONLY You can not write against a read only replica.')),
    ).toBe(true);
    client.disconnect();
  });

  it('builds a Cluster whose node connections speak RESP2 and that never re-sends a dropped command', () => {
    const client = createRedisClient(parseRedisUrl('rediss+cluster://:pw@127.0.0.1:1,127.0.0.1:2'), {
      connectionName: 'unit',
      redisOptions: { retryStrategy: () => 1, keepAlive: 1234 },
      clusterOptions: { lazyConnect: true, shardedSubscribers: true },
    }) as Cluster;
    expect(isRedisCluster(client)).toBe(true);
    expect(client).toBeInstanceOf(Cluster);
    expect(client.options).toMatchObject({
      retryDelayOnFailover: 0,
      shardedSubscribers: true,
      slotsRefreshInterval: 5000,
    });
    expect(client.options.redisOptions).toMatchObject({
      password: 'pw',
      tls: {},
      protocol: 2,
      connectionName: 'unit',
      keepAlive: 1234,
    });
    expect(client.options.redisOptions).not.toHaveProperty('retryStrategy');
    client.disconnect();
  });

  it('uses TLS only when the target says so; TLS options given only shape it', () => {
    const tlsOptions = { lazyConnect: true, tls: { servername: 'cache.internal' } };
    const plain = createRedisClient(parseRedisUrl('redis://127.0.0.1:1'), {
      connectionName: 'unit',
      redisOptions: tlsOptions,
    }) as Redis;
    expect(plain.options.tls).toBeUndefined();
    const secure = createRedisClient(parseRedisUrl('rediss://127.0.0.1:1'), {
      connectionName: 'unit',
      redisOptions: tlsOptions,
    }) as Redis;
    expect(secure.options.tls).toEqual({ servername: 'cache.internal' });
    const sentinel = createRedisClient(parseRedisUrl('redis+sentinel://127.0.0.1:1/m'), {
      connectionName: 'unit',
      redisOptions: { ...tlsOptions, enableTLSForSentinelMode: true },
    }) as Redis;
    expect(sentinel.options).toMatchObject({ enableTLSForSentinelMode: false });
    expect(sentinel.options.tls).toBeUndefined();
    const cluster = createRedisClient(parseRedisUrl('redis+cluster://127.0.0.1:1'), {
      connectionName: 'unit',
      redisOptions: tlsOptions,
      clusterOptions: { lazyConnect: true },
    }) as Cluster;
    expect(cluster.options.redisOptions).not.toHaveProperty('tls');
    for (const client of [plain, secure, sentinel, cluster]) client.disconnect();
  });

  it('tells targets from URLs and clients', () => {
    const client = new Redis({ lazyConnect: true, protocol: 2 });
    expect(isRedisTarget(parseRedisUrl('redis://h'))).toBe(true);
    expect(isRedisTarget('redis://h')).toBe(false);
    expect(isRedisTarget(client)).toBe(false);
    expect(isRedisTarget({ kind: 'other' })).toBe(false);
    client.disconnect();
  });
});
