/**
 * The docker-compose topology without Docker: redis-server, N gateway processes and HAProxy (config from
 * the same template), all on loopback. Used by `pnpm cluster` and by the cluster end-to-end test.
 * Every process is started here and stopped here, by pid.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDevCertificate } from '../server/dev-certificate.js';
import { HAPROXY_TAKE_OUT_MS, renderHaproxyConfig } from './haproxy-config.js';
import { type RedisTopology, startLocalRedis } from './local-redis.js';
import { delay, freePort, POLL_MS, READY_TIMEOUT_MS, spawnLogged, stopChild, waitForPort } from './processes.js';

export { freePort } from './processes.js';

export interface LocalClusterOptions {
  /** Gateway replicas. Default 3. */
  readonly gateways?: number;
  /** Load balancer port; 0 = a free one. Default 0. */
  readonly port?: number;
  /** Load balancer HTTPS (h2) port; 0 = a free one. Default 0. */
  readonly tlsPort?: number;
  /**
   * PEM file with the HTTPS front end's certificate chain and key; default: a self-signed development
   * certificate for localhost, generated into the OS temp folder and kept while it is valid.
   */
  readonly tlsPemPath?: string;
  /** First gateway port; 0 = free ones. Default 0. */
  readonly gatewayBasePort?: number;
  /** First admin port (gateway k gets this + k); 0 = free ones. Default 0. */
  readonly adminBasePort?: number;
  /** Use this Redis (any REDIS_URL form) instead of spawning one. */
  readonly redisUrl?: string;
  /** What to spawn when no redisUrl is given: one redis-server, or a 3+3 Redis Cluster. Default single. */
  readonly redisTopology?: RedisTopology;
  /** Extra env for every gateway (settings). */
  readonly env?: Readonly<Record<string, string>>;
  /** Where process output goes: 'inherit' for the CLI, 'pipe' (collected) for tests. Default 'pipe'. */
  readonly output?: 'inherit' | 'pipe';
  readonly haproxyPath?: string;
  readonly redisServerPath?: string;
}

export interface GatewayNode {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  /** Its admin listener: /metrics, /stats, the dashboard, the admin API. */
  readonly adminUrl: string;
  readonly pid: number | undefined;
  /** Output so far (when output is 'pipe'). */
  readonly log: () => string;
  /** Sends a signal; resolves when the process exited. */
  kill(signal: NodeJS.Signals): Promise<number | null>;
  /** Starts the process again on the same port; resolves when it is ready. */
  restart(): Promise<void>;
  readonly running: boolean;
}

