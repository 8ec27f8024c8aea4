/**
 * Real Redis topologies for failover tests: a Sentinel group (primary, replicas, sentinels) and a Redis Cluster
 * (primaries with replicas). Every node is a `redis-server` on free loopback ports, in its own temp dir with its
 * own config file, so a test can SIGKILL it, freeze it (SIGSTOP: what a partition looks like) and restart it
 * with the state Redis keeps there (cluster nodes.conf, the files sentinels rewrite). Nothing is persisted
 * (`save ""`, `appendonly no`). Builders and waits poll what Redis reports (ROLE, INFO, CLUSTER INFO/SLOTS/NODES,
 * SENTINEL answers) with generous deadlines, never fixed sleeps; leftover servers die with the test process.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { launch } from './redis-server.js';
import { waitFor } from './wait.js';

export interface RedisNode {
  readonly host: string;
  readonly port: number;
  /** redis://127.0.0.1:port */
  readonly url: string;
  /** Undefined while stopped. */
  readonly pid: number | undefined;
  /**
   * Sends a signal (default SIGKILL, a crash) and, for SIGKILL/SIGTERM, waits for the exit. SIGTERM thaws a
   * frozen node first and escalates to SIGKILL when the exit takes longer than 10 s.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP: sockets stay open, nothing answers (what a network partition looks like). */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  /**
   * Starts the process again on the same port with the same config file (cluster nodes keep their nodes.conf);
   * a running node is stopped first (SIGTERM). Resolves once it answers PING. With `replicaOf`, it starts
   * as that node's replica (`--replicaof`), as an orchestrator restarts a Sentinel group's old primary.
   */
  restart(options?: { readonly replicaOf?: Address }): Promise<void>;
}

export interface Address {
  readonly host: string;
  readonly port: number;
}

export interface SentinelGroup {
  /** Master name, e.g. 'sse-test'. */
  readonly name: string;
  /** The node that was primary at start. */
  readonly primary: RedisNode;
  readonly replicas: readonly RedisNode[];
  readonly sentinels: readonly RedisNode[];
  readonly sentinelAddresses: readonly Address[];
  /** redis+sentinel://127.0.0.1:p1,127.0.0.1:p2/<name> */
  readonly url: string;
  /** Asks a sentinel which node is primary now. */
  currentPrimary(): Promise<Address>;
  /** SENTINEL FAILOVER, then waits until the sentinels report a different primary that answers ROLE as master. */
  failover(): Promise<Address>;
  /** Waits until the sentinels report a primary other than `previous` (after you SIGKILL it) that answers as master. */
  waitForNewPrimary(previous: Address): Promise<Address>;
  stop(): Promise<void>;
}

export interface RedisClusterFixture {
  /** The primaries at start; `replicas[i]` replicated `primaries[Math.floor(i / replicasPerPrimary)]` at start. */
  readonly primaries: readonly RedisNode[];
  readonly replicas: readonly RedisNode[];
  /** Every node's address (seed list). */
  readonly nodes: readonly Address[];
  /** redis+cluster://127.0.0.1:p1,127.0.0.1:p2,... */
  readonly url: string;
  /** The node currently serving `slot` as primary (asks CLUSTER SLOTS on a live node). */
  slotOwner(slot: number): Promise<RedisNode>;
  /**
   * Moves `slot` (and its keys) to `target` with SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE
   * on every primary; resolves once every live node agrees.
   */
  moveSlot(slot: number, target: RedisNode): Promise<void>;
  /** Waits until CLUSTER INFO says cluster_state:ok on every live node and every slot has a live primary. */
  waitForHealthy(): Promise<void>;
  stop(): Promise<void>;
}

export interface SentinelGroupOptions {
  /**
   * `min-replicas-to-write` on every data node (with `min-replicas-max-lag 5`): a primary left without
   * replicas refuses writes (NOREPLICAS), which closes the split-brain window of a failover. Default 0.
   */
  readonly minReplicasToWrite?: number;
  /** Default 1. */
  readonly replicas?: number;
  /** Default 3 (quorum is a majority: 2). */
  readonly sentinels?: number;
  /** Sentinel down-after-milliseconds. Default 1000. */
  readonly downAfterMs?: number;
  /** Sentinel failover-timeout; a failed election is retried only after twice this. Default 5000. */
  readonly failoverTimeoutMs?: number;
}

export interface RedisClusterOptions {
  /** Default 3. A primary's replica is only promoted when a majority of primaries is alive to vote. */
  readonly primaries?: number;
  /** Default 1. */
  readonly replicasPerPrimary?: number;
  /** cluster-node-timeout: how long a silent node takes to be marked failing. Default 2000. */
  readonly nodeTimeoutMs?: number;
}

const HOST = '127.0.0.1';
const SENTINEL_MASTER_NAME = 'sse-test';
const SLOT_COUNT = 16_384;

