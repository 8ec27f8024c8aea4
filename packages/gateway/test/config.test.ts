/** The settings table: every env var is read, validated, and reported together when wrong. */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConfigError, helpText, loadConfig } from '../src/config.js';
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
