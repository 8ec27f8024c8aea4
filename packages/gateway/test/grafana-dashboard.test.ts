/**
 * The monitoring files in deploy/ are checked against what a gateway really exports: every metric a panel of
 * the Grafana dashboard queries must be on the admin listener's /metrics (with the labels the query groups or
 * filters by), and the Prometheus scrape configs must target the admin ports docker-compose.yml and
 * `pnpm cluster` give the gateways. Docker is not available in CI, so the compose side is checked statically.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { MemoryEngine } from '../src/engine/memory-engine.js';
import type { RedisEngineStats } from '../src/engine/redis/redis-engine.js';
import {
  closeAllRawStreams,
  eventsUrl,
  metric,
  publish,
  rawStream,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { waitFor } from './support/wait.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

// ---------------------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------------------

interface Target {
  readonly expr?: string;
  readonly refId?: string;
  readonly datasource?: { type?: string; uid?: string };
}

interface Panel {
  readonly id?: number;
  readonly type: string;
  readonly title?: string;
  readonly datasource?: { type?: string; uid?: string };
  readonly gridPos?: { h: number; w: number; x: number; y: number };
  readonly targets?: Target[];
  /** Panels of a collapsed row. */
  readonly panels?: Panel[];
}

interface Variable {
  readonly name: string;
  readonly type: string;
  readonly query?: string | { query?: string };
  readonly definition?: string;
}

interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly schemaVersion: number;
  readonly panels: Panel[];
  readonly templating: { list: Variable[] };
}

const dashboard = JSON.parse(read('deploy/grafana/sse-gateway-dashboard.json')) as Dashboard;

/** Every panel, rows' nested panels included. */
function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

const queryPanels = allPanels(dashboard.panels).filter((panel) => panel.type !== 'row');
const exprs = queryPanels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr ?? ''));
const variableQuery = (variable: Variable | undefined) =>
  typeof variable?.query === 'string' ? variable.query : (variable?.query?.query ?? '');
const instanceVariable = dashboard.templating.list.find((variable) => variable.name === 'instance');
/** The PromQL the dashboard sends: panel targets and the instance variable's label_values(). */
const promql = [...exprs, variableQuery(instanceVariable)];

const metricNames = (expr: string) => [...new Set(expr.match(/\bsse_gateway_[a-z0-9_]+/g) ?? [])];

// ---------------------------------------------------------------------------------------------------
// /metrics, parsed
// ---------------------------------------------------------------------------------------------------

interface Exposition {
  /** Family name → type, from the `# TYPE name type` lines. */
  readonly families: Map<string, string>;
  /** Names a query may use: counters and gauges as such, histograms and summaries with their suffixes. */
  readonly names: Set<string>;
  /** Sample name → label name → values seen. */
  readonly labels: Map<string, Map<string, Set<string>>>;
}

function parseExposition(text: string): Exposition {
  const families = new Map<string, string>();
  const names = new Set<string>();
  const labels = new Map<string, Map<string, Set<string>>>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
    if (type) {
      const [, name = '', kind = ''] = type;
      families.set(name, kind);
      names.add(name);
      if (kind === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
      if (kind === 'summary') for (const suffix of ['_sum', '_count']) names.add(`${name}${suffix}`);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!sample) continue;
    const [, name = '', body = ''] = sample;
    const byLabel = labels.get(name) ?? new Map<string, Set<string>>();
    labels.set(name, byLabel);
    for (const [, label = '', value = ''] of body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = byLabel.get(label) ?? new Set<string>();
      values.add(value);
      byLabel.set(label, values);
    }
  }
  return { families, names, labels };
}

/** The datasource variable every panel and target uses. */
const DATASOURCE = `\${datasource}`;

/** Labels Prometheus adds to every scraped series: a query may group or filter by them freely. */
const TARGET_LABELS = new Set(['instance', 'job']);

/** The memory engine with the Redis engine's counters, so sse_gateway_engine_events_total has its series. */
class CountingMemoryEngine extends MemoryEngine {
  counters(): Readonly<Record<string, number>> {
    const counts: RedisEngineStats = { refills: 1, resets: 1, redisErrors: 1, roundTrips: 1, gapsDetected: 1 };
    return { ...counts };
  }
}

