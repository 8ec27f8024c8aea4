// Process plumbing shared by the bench phases: CPU pinning, free ports, and child processes that are
// always stopped by pid (every child is recorded in `started`).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length >= 2;
const started = [];

function pin(cpu, command, argv) {
  return hasTaskset ? ['taskset', ['-c', String(cpu), command, ...argv]] : [command, argv];
}

/** Pins every thread of a running process: `taskset -p` without `-a` would move the main thread only. */
export function pinPid(pid, cpu) {
  if (hasTaskset) spawnSync('taskset', ['-a', '-cp', String(cpu), String(pid)]);
}

export function pinSelf(cpu) {
  pinPid(process.pid, cpu);
}

/** Records a child spawned elsewhere (src/cluster/local-redis.ts) so that stopAll stops it too, by pid. */
export function adopt(child) {
  started.push(child);
}

/** The open-file limit this process and its children run under (Infinity when unlimited). */
export function openFileLimit() {
  const text = spawnSync('sh', ['-c', 'ulimit -n']).stdout.toString().trim();
  return text === 'unlimited' ? Number.POSITIVE_INFINITY : Number(text);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function spawnPinned(cpu, command, argv, env, stdio = ['ignore', 'pipe', 'pipe']) {
  const [cmd, fullArgv] = pin(cpu, command, argv);
  const child = spawn(cmd, fullArgv, { env: { ...process.env, ...env }, stdio });
  started.push(child);
  return child;
}

/**
 * Starts a long-running process and resolves once its output contains `readyText`. Output goes to a file,
 * as in production: a pipe into this busy process would fill up and stall (or spin) the server's logger.
 */
function start(cpu, command, argv, env, readyText) {
  const logPath = join(mkdtempSync(join(tmpdir(), 'sse-bench-')), 'output.log');
  const fd = openSync(logPath, 'w');
  const child = spawnPinned(cpu, command, argv, env, ['ignore', fd, fd]);
  closeSync(fd);
  const output = () => readFileSync(logPath, 'utf8');
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`${command} did not start: ${output()}`));
    }, 20_000);
    const poll = setInterval(() => {
      if (!output().includes(readyText)) return;
      clearInterval(poll);
      clearTimeout(deadline);
      resolve(child);
    }, 25);
    child.once('exit', (code) => {
      clearInterval(poll);
      clearTimeout(deadline);
      reject(new Error(`${command} exited with ${code}: ${output()}`));
    });
  });
}

/** Runs a command to completion and resolves with its stdout; rejects on a non-zero exit. */
export function run(cpu, command, argv) {
  const child = spawnPinned(cpu, command, argv, {});
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} exited with ${code}: ${stderr || stdout}`));
    });
  });
}

export function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  child.kill('SIGKILL');
  return once(child, 'exit');
}

export function stopAll() {
  return Promise.all(started.map(stop));
}

/** Redis on CPU 1, next to the load generator; the server under test gets CPU 0 to itself. */
export async function startRedis() {
  const port = await freePort();
  const child = await start(
    1,
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {},
    'Ready to accept connections',
  );
  return { port, url: `redis://127.0.0.1:${port}`, child };
}

/**
 * Starts the gateway (`kind` 'gateway') or the raw baseline ('raw') on CPU 0, with the connection limits
 * raised so that only the server's own cost is measured.
 */
export async function startServer(kind, { redisUrl, prefix, gzip = false, env: extraEnv = {} }) {
  const port = await freePort();
  const env = {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    LOG_LEVEL: 'info', // the default: connection open/close lines are part of the product's cost
    GZIP: String(gzip),
    MAX_BUFFERED_BYTES: String(8 * 1024 * 1024),
    MAX_CONNECTIONS: '50000',
    MAX_CONNECTIONS_PER_CLIENT: '50000', // every bench client comes from 127.0.0.1
    MAX_NEW_CONNECTIONS_PER_SECOND: '100000',
    ...extraEnv,
  };
  const here = fileURLToPath(new URL('.', import.meta.url));
  const entry = kind === 'raw' ? `${here}raw-baseline.js` : `${here}../dist/main.js`;
  const server = await start(0, process.execPath, [entry], env, kind === 'raw' ? 'listening' : 'gateway listening');
  return { server, port };
}

const CLOCK_TICKS_PER_SECOND = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString()) || 100;

/** CPU time (user + system) a process has used so far, in seconds, from /proc. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
