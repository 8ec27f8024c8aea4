/**
 * A real Redis for tests: REDIS_URL when set, else a `redis-server` spawned on a free loopback port, else a
 * testcontainers `redis:7-alpine`. Suites share one server per file and isolate themselves with
 * `uniquePrefix`, never FLUSHALL.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { freePort } from './ports.js';

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** Process id of a spawned redis-server; undefined for REDIS_URL and containers. */
  readonly pid: number | undefined;
  /** Stops the server (SIGTERM, waits for the exit). */
  stop(): Promise<void>;
  /** Stops the server and starts it again on the same port; its data is gone (no persistence). */
  restart(): Promise<void>;
}

const READY_DEADLINE_MS = 20_000;
const EXIT_DEADLINE_MS = 10_000;
const POLL_INTERVAL_MS = 25;
const SPAWN_ATTEMPTS = 5;
const HOST = '127.0.0.1';

/** A key prefix no other suite (or run) uses: `test:<name>:<random>:`. */
export function uniquePrefix(name: string): string {
  return `test:${name}:${randomBytes(6).toString('hex')}:`;
}

export async function startRedis(): Promise<TestRedis> {
  const external = process.env.REDIS_URL;
  if (external) return externalRedis(external);
  const spawned = await spawnRedis();
  if (spawned) return spawned;
  const container = await containerRedis();
  if (container) return container;
  throw new Error(
    'These tests need a real Redis 7: install redis-server (apt-get install redis-server, brew install redis) ' +
      'so it is on PATH (or set REDIS_SERVER_BIN), start Docker for testcontainers, or set REDIS_URL=redis://host:port ' +
      '(restart tests need a local redis-server).',
  );
}

function externalRedis(url: string): TestRedis {
  const cannot = () => Promise.reject(new Error('cannot restart an external redis (REDIS_URL is set)'));
  const port = Number(new URL(url).port || 6379);
  return { url, port, pid: undefined, stop: cannot, restart: cannot };
}

// ---------------------------------------------------------------------------------------------------
// Spawned redis-server
// ---------------------------------------------------------------------------------------------------

/** Undefined when there is no redis-server binary; throws when it exists but cannot start. */
async function spawnRedis(): Promise<TestRedis | undefined> {
  const binary = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < SPAWN_ATTEMPTS; attempt++) {
    // The free port can be taken between our probe and Redis' bind: then try another one.
    const port = await freePort();
    try {
      const child = await launch(binary, port);
      return spawnedHandle(binary, port, child);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      lastError = error as Error;
    }
  }
  throw new Error(`redis-server did not start after ${SPAWN_ATTEMPTS} attempts: ${lastError?.message}`);
}

function spawnedHandle(binary: string, port: number, first: ChildProcess): TestRedis {
  let child: ChildProcess | undefined = first;
  const handle: TestRedis = {
    url: `redis://${HOST}:${port}`,
    port,
    get pid() {
      return child?.pid;
    },
    async stop() {
      const current = child;
      child = undefined;
      if (current) await terminate(current);
    },
    async restart() {
      await handle.stop();
      child = await launch(binary, port);
    },
  };
  return handle;
}

/**
 * Spawns redis-server and resolves once it answers PING on `port`; rejects if it exits or stays silent.
 * `args` replaces the default command line (a config file, `--sentinel`); they must make it listen on `port`.
 * The process is SIGKILLed when the test process exits.
 */
export async function launch(
  binary: string,
  port: number,
  args: readonly string[] = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no'],
): Promise<ChildProcess> {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));

  const exited = new Promise<never>((_, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(new Error(`redis-server on port ${port} exited (${code ?? signal}) before answering PING: ${output}`)),
    );
  });
  exited.catch(() => {});
  try {
    await Promise.race([waitForPing(port), exited]);
  } catch (error) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw error;
  }
  return child;
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_DEADLINE_MS);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------------
// testcontainers
// ---------------------------------------------------------------------------------------------------

async function containerRedis(): Promise<TestRedis | undefined> {
  let testcontainers: typeof import('testcontainers');
  try {
    testcontainers = await import('testcontainers');
  } catch {
    return undefined;
  }
  // A fixed host port survives container restarts, so restart() keeps the URL valid.
  const port = await freePort();
  let container: Awaited<ReturnType<InstanceType<typeof testcontainers.GenericContainer>['start']>> | undefined;
  try {
    container = await new testcontainers.GenericContainer('redis:7-alpine')
      .withExposedPorts({ container: 6379, host: port })
      .withCommand(['redis-server', '--save', '', '--appendonly', 'no'])
      .start();
  } catch {
    return undefined; // No Docker.
  }
  const started = container;
  const host = started.getHost();
  return {
    url: `redis://${host}:${port}`,
    port,
    pid: undefined,
    async stop() {
      await started.stop();
    },
    async restart() {
      await started.restart();
      await waitForPing(port, host);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/** Polls with a raw PING until `+PONG` (a LOADING or refused answer means not yet), up to the deadline. */
export async function waitForPing(port: number, host = HOST): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    last = await ping(port, host);
    if (last === '+PONG') return;
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
  throw new Error(`Redis on ${host}:${port} did not answer PING within ${READY_DEADLINE_MS} ms (last: ${last})`);
}

function ping(port: number, host: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    let answer = '';
    const finish = (result: string) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(1000, () => finish('timeout'));
    socket.once('error', (error) => finish(error.message));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.includes('\r\n')) finish(answer.trim());
    });
  });
}
