/**
 * The Redis of the local topology: one redis-server, or a Redis Cluster of 3 primaries with a replica each
 * (what `pnpm cluster:redis-cluster` runs), all on loopback, without persistence. Started and stopped here.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { delay, freePort, POLL_MS, READY_TIMEOUT_MS, spawnLogged, waitForPort } from './processes.js';

export type RedisTopology = 'single' | 'cluster';

export interface LocalRedis {
  /** What gateways and publishers get as REDIS_URL. */
  readonly url: string;
  readonly children: readonly ChildProcess[];
}

const run = promisify(execFile);
const CLUSTER_PRIMARIES = 3;
const CLUSTER_REPLICAS_PER_PRIMARY = 1;
/** Short, so a killed primary's replica takes over within a few seconds on a laptop. */
const CLUSTER_NODE_TIMEOUT_MS = 2000;

export async function startLocalRedis(options: {
  readonly topology: RedisTopology;
  /** A directory of the topology's own, for cluster state files. */
  readonly dir: string;
  readonly output: 'inherit' | 'pipe';
  readonly redisServerPath?: string | undefined;
  readonly redisCliPath?: string | undefined;
}): Promise<LocalRedis> {
  const server = options.redisServerPath ?? 'redis-server';
  const base = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'];
  if (options.topology === 'single') {
    const port = await freePort();
    const redis = spawnLogged(server, ['--port', String(port), ...base], {}, options.output);
    await waitForPort(port, 'redis-server', redis.log, redis.child);
    return { url: `redis://127.0.0.1:${port}`, children: [redis.child] };
  }

  const count = CLUSTER_PRIMARIES * (1 + CLUSTER_REPLICAS_PER_PRIMARY);
  const ports: number[] = [];
  const children: ChildProcess[] = [];
  try {
    for (let index = 0; index < count; index++) {
      const port = await freePort();
      const dir = join(options.dir, `redis-${port}`);
      mkdirSync(dir, { recursive: true });
      const node = spawnLogged(
        server,
        [
          '--port',
          String(port),
          ...base,
          '--dir',
          dir,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          String(CLUSTER_NODE_TIMEOUT_MS),
        ],
        {},
        options.output,
      );
      children.push(node.child);
      ports.push(port);
      await waitForPort(port, 'redis-server (cluster node)', node.log, node.child);
    }
    const cli = options.redisCliPath ?? 'redis-cli';
    await run(cli, [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      String(CLUSTER_REPLICAS_PER_PRIMARY),
      '--cluster-yes',
    ]);
    await waitForClusterOk(cli, ports);
    return { url: `redis+cluster://${ports.map((port) => `127.0.0.1:${port}`).join(',')}`, children };
  } catch (error) {
    for (const child of children) child.kill('SIGKILL');
    throw error;
  }
}

/** Every node says cluster_state:ok (slots assigned and agreed on). */
async function waitForClusterOk(cli: string, ports: readonly number[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    const states = await Promise.all(
      ports.map((port) =>
        run(cli, ['-p', String(port), 'cluster', 'info']).then(
          ({ stdout }) => /cluster_state:(\w+)/.exec(stdout)?.[1] ?? 'unknown',
          (error: Error) => error.message,
        ),
      ),
    );
    if (states.every((state) => state === 'ok')) return;
    last = states.join(', ');
    await delay(POLL_MS);
  }
  throw new Error(`the Redis Cluster did not become healthy within ${READY_TIMEOUT_MS} ms (states: ${last})`);
}