const DEFAULT_SENTINEL_REPLICAS = 1;
const DEFAULT_SENTINELS = 3;
const DEFAULT_DOWN_AFTER_MS = 1_000;
const DEFAULT_FAILOVER_TIMEOUT_MS = 5_000;
const DEFAULT_CLUSTER_PRIMARIES = 3;
const DEFAULT_REPLICAS_PER_PRIMARY = 1;
const DEFAULT_NODE_TIMEOUT_MS = 2_000;

/** Free-port probes race with other processes: a node whose port was taken meanwhile gets new ports. */
const SPAWN_ATTEMPTS = 5;
/** Building a topology (spawn, sync, discovery, agreement) on a loaded 2-core CI box. */
const TOPOLOGY_DEADLINE_MS = 45_000;
/** A SIGTERMed node that has not exited by then gets SIGKILL. */
const EXIT_DEADLINE_MS = 10_000;
const ADMIN_CONNECT_TIMEOUT_MS = 2_000;
/** An admin command that has no answer by then counts as "not answering" (a frozen node never answers). */
const ADMIN_COMMAND_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 50;
const MIGRATE_BATCH_KEYS = 100;
const MIGRATE_TIMEOUT_MS = 10_000;

const binary = () => process.env.REDIS_SERVER_BIN ?? 'redis-server';
const range = (count: number) => Array.from({ length: count }, (_, index) => index);
const formatAddress = (address: Address) => `${address.host}:${address.port}`;
const sameAddress = (a: Address, b: Address) => a.host === b.host && a.port === b.port;

// ---------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------

/** What a test left behind without calling stop(): killed and removed when the test process ends. */
const leftoverNodes = new Set<ManagedNode>();
const leftoverDirs = new Set<string>();
const TERMINATION_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
let cleanupInstalled = false;

/**
 * Vitest ends its fork workers with SIGTERM, which never runs 'exit' handlers (not even the one launch() installs):
 * clean up on the termination signals too, then die of the signal as if nobody had listened.
 */
function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.once('exit', cleanUpNow);
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const signal of TERMINATION_SIGNALS) {
    const onSignal = () => {
      cleanUpNow();
      for (const [other, handler] of handlers) process.off(other, handler);
      // Someone else listening (a graceful-shutdown handler) decides what the signal means; otherwise die of it.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    handlers.set(signal, onSignal);
    process.on(signal, onSignal);
  }
}

/** Synchronous: it runs in 'exit' and signal handlers. */
function cleanUpNow(): void {
  for (const node of leftoverNodes) node.killNow();
  leftoverNodes.clear();
  for (const dir of leftoverDirs) rmSync(dir, { recursive: true, force: true });
  leftoverDirs.clear();
}

interface NodeSpec {
  /** For error messages: "cluster replica 2". */
  readonly label: string;
  readonly sentinel?: boolean;
  /** Cluster nodes need a second free port for the cluster bus. */
  readonly clusterBus?: boolean;
  config(ports: { readonly port: number; readonly busPort: number | undefined }, dir: string): string;
}

class ManagedNode implements RedisNode {
  readonly host = HOST;
  readonly port: number;
  readonly url: string;
  readonly label: string;
  readonly dir: string;
  readonly busPort: number | undefined;
  readonly #args: readonly string[];
  #child: ChildProcess | undefined;
  #frozen = false;