export interface LocalCluster {
  /** The load balancer's URL: what clients and publishers use. */
  readonly url: string;
  /** The load balancer's HTTPS URL (HTTP/2 and HTTP/1.1). */
  readonly tlsUrl: string;
  readonly redisUrl: string;
  readonly nodes: readonly GatewayNode[];
  /** HAProxy's output so far (when output is 'pipe'): warnings such as servers going DOWN and UP. */
  readonly haproxyLog: () => string;
  /** Resolves when HAProxy sees exactly `count` replicas as up. */
  waitForHealthyBackends(count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Shared by every run, so a browser exception for the development certificate lasts as long as it does. */
const DEV_CERTIFICATE_DIR = join(tmpdir(), 'sse-gateway-dev-certificate');
/** Fits the usual 20 000 open-file limit of a developer machine or CI runner. */
const LOCAL_MAX_CONNECTIONS = 8_000;
/** The built gateway, whether this module runs from src/ (tests) or dist/. */
const MAIN_PATH = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const count = options.gateways ?? 3;
  const output = options.output ?? 'pipe';
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'sse-cluster-'));
  const nodes: ManagedNode[] = [];
  try {
    let redisUrl = options.redisUrl;
    if (!redisUrl) {
      const redis = await startLocalRedis({
        topology: options.redisTopology ?? 'single',
        dir,
        output,
        redisServerPath: options.redisServerPath,
      });
      children.push(...redis.children);
      redisUrl = redis.url;
    }

    const startNode = async (i: number): Promise<ManagedNode> => {
      const env = {
        // Readiness off and still serving until HAProxy has taken the node out (overridable).
        DRAIN_DELAY_MS: String(HAPROXY_TAKE_OUT_MS),
        ...options.env,
        REDIS_URL: redisUrl,
        NODE_ID: `gateway${i + 1}`,
      };
      const fixed = Boolean(options.gatewayBasePort && options.adminBasePort);
      // A probed port is only free right now: another process may bind it before the gateway does. With
      // ports of our own choosing, try others; fixed ports are the caller's to sort out.
      for (let attempt = 1; ; attempt++) {
        const port = options.gatewayBasePort ? options.gatewayBasePort + i : await freePort();
        // Admin ports follow the gateways' when those are fixed (pnpm cluster prints them for scraping).
        const adminPort = options.adminBasePort ? options.adminBasePort + i : await freePort();
        const node = new ManagedNode(`gateway${i + 1}`, port, adminPort, env, output);
        nodes.push(node);
        try {
          await node.start();
          return node;
        } catch (error) {
          nodes.splice(nodes.indexOf(node), 1);
          await node.kill('SIGKILL');
          if (fixed || attempt >= 3 || !/EADDRINUSE/.test((error as Error).message)) throw error;
        }
      }
    };
    const started = await Promise.all(Array.from({ length: count }, (_, i) => startNode(i)));
    nodes.splice(0, nodes.length, ...started);

    const lbPort = options.port || (await freePort());
    const tlsPort = options.tlsPort || (await freePort());
    const statsPort = await freePort();
    const tlsPemPath = options.tlsPemPath ?? (await ensureDevCertificate(DEV_CERTIFICATE_DIR)).combinedPath;
    const configPath = join(dir, 'haproxy.cfg');
    writeFileSync(
      configPath,
      renderHaproxyConfig({
        bind: `127.0.0.1:${lbPort}`,
        tlsBind: `127.0.0.1:${tlsPort}`,
        tlsCertPath: tlsPemPath,
        statsBind: `127.0.0.1:${statsPort}`,
        maxConnections: LOCAL_MAX_CONNECTIONS,
        servers: nodes.map((node) => ({ name: node.name, host: '127.0.0.1', port: node.port })),
      }),
    );
    const haproxy = spawnLogged(options.haproxyPath ?? findHaproxy(), ['-f', configPath, '-db'], {}, output);
    children.push(haproxy.child);
    await waitForPort(lbPort, 'haproxy', haproxy.log, haproxy.child);
    await waitForPort(tlsPort, 'haproxy (TLS)', haproxy.log, haproxy.child);

    const cluster: LocalCluster = {
      url: `http://127.0.0.1:${lbPort}`,
      tlsUrl: `https://127.0.0.1:${tlsPort}`,
      redisUrl,
      nodes,
      haproxyLog: haproxy.log,
      async waitForHealthyBackends(expected, timeoutMs = READY_TIMEOUT_MS) {
        const deadline = Date.now() + timeoutMs;
        let up = -1;
        while (Date.now() < deadline) {
          up = await countUpBackends(statsPort).catch(() => -1);
          if (up === expected) return;
          await delay(POLL_MS);
        }
        throw new Error(`HAProxy saw ${up} healthy gateways, expected ${expected}`);
      },
      async stop() {
        await Promise.all(nodes.map((node) => node.kill('SIGKILL')));
        await Promise.all(children.map((child) => stopChild(child)));
        rmSync(dir, { recursive: true, force: true });
      },
    };
    await cluster.waitForHealthyBackends(count);
    return cluster;
  } catch (error) {
    await Promise.all(nodes.map((node) => node.kill('SIGKILL')));
    await Promise.all(children.map((child) => stopChild(child)));
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

class ManagedNode implements GatewayNode {
  #child: ChildProcess | undefined;
  #log: () => string = () => '';

  constructor(
    readonly name: string,
    readonly port: number,
    readonly adminPort: number,
    private readonly env: Record<string, string>,
    private readonly output: 'inherit' | 'pipe',
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get adminUrl(): string {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  log(): string {
    return this.#log();
  }

  async start(): Promise<void> {
    const started = spawnLogged(
      process.execPath,
      [MAIN_PATH],
      {
        HOST: '127.0.0.1',
        PORT: String(this.port),
        ADMIN_PORT: String(this.adminPort),
        LOG_LEVEL: 'info',
        TRUST_PROXY: 'true',
        ...this.env,
      },
      this.output,
    );
    this.#child = started.child;
    this.#log = started.log;
    await waitForReady(this.url, started.child, started.log);
  }

  async kill(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = once(child, 'exit');
    child.kill(signal);
    const [code] = (await exited) as [number | null];
    return code;
  }

  async restart(): Promise<void> {
    if (this.running) await this.kill('SIGKILL');
    await this.start();
  }
}

async function waitForReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`gateway at ${url} exited with ${child.exitCode}:\n${log()}`);
    const ok = await fetch(`${url}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) return;
    await delay(POLL_MS);
  }
  throw new Error(`gateway at ${url} not ready within ${READY_TIMEOUT_MS} ms:\n${log()}`);
}

async function countUpBackends(statsPort: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`);
  const csv = await response.text();
  return csv
    .split('\n')
    .filter((line) => line.startsWith('gateways,') && !line.startsWith('gateways,BACKEND') && /,UP/.test(line)).length;
}

/** Debian installs haproxy in /usr/sbin, which is not on every user's PATH. */
export function findHaproxy(): string {
  const candidates = ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/usr/bin/haproxy'];
  return candidates.find((path) => existsSync(path)) ?? 'haproxy';
}