describe('deploy/grafana/sse-gateway-dashboard.json', () => {
  let node: TestGateway;
  let exposition: Exposition;

  beforeAll(async () => {
    node = await startTestGateway(
      {},
      {
        engine: (config) =>
          new CountingMemoryEngine({ maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs }),
      },
    );
    const { url, adminUrl } = node;
    const topic = 'dashboard/series';

    // A stream that receives an event, then closes: a delivery, a disconnect and a connection duration.
    const first = await rawStream(eventsUrl(url, topic));
    expect(first.status).toBe(200);
    await waitFor(async () => (await metric(adminUrl, 'sse_gateway_connections')) === 1, {
      what: 'the first stream to be counted',
    });
    const published = await publish(url, { topic, data: 'one' });
    expect(published.status).toBe(200);
    const id = published.body.ids[0] ?? '';
    await waitFor(() => first.text.includes('data: one'), { what: 'the first event on the stream' });
    first.close();
    await waitFor(async () => (await metric(adminUrl, 'sse_gateway_connection_duration_seconds_count')) >= 1, {
      what: 'the closed stream to be observed',
    });

    // A resume with Last-Event-ID: a replay from history.
    await publish(url, { topic, data: 'two' });
    const resumed = await rawStream(eventsUrl(url, topic), { 'last-event-id': id });
    await waitFor(() => resumed.text.includes('data: two'), { what: 'the missed event replayed' });
    resumed.close();

    // A resume point from another epoch: a reset.
    const stale = await rawStream(eventsUrl(url, topic), { 'last-event-id': `${id.startsWith('z') ? 'y' : 'z'}:1-0` });
    await waitFor(() => stale.text.includes('gateway.reset'), { what: 'a gateway.reset on a stale resume point' });
    stale.close();

    // A rejected request.
    expect((await fetch(new URL('/events', url))).status).toBe(400);

    await waitFor(
      async () =>
        (await metric(adminUrl, 'sse_gateway_replay_events_count')) >= 1 &&
        (await metric(adminUrl, 'sse_gateway_connection_duration_seconds_count')) >= 3 &&
        (await metric(adminUrl, 'sse_gateway_connections')) === 0,
      { what: 'every stream closed and observed' },
    );
    const response = await fetch(`${adminUrl}/metrics`);
    expect(response.status).toBe(200);
    exposition = parseExposition(await response.text());
  });

  afterAll(async () => {
    closeAllRawStreams();
    await node?.close();
  });

  it('is a Grafana dashboard on a Prometheus datasource variable, with an instance variable', () => {
    expect(dashboard.uid).toBe('sse-gateway');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const datasource = dashboard.templating.list.find((variable) => variable.name === 'datasource');
    expect(datasource?.type).toBe('datasource');
    expect(datasource?.query).toBe('prometheus');
    expect(instanceVariable?.type).toBe('query');
    expect(variableQuery(instanceVariable)).toBe('label_values(sse_gateway_connections, instance)');
    for (const panel of queryPanels) {
      expect(panel.datasource?.uid, panel.title).toBe(DATASOURCE);
      for (const target of panel.targets ?? []) expect(target.datasource?.uid, panel.title).toBe(DATASOURCE);
    }
  });

  it('has at least 12 panels, each querying something, laid out on the 24-column grid with unique ids', () => {
    expect(queryPanels.length).toBeGreaterThanOrEqual(12);
    for (const panel of queryPanels) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) expect(target.expr?.trim(), panel.title).toBeTruthy();
    }
    const panels = allPanels(dashboard.panels);
    const ids = panels.map((panel) => panel.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of panels) {
      const grid = panel.gridPos;
      expect(grid, panel.title).toBeDefined();
      if (grid) expect(grid.x + grid.w, panel.title).toBeLessThanOrEqual(24);
    }
  });

  it('filters every query by the instance variable', () => {
    for (const expr of exprs) {
      for (const selector of expr.matchAll(/\bsse_gateway_[a-z0-9_]+(\{[^}]*\})?/g)) {
        expect(selector[1] ?? '', `${selector[0]} in ${expr}`).toContain('instance=~"$instance"');
      }
    }
  });

  it('queries only metrics the admin listener exports', () => {
    expect(exposition.families.get('sse_gateway_connections')).toBe('gauge');
    expect(exposition.families.get('sse_gateway_publish_duration_seconds')).toBe('histogram');
    const used = [...new Set(promql.flatMap(metricNames))].sort();
    expect(used.length).toBeGreaterThanOrEqual(15);
    const missing = used.filter((name) => !exposition.names.has(name));
    expect(missing, `not on /metrics: ${missing.join(', ')}`).toEqual([]);
  });

  it('applies rate() to counters and histogram buckets only, and histogram_quantile() to buckets', () => {
    for (const expr of exprs) {
      for (const [, name = ''] of expr.matchAll(/\brate\((sse_gateway_[a-z0-9_]+)/g)) {
        const family = exposition.families.get(name);
        const counter = family === 'counter' || (name.endsWith('_bucket') && exposition.names.has(name));
        expect(counter, `rate(${name}) in ${expr}`).toBe(true);
      }
      if (expr.includes('histogram_quantile')) {
        for (const name of metricNames(expr)) expect(name.endsWith('_bucket'), `${name} in ${expr}`).toBe(true);
      }
    }
  });

  it('groups and filters by labels those metrics have, with label values they take', () => {
    for (const expr of exprs) {
      const names = metricNames(expr);
      for (const [, list = ''] of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
        for (const label of list.split(',').map((part) => part.trim())) {
          if (!label || TARGET_LABELS.has(label)) continue;
          for (const name of names) {
            expect(exposition.labels.get(name)?.has(label), `${name} has label ${label} (${expr})`).toBe(true);
          }
        }
      }
      for (const [, name = '', body = ''] of expr.matchAll(/\b(sse_gateway_[a-z0-9_]+)\{([^}]*)\}/g)) {
        for (const [, label = '', op, value = ''] of body.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
          if (TARGET_LABELS.has(label)) continue;
          const values = exposition.labels.get(name)?.get(label);
          expect(values, `${name} has label ${label} (${expr})`).toBeDefined();
          if ((op === '=' || op === '=~') && /^[\w-]+(\|[\w-]+)*$/.test(value)) {
            for (const wanted of value.split('|'))
              expect(values?.has(wanted), `${name}{${label}="${wanted}"}`).toBe(true);
          }
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Prometheus scrape configs and the compose monitoring profile
// ---------------------------------------------------------------------------------------------------

interface ScrapeConfig {
  readonly scrape_configs: {
    job_name: string;
    scrape_interval?: string;
    metrics_path?: string;
    static_configs: { targets: string[] }[];
  }[];
}

interface Service {
  image?: string;
  profiles?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
}

function gatewayJob(path: string) {
  const config = parse(read(path)) as ScrapeConfig;
  const job = config.scrape_configs.find((candidate) => candidate.job_name === 'sse-gateway');
  expect(job, `${path} has the sse-gateway job`).toBeDefined();
  return {
    scrapeInterval: job?.scrape_interval,
    metricsPath: job?.metrics_path ?? '/metrics',
    targets: (job?.static_configs ?? []).flatMap((group) => group.targets),
  };
}

/** `host:container[:mode]` volume entries of `service`, as [host, container]. */
const mounts = (service: Service | undefined) =>
  (service?.volumes ?? []).map((volume) => volume.split(':').slice(0, 2) as [string, string]);

describe('Prometheus scrape configs', () => {
  const compose = parse(read('docker-compose.yml')) as { services: Record<string, Service> };
  const services = compose.services;
  const gateways = ['gateway1', 'gateway2', 'gateway3'];

  it('deploy/prometheus.compose.yml scrapes the admin port of every compose gateway every 5 s', () => {
    const job = gatewayJob('deploy/prometheus.compose.yml');
    expect(job.scrapeInterval).toBe('5s');
    expect(job.metricsPath).toBe('/metrics');
    expect(job.targets).toEqual(gateways.map((name) => `${name}:8081`));
    for (const target of job.targets) {
      const [host = '', port] = target.split(':');
      const environment = services[host]?.environment;
      expect(environment, `${host} is a service of docker-compose.yml`).toBeDefined();
      expect(environment?.ADMIN_PORT).toBe(port);
      expect(environment?.ADMIN_HOST).toBe('0.0.0.0');
      // The admin listener stays on the compose network.
      expect(services[host]?.ports, `${host} publishes no port`).toBeUndefined();
    }
  });

  it('deploy/prometheus.local.yml scrapes the admin ports pnpm cluster gives its three gateways', () => {
    const job = gatewayJob('deploy/prometheus.local.yml');
    expect(job.scrapeInterval).toBe('5s');
    expect(job.metricsPath).toBe('/metrics');
    expect(job.targets).toEqual(['127.0.0.1:9181', '127.0.0.1:9182', '127.0.0.1:9183']);
    const base = /ADMIN_BASE_PORT \?\? (\d+)/.exec(read('packages/gateway/src/cluster/main.ts'))?.[1];
    expect(base, 'pnpm cluster default ADMIN_BASE_PORT').toBe('9181');
  });

  it('runs Prometheus and Grafana only under the monitoring profile, on pinned images', () => {
    const monitoring = Object.keys(services).filter((name) => services[name]?.profiles?.includes('monitoring'));
    expect(monitoring.sort()).toEqual(['grafana', 'prometheus']);
    expect(services.prometheus?.image).toMatch(/^prom\/prometheus:v\d+\.\d+\.\d+$/);
    expect(services.grafana?.image).toMatch(/^grafana\/grafana:\d+\.\d+\.\d+$/);
    expect(services.prometheus?.ports).toEqual(['9090:9090']);
    expect(services.grafana?.ports).toEqual(['3000:3000']);
    expect(mounts(services.prometheus)).toContainEqual([
      './deploy/prometheus.compose.yml',
      '/etc/prometheus/prometheus.yml',
    ]);
    expect(services.grafana?.environment?.GF_AUTH_ANONYMOUS_ENABLED).toBe('true');
    expect(services.grafana?.environment?.GF_AUTH_ANONYMOUS_ORG_ROLE).toBe('Viewer');
    expect(read('docker-compose.yml').split('\nname:')[0]).toContain('--profile monitoring');
  });

  it('provisions Grafana with the Prometheus service and the dashboard JSON it mounts', () => {
    const grafanaMounts = mounts(services.grafana);
    for (const [host] of grafanaMounts) expect(existsSync(`${root}${host.replace(/^\.\//, '')}`), host).toBe(true);
    const mountedAt = (host: string) => grafanaMounts.find(([from]) => from === host)?.[1];
    expect(mountedAt('./deploy/grafana/provisioning/datasources')).toBe('/etc/grafana/provisioning/datasources');
    expect(mountedAt('./deploy/grafana/provisioning/dashboards')).toBe('/etc/grafana/provisioning/dashboards');

    const datasources = parse(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as {
      datasources: { type: string; url: string; isDefault?: boolean }[];
    };
    const prometheus = datasources.datasources.find((datasource) => datasource.type === 'prometheus');
    const port = services.prometheus?.ports?.[0]?.split(':')[1];
    expect(prometheus?.url).toBe(`http://prometheus:${port}`);
    expect(prometheus?.isDefault).toBe(true);

    const providers = parse(read('deploy/grafana/provisioning/dashboards/sse-gateway.yml')) as {
      providers: { type: string; options: { path: string } }[];
    };
    const provider = providers.providers.find((candidate) => candidate.type === 'file');
    const dashboardAt = mountedAt('./deploy/grafana/sse-gateway-dashboard.json') ?? '';
    expect(dashboardAt.startsWith(`${provider?.options.path}/`), dashboardAt).toBe(true);
    expect(dashboardAt.endsWith('.json')).toBe(true);
  });
});