  constructor(spec: NodeSpec, port: number, busPort: number | undefined, dir: string, args: readonly string[]) {
    this.port = port;
    this.busPort = busPort;
    this.url = `redis://${HOST}:${port}`;
    this.label = `${spec.label} (${HOST}:${port})`;
    this.dir = dir;
    this.#args = args;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Running and not frozen: the node can answer. */
  get live(): boolean {
    return this.#child !== undefined && !this.#frozen;
  }

  adopt(child: ChildProcess): void {
    this.#child = child;
    this.#frozen = false;
    child.once('exit', () => {
      if (this.#child !== child) return;
      this.#child = undefined;
      this.#frozen = false;
    });
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#child;
    if (!child) return;
    if (signal === 'SIGSTOP') return this.freeze();
    if (signal === 'SIGCONT') return this.thaw();
    const waits = signal === 'SIGKILL' || signal === 'SIGTERM';
    const exited = waits ? once(child, 'exit') : undefined;
    child.kill(signal);
    // A stopped process acts on a catchable signal only once it runs again; SIGKILL needs no SIGCONT.
    if (this.#frozen && signal !== 'SIGKILL') {
      child.kill('SIGCONT');
      this.#frozen = false;
    }
    if (!exited) return;
    const escalate = setTimeout(() => child.kill('SIGKILL'), EXIT_DEADLINE_MS);
    try {
      await exited;
    } finally {
      clearTimeout(escalate);
    }
  }

  freeze(): void {
    this.#running('freeze').kill('SIGSTOP');
    this.#frozen = true;
  }

  thaw(): void {
    this.#running('thaw').kill('SIGCONT');
    this.#frozen = false;
  }

  async restart(options: { readonly replicaOf?: Address } = {}): Promise<void> {
    if (this.#child) await this.kill('SIGTERM');
    const replicaOf = options.replicaOf ? ['--replicaof', options.replicaOf.host, String(options.replicaOf.port)] : [];
    try {
      this.adopt(await launchVerified(this.port, [...this.#args, ...replicaOf]));
    } catch (error) {
      throw new Error(`could not restart ${this.label}: ${(error as Error).message}`);
    }
  }

  /** SIGKILL and remove the temp dir. */
  async dispose(): Promise<void> {
    await this.kill('SIGKILL');
    leftoverNodes.delete(this);
    await rm(this.dir, { recursive: true, force: true });
    leftoverDirs.delete(this.dir);
  }

  /** SIGKILL without waiting, for exit and signal handlers. */
  killNow(): void {
    this.#child?.kill('SIGKILL');
  }

  #running(action: string): ChildProcess {
    if (!this.#child) throw new Error(`cannot ${action} ${this.label}: it is not running`);
    return this.#child;
  }
}

async function startNode(spec: NodeSpec): Promise<ManagedNode> {
  installCleanup();
  const dir = await mkdtemp(join(tmpdir(), 'sse-redis-'));
  leftoverDirs.add(dir);
  const configPath = join(dir, spec.sentinel ? 'sentinel.conf' : 'redis.conf');
  const args = spec.sentinel ? [configPath, '--sentinel'] : [configPath];
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < SPAWN_ATTEMPTS; attempt++) {
    const port = await freePort();
    const busPort = spec.clusterBus ? await freePortOtherThan(port) : undefined;
    // A failed attempt may have written nodes.conf naming the old ports.
    await rm(join(dir, 'nodes.conf'), { force: true });
    await writeFile(configPath, spec.config({ port, busPort }, dir));
    try {
      const child = await launchVerified(port, args);
      const node = new ManagedNode(spec, port, busPort, dir, args);
      node.adopt(child);
      leftoverNodes.add(node);
      return node;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        await rm(dir, { recursive: true, force: true });
        leftoverDirs.delete(dir);
        throw new Error(
          `These tests need redis-server 7 on PATH (or REDIS_SERVER_BIN) to build a ${spec.label}: ${(error as Error).message}`,
        );
      }
      lastError = error as Error;
    }
  }
  await rm(dir, { recursive: true, force: true });
  leftoverDirs.delete(dir);
  throw new Error(`${spec.label} did not start after ${SPAWN_ATTEMPTS} attempts: ${lastError?.message}`);
}

async function freePortOtherThan(taken: number): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port !== taken) return port;
  }
}

/**
 * launch() waits for PING on the port, but a stranger that grabbed the port after our probe would answer too:
 * make sure the server answering is the process just spawned.
 */
async function launchVerified(port: number, args: readonly string[]): Promise<ChildProcess> {
  const child = await launch(binary(), port, args);
  let answeredBy: string | undefined;
  try {
    answeredBy = infoField(String(await query({ host: HOST, port }, ['INFO', 'server'])), 'process_id');
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  if (answeredBy !== String(child.pid)) {
    child.kill('SIGKILL');
    throw new Error(`port ${port} is served by process ${answeredBy}, not the spawned ${child.pid}`);
  }
  return child;
}

/** Starts nodes and, when the topology cannot be built, disposes every one started (even those still starting). */
class NodePool {
  readonly #starting: Promise<ManagedNode>[] = [];

  start(spec: NodeSpec): Promise<ManagedNode> {
    const node = startNode(spec);
    this.#starting.push(node);
    return node;
  }

  async disposeAll(): Promise<void> {
    const settled = await Promise.allSettled(this.#starting);
    await Promise.all(settled.map((result) => (result.status === 'fulfilled' ? result.value.dispose() : undefined)));
  }
}

/** Runs `build` with a pool; on failure disposes the pool's nodes and rethrows. */
async function buildWith<T>(build: (pool: NodePool) => Promise<T>): Promise<T> {
  const pool = new NodePool();
  try {
    return await build(pool);
  } catch (error) {
    await pool.disposeAll();
    throw error;
  }
}

function configLines(lines: readonly string[]): string {
  return `${lines.join('\n')}\n`;
}

function dataNodeConfig(port: number, dir: string, extra: readonly string[] = []): string {
  return configLines([
    `port ${port}`,
    `bind ${HOST}`,
    `dir "${dir}"`,
    'save ""',
    'appendonly no',
    // Replicas sync at once instead of the primary waiting 5 s for more replicas to share one transfer.
    'repl-diskless-sync-delay 0',
    ...extra,
  ]);
}

// ---------------------------------------------------------------------------------------------------
// Admin queries
// ---------------------------------------------------------------------------------------------------

/** One short-lived admin connection: no retries, no offline queue, so a dead or frozen node fails fast. */
async function withAdmin<T>(
  address: Address,
  use: (client: Redis) => Promise<T>,
  commandTimeoutMs = ADMIN_COMMAND_TIMEOUT_MS,
): Promise<T> {
  const client = new Redis({
    host: address.host,
    port: address.port,
    protocol: 2,
    lazyConnect: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: ADMIN_CONNECT_TIMEOUT_MS,
    commandTimeout: commandTimeoutMs,
    disableClientInfo: true,
  });
  // Failures surface as rejected commands; without a listener ioredis would also log them.
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

function query(address: Address, args: readonly (string | number | Buffer)[], timeoutMs?: number): Promise<unknown> {
  const [command, ...rest] = args;
  return withAdmin(address, (client) => client.call(String(command), rest), timeoutMs);
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

/** 'master' | 'slave' | 'sentinel' from ROLE. */
async function roleOf(address: Address): Promise<string> {
  const reply = (await query(address, ['ROLE'])) as unknown[];
  return String(reply[0]);
}

/** A flat [field, value, field, value, ...] reply (SENTINEL MASTER, SENTINEL REPLICAS entries) as an object. */
function fieldPairs(reply: unknown): Record<string, string> {
  const flat = reply as unknown[];
  const fields: Record<string, string> = {};
  for (let index = 0; index + 1 < flat.length; index += 2) fields[String(flat[index])] = String(flat[index + 1]);
  return fields;
}

function errorMessage(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

// ---------------------------------------------------------------------------------------------------
// Sentinel group
// ---------------------------------------------------------------------------------------------------

export async function startSentinelGroup(options: SentinelGroupOptions = {}): Promise<SentinelGroup> {
  const replicaCount = options.replicas ?? DEFAULT_SENTINEL_REPLICAS;
  const sentinelCount = options.sentinels ?? DEFAULT_SENTINELS;
  const downAfterMs = options.downAfterMs ?? DEFAULT_DOWN_AFTER_MS;
  const failoverTimeoutMs = options.failoverTimeoutMs ?? DEFAULT_FAILOVER_TIMEOUT_MS;
  if (!Number.isInteger(replicaCount) || replicaCount < 0)
    throw new RangeError(`replicas must be >= 0: ${replicaCount}`);
  if (!Number.isInteger(sentinelCount) || sentinelCount < 1) {
    throw new RangeError(`sentinels must be >= 1: ${sentinelCount}`);
  }
  const name = SENTINEL_MASTER_NAME;
  const guard =
    options.minReplicasToWrite && options.minReplicasToWrite > 0
      ? [`min-replicas-to-write ${options.minReplicasToWrite}`, 'min-replicas-max-lag 5']
      : [];
  const quorum = Math.floor(sentinelCount / 2) + 1;

  return buildWith(async (pool) => {
    const primary = await pool.start({
      label: 'sentinel-group primary',
      config: ({ port }, dir) => dataNodeConfig(port, dir, guard),
    });
    const replicas = await Promise.all(
      range(replicaCount).map((index) =>
        pool.start({
          label: `sentinel-group replica ${index + 1}`,
          config: ({ port }, dir) => dataNodeConfig(port, dir, [`replicaof ${HOST} ${primary.port}`, ...guard]),
        }),
      ),
    );
    await waitForReplicas(primary, replicas);
    const sentinels = await Promise.all(
      range(sentinelCount).map((index) =>
        pool.start({
          label: `sentinel ${index + 1}`,
          sentinel: true,
          // Sentinels rewrite this file with what they learn (replicas, other sentinels, epochs): it must be writable.
          config: ({ port }, dir) =>
            configLines([
              `port ${port}`,
              `bind ${HOST}`,
              `dir "${dir}"`,
              `sentinel monitor ${name} ${HOST} ${primary.port} ${quorum}`,
              `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
              `sentinel failover-timeout ${name} ${failoverTimeoutMs}`,
              `sentinel parallel-syncs ${name} 1`,
            ]),
        }),
      ),
    );
    const group = new ManagedSentinelGroup(name, primary, replicas, sentinels, downAfterMs, failoverTimeoutMs);
    await group.waitForDiscovery();
    return group;
  });
}

/** Every replica reports master_link_status:up towards `primary`, and the primary counts them all. */
async function waitForReplicas(primary: ManagedNode, replicas: readonly ManagedNode[]): Promise<void> {
  if (replicas.length === 0) return;
  await waitFor(
    async () => {
      for (const replica of replicas) {
        const info = String(await query(replica, ['INFO', 'replication']));
        const link = infoField(info, 'master_link_status');
        if (infoField(info, 'master_port') !== String(primary.port) || link !== 'up') {
          throw new Error(
            `${replica.label}: master_port ${infoField(info, 'master_port')}, master_link_status ${link}`,
          );
        }
      }
      const connected = Number(infoField(String(await query(primary, ['INFO', 'replication'])), 'connected_slaves'));
      if (connected < replicas.length) throw new Error(`${primary.label} has ${connected} connected replicas`);
      return true;
    },
    {
      timeoutMs: TOPOLOGY_DEADLINE_MS,
      intervalMs: POLL_INTERVAL_MS,
      what: `${replicas.length} replica(s) of ${primary.label} to sync (master_link_status:up)`,
    },
  );
}

class ManagedSentinelGroup implements SentinelGroup {
  readonly name: string;
  readonly primary: ManagedNode;
  readonly replicas: readonly ManagedNode[];
  readonly sentinels: readonly ManagedNode[];
  readonly sentinelAddresses: readonly Address[];
  readonly url: string;
  /**
   * Long enough for a failed election to be retried: sentinels wait twice failover-timeout before trying again,
   * and votes can split more than once.
   */
  readonly #failoverDeadlineMs: number;

  constructor(
    name: string,
    primary: ManagedNode,
    replicas: readonly ManagedNode[],
    sentinels: readonly ManagedNode[],
    downAfterMs: number,
    failoverTimeoutMs: number,
  ) {
    this.name = name;
    this.primary = primary;
    this.replicas = replicas;
    this.sentinels = sentinels;
    this.sentinelAddresses = sentinels.map(({ host, port }) => ({ host, port }));
    this.url = `redis+sentinel://${this.sentinelAddresses.map(formatAddress).join(',')}/${name}`;
    this.#failoverDeadlineMs = Math.max(TOPOLOGY_DEADLINE_MS, downAfterMs + 6 * failoverTimeoutMs + 15_000);
  }

  /** Each sentinel sees the primary up, knows every replica (connected) and every other sentinel. */
  async waitForDiscovery(): Promise<void> {
    await waitFor(
      async () => {
        for (const sentinel of this.sentinels) {
          const master = fieldPairs(await query(sentinel, ['SENTINEL', 'MASTER', this.name]));
          const others = Number(master['num-other-sentinels']);
          const known = Number(master['num-slaves']);
          if (master.flags !== 'master' || others !== this.sentinels.length - 1 || known !== this.replicas.length) {
            throw new Error(
              `${sentinel.label}: flags ${master.flags}, ${others} other sentinels, ${known} replicas known`,
            );
          }
          const replicas = ((await query(sentinel, ['SENTINEL', 'REPLICAS', this.name])) as unknown[]).map(fieldPairs);
          const notReady = replicas.find(
            (replica) => replica.flags !== 'slave' || replica['master-link-status'] !== 'ok',
          );
          if (notReady) {
            throw new Error(`${sentinel.label} sees replica ${notReady.ip}:${notReady.port} as ${notReady.flags}`);
          }
        }
        return true;
      },
      {
        timeoutMs: TOPOLOGY_DEADLINE_MS,
        intervalMs: POLL_INTERVAL_MS,
        what: `${this.sentinels.length} sentinels to discover each other and ${this.replicas.length} replica(s) of ${this.name}`,
      },
    );
  }

  async currentPrimary(): Promise<Address> {
    const errors: string[] = [];
    for (const sentinel of this.#liveSentinels()) {
      try {
        return await this.#askPrimary(sentinel);
      } catch (error) {
        errors.push(`${sentinel.label}: ${errorMessage(error)}`);
      }
    }
    throw new Error(
      `no sentinel of ${this.name} answered GET-MASTER-ADDR-BY-NAME (${errors.join('; ') || 'none live'})`,
    );
  }

  async failover(): Promise<Address> {
    if (this.replicas.length === 0) throw new Error(`${this.name} has no replica to fail over to`);
    const previous = await waitFor(() => this.#agreedPrimary(), {
      timeoutMs: TOPOLOGY_DEADLINE_MS,
      intervalMs: POLL_INTERVAL_MS,
      what: `the sentinels of ${this.name} to agree on the primary before a failover`,
    });
    await waitFor(
      async () => {
        const [sentinel] = this.#liveSentinels();
        if (!sentinel) throw new Error('no sentinel is running');
        try {
          await query(sentinel, ['SENTINEL', 'FAILOVER', this.name]);
        } catch (error) {
          // INPROG: one is already under way (an earlier attempt whose answer we lost, or an automatic one).
          if (!/INPROG/.test(errorMessage(error))) throw error;
        }
        return true;
      },
      // NOGOODSLAVE until the sentinels have seen a healthy replica (right after a previous failover, say).
      {
        timeoutMs: TOPOLOGY_DEADLINE_MS,
        intervalMs: POLL_INTERVAL_MS,
        what: `SENTINEL FAILOVER ${this.name} to start`,
      },
    );
    return this.waitForNewPrimary(previous);
  }

  async waitForNewPrimary(previous: Address): Promise<Address> {
    return waitFor(
      async () => {
        const now = await this.#agreedPrimary();
        if (sameAddress(now, previous)) throw new Error(`the sentinels still report ${formatAddress(previous)}`);
        const role = await roleOf(now);
        if (role !== 'master') throw new Error(`${formatAddress(now)} answers ROLE ${role}`);
        return now;
      },
      {
        timeoutMs: this.#failoverDeadlineMs,
        intervalMs: POLL_INTERVAL_MS,
        what: `the sentinels of ${this.name} to promote a primary other than ${formatAddress(previous)}`,
      },
    );
  }

  async stop(): Promise<void> {
    await Promise.all([...this.sentinels, this.primary, ...this.replicas].map((node) => node.dispose()));
  }

  #liveSentinels(): ManagedNode[] {
    return this.sentinels.filter((sentinel) => sentinel.live);
  }

  async #askPrimary(sentinel: ManagedNode): Promise<Address> {
    const reply = (await query(sentinel, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name])) as unknown[] | null;
    if (!reply) throw new Error(`${sentinel.label} does not monitor ${this.name}`);
    return { host: String(reply[0]), port: Number(reply[1]) };
  }

  /** The primary every live sentinel reports; throws while they disagree. */
  async #agreedPrimary(): Promise<Address> {
    const live = this.#liveSentinels();
    if (live.length === 0) throw new Error('no sentinel is running');
    const answers = await Promise.all(live.map((sentinel) => this.#askPrimary(sentinel)));
    const [first] = answers;
    if (!first || answers.some((answer) => !sameAddress(answer, first))) {
      throw new Error(`the sentinels disagree: ${answers.map(formatAddress).join(', ')}`);
    }
    return first;
  }
}

// ---------------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------------

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisClusterFixture> {
  const primaryCount = options.primaries ?? DEFAULT_CLUSTER_PRIMARIES;
  const replicasPerPrimary = options.replicasPerPrimary ?? DEFAULT_REPLICAS_PER_PRIMARY;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? DEFAULT_NODE_TIMEOUT_MS;
  if (!Number.isInteger(primaryCount) || primaryCount < 1 || primaryCount > SLOT_COUNT) {
    throw new RangeError(`primaries must be 1..${SLOT_COUNT}: ${primaryCount}`);
  }
  if (!Number.isInteger(replicasPerPrimary) || replicasPerPrimary < 0) {
    throw new RangeError(`replicasPerPrimary must be >= 0: ${replicasPerPrimary}`);
  }
  const spec = (label: string): NodeSpec => ({
    label,
    clusterBus: true,
    config: ({ port, busPort }, dir) =>
      dataNodeConfig(port, dir, [
        'cluster-enabled yes',
        // Relative to `dir`: restart() finds it again, so a node keeps its id, epoch and view of the cluster.
        'cluster-config-file nodes.conf',
        `cluster-node-timeout ${nodeTimeoutMs}`,
        // An explicit bus port (not port + 10000, which nobody probed) so both come from free-port probes.
        `cluster-port ${busPort}`,
        // A replica may always take over, however long it was cut off: tests freeze and kill nodes on purpose.
        'cluster-replica-validity-factor 0',
        // Replicas stay with the primary they were given, so `replicas[i]` keeps meaning the same thing.
        'cluster-allow-replica-migration no',
      ]),
  });

  return buildWith(async (pool) => {
    const primaries = await Promise.all(
      range(primaryCount).map((index) => pool.start(spec(`cluster primary ${index + 1}`))),
    );
    const replicas = await Promise.all(
      range(primaryCount * replicasPerPrimary).map((index) =>
        pool.start(spec(`cluster replica ${index + 1} (of primary ${Math.floor(index / replicasPerPrimary) + 1})`)),
      ),
    );
    const masterOf = (replicaIndex: number) => primaries[Math.floor(replicaIndex / replicasPerPrimary)] as ManagedNode;
    const cluster = new ManagedCluster(primaries, replicas, nodeTimeoutMs);
    await cluster.build(masterOf);
    return cluster;
  });
}

interface SlotRange {
  readonly start: number;
  readonly end: number;
  readonly ownerPort: number;
}

interface ClusterNodeLine {
  readonly id: string;
  readonly port: number;
  readonly flags: readonly string[];
  /** '-' for a primary. */
  readonly masterId: string;
  readonly linkState: string;
}

class ManagedCluster implements RedisClusterFixture {
  readonly primaries: readonly ManagedNode[];
  readonly replicas: readonly ManagedNode[];
  readonly nodes: readonly Address[];
  readonly url: string;
  readonly #all: readonly ManagedNode[];
  /** Node ids never change: restart() keeps nodes.conf. */
  readonly #ids = new Map<ManagedNode, string>();
  readonly #healthyDeadlineMs: number;

  constructor(primaries: readonly ManagedNode[], replicas: readonly ManagedNode[], nodeTimeoutMs: number) {
    this.primaries = primaries;
    this.replicas = replicas;
    this.#all = [...primaries, ...replicas];
    this.nodes = this.#all.map(({ host, port }) => ({ host, port }));
    this.url = `redis+cluster://${this.nodes.map(formatAddress).join(',')}`;
    // Failure detection takes node-timeout plus gossip; a split election is retried after 4 x node-timeout.
    this.#healthyDeadlineMs = Math.max(TOPOLOGY_DEADLINE_MS, 20 * nodeTimeoutMs);
  }

  /** ADDSLOTSRANGE + MEET + REPLICATE, then waits until every node agrees and every replica is in sync. */
  async build(masterOf: (replicaIndex: number) => ManagedNode): Promise<void> {
    for (const node of this.#all) this.#ids.set(node, String(await query(node, ['CLUSTER', 'MYID'])));
    // Distinct config epochs before the nodes meet (what redis-cli --cluster create does), so no epoch
    // collision has to be resolved before the slot map is settled.
    await Promise.all(this.#all.map((node, index) => query(node, ['CLUSTER', 'SET-CONFIG-EPOCH', index + 1])));
    await Promise.all(
      this.primaries.map((node, index) => {
        const start = Math.floor((index * SLOT_COUNT) / this.primaries.length);
        const end = Math.floor(((index + 1) * SLOT_COUNT) / this.primaries.length) - 1;
        return query(node, ['CLUSTER', 'ADDSLOTSRANGE', start, end]);
      }),
    );
    const [seed, ...rest] = this.#all as [ManagedNode, ...ManagedNode[]];
    await Promise.all(rest.map((node) => query(node, ['CLUSTER', 'MEET', seed.host, seed.port, seed.busPort ?? 0])));
    await this.#poll(`all ${this.#all.length} cluster nodes to meet`, async () => {
      for (const node of this.#all) {
        const lines = await this.#clusterNodes(node);
        const pending = lines.filter((line) => line.linkState !== 'connected' && !line.flags.includes('myself'));
        const odd = lines.filter((line) => line.flags.some((flag) => flag === 'handshake' || flag === 'noaddr'));
        if (lines.length !== this.#all.length || pending.length > 0 || odd.length > 0) {
          throw new Error(`${node.label} knows ${lines.length} nodes, ${pending.length} not connected yet`);
        }
      }
    });
    await Promise.all(
      this.replicas.map((replica, index) =>
        // "Unknown node" until the replica has learnt the primary's id through gossip.
        this.#poll(`${replica.label} to accept CLUSTER REPLICATE`, async () => {
          await query(replica, ['CLUSTER', 'REPLICATE', this.#id(masterOf(index))]);
        }),
      ),
    );
    await this.#poll('the new cluster to settle (slots, replicas, links)', async () => {
      await this.#checkHealthy();
      for (const node of this.#all) {
        const lines = await this.#clusterNodes(node);
        for (const [index, replica] of this.replicas.entries()) {
          const line = lines.find((candidate) => candidate.id === this.#id(replica));
          if (!line?.flags.includes('slave') || line.masterId !== this.#id(masterOf(index))) {
            throw new Error(`${node.label} does not yet see ${replica.label} as a replica of ${masterOf(index).label}`);
          }
        }
      }
      for (const replica of this.replicas) {
        const link = infoField(String(await query(replica, ['INFO', 'replication'])), 'master_link_status');
        if (link !== 'up') throw new Error(`${replica.label}: master_link_status ${link}`);
      }
    });
  }

  async slotOwner(slot: number): Promise<RedisNode> {
    checkSlot(slot);
    const errors: string[] = [];
    for (const node of this.#live()) {
      try {
        const owner = (await this.#slotRanges(node)).find((range) => range.start <= slot && slot <= range.end);
        if (!owner) throw new Error(`slot ${slot} has no owner`);
        return this.#byPort(owner.ownerPort);
      } catch (error) {
        errors.push(`${node.label}: ${errorMessage(error)}`);
      }
    }
    throw new Error(`no live cluster node could name the owner of slot ${slot} (${errors.join('; ') || 'none live'})`);
  }

  async moveSlot(slot: number, target: RedisNode): Promise<void> {
    checkSlot(slot);
    const destination = this.#all.find((node) => node === target);
    if (!destination) throw new Error(`moveSlot: ${target.url} is not a node of this cluster`);
    if (!destination.live) throw new Error(`moveSlot: ${destination.label} is not running`);
    const targetRole = await roleOf(destination);
    if (targetRole !== 'master') throw new Error(`moveSlot: ${destination.label} is a ${targetRole}, not a primary`);
    const source = (await this.slotOwner(slot)) as ManagedNode;
    if (source !== destination) {
      const sourceId = this.#id(source);
      const targetId = this.#id(destination);
      await query(destination, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId]);
      await query(source, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId]);
      await this.#migrateKeys(slot, source, destination);
      // Target first (it bumps its epoch and owns the slot), then the source, then every other primary: the
      // order redis-cli uses, so no node ever redirects a client back and forth.
      await query(destination, ['CLUSTER', 'SETSLOT', slot, 'NODE', targetId]);
      await this.#poll(`${source.label} to hand slot ${slot} over`, async () => {
        try {
          await query(source, ['CLUSTER', 'SETSLOT', slot, 'NODE', targetId]);
        } catch (error) {
          // A key written while the slot was migrating: move it too, then try again.
          if (/still hold keys/i.test(errorMessage(error))) await this.#migrateKeys(slot, source, destination);
          throw error;
        }
      });
      const others = this.#live().filter((node) => node !== source && node !== destination);
      for (const node of others) {
        if ((await roleOf(node)) === 'master') await query(node, ['CLUSTER', 'SETSLOT', slot, 'NODE', targetId]);
      }
    }
    await this.#poll(`every live node to agree that ${destination.label} owns slot ${slot}`, async () => {
      for (const node of this.#live()) {
        const owner = (await this.#slotRanges(node)).find((range) => range.start <= slot && slot <= range.end);
        if (owner?.ownerPort !== destination.port) {
          throw new Error(`${node.label} says slot ${slot} is on port ${owner?.ownerPort ?? 'nobody'}`);
        }
      }
    });
  }

  async waitForHealthy(): Promise<void> {
    await this.#poll('cluster_state:ok on every live node and a live primary for every slot', () =>
      this.#checkHealthy(),
    );
  }

  async stop(): Promise<void> {
    await Promise.all(this.#all.map((node) => node.dispose()));
  }

  /** Throws, saying what is wrong, unless every live node is ok and all agree on a slot map of live primaries. */
  async #checkHealthy(): Promise<void> {
    const live = this.#live();
    if (live.length === 0) throw new Error('no cluster node is running');
    let reference: { node: ManagedNode; map: string } | undefined;
    for (const node of live) {
      const state = infoField(String(await query(node, ['CLUSTER', 'INFO'])), 'cluster_state');
      if (state !== 'ok') throw new Error(`${node.label} reports cluster_state:${state}`);
      const ranges = (await this.#slotRanges(node)).sort((a, b) => a.start - b.start);
      let next = 0;
      for (const range of ranges) {
        if (range.start !== next) throw new Error(`${node.label} has no owner for slots ${next}-${range.start - 1}`);
        const owner = this.#byPort(range.ownerPort);
        if (!owner.live)
          throw new Error(`${node.label} still routes slots ${range.start}-${range.end} to ${owner.label}`);
        next = range.end + 1;
      }
      if (next !== SLOT_COUNT) throw new Error(`${node.label} has no owner for slots ${next}-${SLOT_COUNT - 1}`);
      const map = ranges.map((range) => `${range.start}-${range.end}@${range.ownerPort}`).join(' ');
      if (!reference) reference = { node, map };
      else if (map !== reference.map) {
        throw new Error(`${node.label} routes slots as ${map}, ${reference.node.label} as ${reference.map}`);
      }
    }
  }

  async #migrateKeys(slot: number, source: ManagedNode, destination: ManagedNode): Promise<void> {
    for (;;) {
      // Buffers, so binary keys survive the round trip.
      const keys = (await withAdmin(source, (client) =>
        client.callBuffer('CLUSTER', ['GETKEYSINSLOT', slot, MIGRATE_BATCH_KEYS]),
      )) as Buffer[];
      if (keys.length === 0) return;
      await withAdmin(
        source,
        (client) =>
          client.call('MIGRATE', [
            destination.host,
            destination.port,
            '',
            0,
            MIGRATE_TIMEOUT_MS,
            'REPLACE',
            'KEYS',
            ...keys,
          ]),
        MIGRATE_TIMEOUT_MS + ADMIN_COMMAND_TIMEOUT_MS,
      );
    }
  }

  async #slotRanges(node: ManagedNode): Promise<SlotRange[]> {
    const reply = (await query(node, ['CLUSTER', 'SLOTS'])) as unknown[][];
    return reply.map((entry) => ({
      start: Number(entry[0]),
      end: Number(entry[1]),
      ownerPort: Number((entry[2] as unknown[])[1]),
    }));
  }

  async #clusterNodes(node: ManagedNode): Promise<ClusterNodeLine[]> {
    const text = String(await query(node, ['CLUSTER', 'NODES']));
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        // <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...
        const [id = '', address = '', flags = '', masterId = '', , , , linkState = ''] = line.split(' ');
        return {
          id,
          port: Number(/:(\d+)@/.exec(address)?.[1]),
          flags: flags.split(','),
          masterId,
          linkState,
        };
      });
  }

