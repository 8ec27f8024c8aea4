/**
 * Docker is not available in CI, so the compose topology is validated statically: the services, ports,
 * health checks and the files they reference must exist and agree with each other; the HAProxy config
 * for compose must be the one rendered from the shared template, and HAProxy itself must accept it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { renderComposeHaproxyConfig } from '../src/cluster/haproxy-config.js';
import { findHaproxy } from '../src/cluster/local-cluster.js';
import { ensureDevCertificate } from '../src/server/dev-certificate.js';

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
  profiles?: string[];
}

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml')) as { services: Record<string, Service> };
  const services = compose.services;

  it('runs redis with AOF, three gateway replicas, a load balancer on 8080 and 8443 (h2) and a ticker', () => {
    // Services under a profile (monitoring: test/grafana-dashboard.test.ts) are not started by `docker compose up`.
    const byDefault = Object.keys(services).filter((name) => !services[name]?.profiles);
    expect(byDefault.sort()).toEqual(['certs', 'gateway1', 'gateway2', 'gateway3', 'lb', 'redis', 'ticker']);
    expect(services.redis?.command).toContain('--appendonly');
    expect(services.lb?.ports).toEqual(['8080:8080', '8443:8443']);
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

  it('generates the HTTPS certificate into the volume HAProxy reads it from', () => {
    expect(services.certs?.command).toEqual(['node', 'dist/server/dev-certificate.js', '--shareable', '/certs']);
    expect(services.certs?.volumes).toEqual(['certs:/certs']);
    expect(services.lb?.volumes).toContain('certs:/usr/local/etc/haproxy/certs:ro');
    expect(services.lb?.depends_on?.certs?.condition).toBe('service_completed_successfully');
    expect(read('deploy/haproxy.compose.cfg')).toContain(
      'ssl crt /usr/local/etc/haproxy/certs/dev.pem alpn h2,http/1.1',
    );
  });

  it('gives HAProxy a config it accepts', async () => {
    const haproxy = findHaproxy();
    if (!existsSync(haproxy)) return;
    // The certificate exists only inside the compose volume: check against a local one at the same place.
    const dir = mkdtempSync(join(tmpdir(), 'haproxy-check-'));
    try {
      const { combinedPath } = await ensureDevCertificate(dir);
      const config = read('deploy/haproxy.compose.cfg').replace('/usr/local/etc/haproxy/certs/dev.pem', combinedPath);
      writeFileSync(join(dir, 'haproxy.cfg'), config);
      const check = spawnSync(haproxy, ['-c', '-f', join(dir, 'haproxy.cfg')], { encoding: 'utf8' });
      expect(check.status, check.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/compose.redis-cluster.yml (the Redis Cluster variant)', () => {
  const base = parse(read('docker-compose.yml')) as { services: Record<string, Service> };
  const override = parse(read('deploy/compose.redis-cluster.yml'), { merge: true }) as {
    services: Record<string, Service>;
    volumes: Record<string, unknown>;
  };
  const services = override.services;
  const nodes = Array.from({ length: 6 }, (_, index) => `redis-node-${index + 1}`);

  it('runs six cluster nodes with AOF and a one-shot init that joins them with one replica each', () => {
    for (const node of nodes) {
      expect(services[node]?.command).toEqual(expect.arrayContaining(['--cluster-enabled', '--appendonly']));
      expect(services[node]?.volumes?.[0]).toBe(`${node}:/data`);
      expect(override.volumes).toHaveProperty(node);
      expect(services['redis-cluster-init']?.depends_on?.[node]?.condition).toBe('service_healthy');
    }
    const init = (services['redis-cluster-init']?.command ?? []).join(' ');
    expect(init).toContain('--cluster-replicas 1');
    for (const node of nodes) expect(init).toContain(node.replace(/\d$/, ''));
  });

  it('points every gateway and the ticker of the base file at all six nodes, after the init', () => {
    for (const name of ['gateway1', 'gateway2', 'gateway3', 'ticker']) {
      expect(base.services[name], `${name} exists in docker-compose.yml`).toBeDefined();
      const url = services[name]?.environment?.REDIS_URL ?? '';
      expect(url.startsWith('redis+cluster://')).toBe(true);
      expect(url.replace('redis+cluster://', '').split(',')).toEqual(nodes.map((node) => `${node}:6379`));
      expect(services[name]?.depends_on?.['redis-cluster-init']?.condition).toBe('service_completed_successfully');
    }
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
