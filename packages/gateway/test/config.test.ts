/** The settings table: every env var is read, validated, and reported together when wrong. */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConfigError, helpText, loadConfig, redisTargetOf } from '../src/config.js';
import { startGateway } from '../src/gateway.js';

describe('loadConfig', () => {
  it('reads every documented variable from the environment', () => {
    const config = loadConfig({
      PORT: '9000',
      TRUST_PROXY: 'true',
      GZIP: 'yes',
      CORS_ORIGINS: 'https://a.example, https://b.example',
      RESPONSE_HEADERS: '{"X-Frame-Options":"DENY"}',
      MAX_NEW_CONNECTIONS_PER_SECOND: '5',
      PUBLIC_TOPICS: 'news/*, status',
    });
    expect(config).toMatchObject({
      port: 9000,
      trustProxy: true,
      gzip: true,
      corsOrigins: ['https://a.example', 'https://b.example'],
      responseHeaders: { 'X-Frame-Options': 'DENY' },
      maxNewConnectionsPerSecond: 5,
      publicTopics: ['news/*', 'status'],
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('lists every variable in --help', () => {
    const help = helpText();
    for (const name of ['PORT', 'REDIS_URL', 'TRUST_PROXY', 'AUTH_JWT_SECRET', 'HEADERS_TIMEOUT_MS', 'DEMO_PAGE']) {
      expect(help).toContain(name);
    }
  });

  it('reports every invalid setting at once', () => {
    try {
      loadConfig({
        PORT: 'abc',
        HEARTBEAT_MS: '-1',
        REDIS_URL: 'http://x',
        AUTH_JWT_SECRET: 'short',
        TRUST_PROXY: 'maybe',
      });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems.join('\n');
      for (const name of ['PORT', 'HEARTBEAT_MS', 'REDIS_URL', 'AUTH_JWT_SECRET', 'TRUST_PROXY']) {
        expect(problems).toContain(name);
      }
    }
  });
});

describe('DEMO_PAGE', () => {
  const secret = 'x'.repeat(40);
  it('is on in open mode and off once an auth key is configured, unless set', () => {
    expect(loadConfig({}).demoPage).toBe(true);
    expect(loadConfig({ AUTH_JWT_SECRET: secret }).demoPage).toBe(false);
    expect(loadConfig({ AUTH_JWT_SECRET: secret, DEMO_PAGE: 'true' }).demoPage).toBe(true);
    expect(loadConfig({ DEMO_PAGE: 'false' }).demoPage).toBe(false);
  });
});

describe('TRUST_PROXY from the environment', () => {
  it('counts clients by their forwarded address, not the balancer address', async () => {
    const config = loadConfig({ PORT: '0', TRUST_PROXY: 'true', MAX_CONNECTIONS_PER_CLIENT: '1', LOG_LEVEL: 'silent' });
    const gateway = await startGateway(config, { logger: pino({ level: 'silent' }) });
    const open = (address: string) =>
      fetch(`${gateway.url}/events?topic=t`, { headers: { 'X-Forwarded-For': `10.0.0.9, ${address}` } });
    try {
      const first = await open('1.1.1.1');
      const second = await open('2.2.2.2');
      const third = await open('1.1.1.1');
      expect([first.status, second.status, third.status]).toEqual([200, 200, 429]);
      await Promise.all([first.body?.cancel(), second.body?.cancel(), third.body?.cancel()]);
    } finally {
      await gateway.close(0);
    }
  });
});

describe('Redis targets', () => {
  it.each([
    [{ REDIS_URL: 'redis://127.0.0.1:6379' }, { kind: 'single', url: 'redis://127.0.0.1:6379' }],
    [
      { REDIS_URL: 'redis://127.0.0.1:6379', REDIS_PASSWORD: 's3cret' },
      { kind: 'single', url: 'redis://:s3cret@127.0.0.1:6379' },
    ],
    [
      { REDIS_URL: 'redis+sentinel://10.0.0.1:26379,10.0.0.2/mymaster', REDIS_SENTINEL_PASSWORD: 'sp' },
      { kind: 'sentinel', name: 'mymaster', sentinelPassword: 'sp', tls: false },
    ],
    [
      { REDIS_SENTINELS: '10.0.0.1:26379,10.0.0.2:26380', REDIS_SENTINEL_NAME: 'mymaster', REDIS_PASSWORD: 'pw' },
      {
        kind: 'sentinel',
        name: 'mymaster',
        password: 'pw',
        sentinels: [
          { host: '10.0.0.1', port: 26379 },
          { host: '10.0.0.2', port: 26380 },
        ],
      },
    ],
    [
      {
        REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2:7001',
        REDIS_TLS: 'true',
        REDIS_USERNAME: 'gw',
        REDIS_PASSWORD: 'pw',
      },
      { kind: 'cluster', tls: true, username: 'gw', password: 'pw' },
    ],
  ])('%j', (env, expected) => {
    expect(redisTargetOf(loadConfig(env))).toMatchObject(expected);
  });

  it('is the embedded engine when no Redis is configured', () => {
    expect(redisTargetOf(loadConfig({}))).toBeUndefined();
  });

  it.each([
    [{ REDIS_URL: 'http://x' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis+sentinel://10.0.0.1' }, 'REDIS_URL'],
    [{ REDIS_SENTINELS: '10.0.0.1:26379' }, 'REDIS_SENTINELS needs REDIS_SENTINEL_NAME'],
    [{ REDIS_SENTINELS: '10.0.0.1:notaport', REDIS_SENTINEL_NAME: 'm' }, 'REDIS_SENTINELS'],
    [{ REDIS_URL: 'redis://a', REDIS_CLUSTER_NODES: 'b:7000' }, 'set only one of REDIS_URL, REDIS_CLUSTER_NODES'],
    [{ REDIS_CLUSTER_NODES: 'redis://b:7000' }, 'REDIS_CLUSTER_NODES must be a list of host:port'],
    [{ REDIS_URL: 'redis+cluster://a:7000', PUBLISH_MIN_REPLICAS: '1' }, 'PUBLISH_MIN_REPLICAS is not supported'],
  ])('refuses %j at boot, naming the setting', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});