  #live(): ManagedNode[] {
    return this.#all.filter((node) => node.live);
  }

  #byPort(port: number): ManagedNode {
    const node = this.#all.find((candidate) => candidate.port === port);
    if (!node) throw new Error(`port ${port} is not a node of this cluster`);
    return node;
  }

  #id(node: ManagedNode): string {
    const id = this.#ids.get(node);
    if (!id) throw new Error(`no cluster node id for ${node.label}`);
    return id;
  }

  #poll(what: string, check: () => Promise<void>): Promise<true> {
    return waitFor(
      async () => {
        await check();
        return true as const;
      },
      { timeoutMs: this.#healthyDeadlineMs, intervalMs: POLL_INTERVAL_MS, what },
    );
  }
}

function checkSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= SLOT_COUNT) {
    throw new RangeError(`slot must be an integer 0..${SLOT_COUNT - 1}: ${slot}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Hash slots
// ---------------------------------------------------------------------------------------------------

/** CRC16-XMODEM (polynomial 0x1021, initial 0): the checksum Redis Cluster hashes keys with. */
const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    table[byte] = crc & 0xffff;
  }
  return table;
})();

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] ?? 0)) & 0xffff;
  return crc;
}

/**
 * Hash slot of a key (CRC16 of the hash tag, as Redis computes it): when the key has a `{...}` with at least one
 * byte between the first `{` and the next `}`, only that part is hashed. Computed on the UTF-8 bytes.
 */
export function slotOf(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % SLOT_COUNT;
  }
  return crc16(bytes) % SLOT_COUNT;
}
