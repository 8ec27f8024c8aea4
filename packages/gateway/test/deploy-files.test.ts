/**
 * Docker is not available in CI, so the compose topology is validated statically: the services, ports,
 * health checks and the files they reference must exist and agree with each other; the HAProxy config
 * for compose must be the one rendered from the shared template, and HAProxy itself must accept it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { renderComposeHaproxyConfig } from '../src/cluster/haproxy-config.js';
import { findHaproxy } from '../src/cluster/local-cluster.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

interface Service {
  build?: string | { context: string; dockerfile?: string };
  image?: string;
  command?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  volumes?: string[];
}

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml')) as { services: Record<string, Service> };
  const services = compose.services;

  it('runs redis with AOF, three gateway replicas, a load balancer on 8080 and a ticker', () => {
    expect(Object.keys(services).sort()).toEqual(['gateway1', 'gateway2', 'gateway3', 'lb', 'redis', 'ticker']);
    expect(services.redis?.command).toContain('--appendonly');
    expect(services.lb?.ports).toEqual(['8080:8080']);
    expect(services.ticker?.command).toEqual(['node', 'dist/examples/ticker.js']);
  });

  it('builds the gateways from the Dockerfile and health-checks them on /readyz', () => {
    for (const name of ['gateway1', 'gateway2', 'gateway3']) {
      const service = services[name] as Service;
      expect(service.build).toBe('.');
      expect(service.environment?.REDIS_URL).toBe('redis://redis:6379');
      expect(service.environment?.HOST).toBe('0.0.0.0');
      expect(service.healthcheck?.test.join(' ')).toContain('/readyz');
      expect(services.lb?.depends_on?.[name]?.condition).toBe('service_healthy');
    }
    expect(existsSync(`${root}Dockerfile`)).toBe(true);
  });

  it('mounts the HAProxy config rendered from the shared template', () => {
    const mount = services.lb?.volumes?.[0]?.split(':')[0] ?? '';
    expect(mount).toBe('./deploy/haproxy.compose.cfg');
    expect(read('deploy/haproxy.compose.cfg')).toBe(renderComposeHaproxyConfig());
  });

  it('gives HAProxy a config it accepts', () => {
    const haproxy = findHaproxy();
    if (!existsSync(haproxy)) return;
    const check = spawnSync(haproxy, ['-c', '-f', `${root}deploy/haproxy.compose.cfg`], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');

  it('is multi-stage on a Node LTS image, runs as non-root and health-checks /healthz', () => {
    expect(dockerfile.match(/^FROM node:20/gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n?.*\/healthz/m);
    expect(dockerfile).toContain('pnpm install --frozen-lockfile');
    expect(dockerfile).toMatch(/^CMD \["node", "dist\/main\.js"\]$/m);
  });

  it('copies only files that exist', () => {
    for (const match of dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)) {
      const sources = (match[1] as string).split(/\s+/).slice(0, -1);
      for (const source of sources) expect(existsSync(`${root}${source}`), source).toBe(true);
    }
  });
});
