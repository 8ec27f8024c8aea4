/// <reference types="node" />
/**
 * The real gateway process for the suites: `node packages/gateway/dist/main.js` (built by `tsc -b`), its
 * JSON log lines parsed as they come, on a port the OS picks.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

export const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../../../..', import.meta.url));

export interface LogLine {
  readonly level: number;
  readonly time: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

export interface RunningGateway {
  readonly child: ChildProcess;
  readonly url: string;
  /** The admin listener (/stats, /metrics, the admin API); the suites run it on a port the OS picks. */
  readonly adminUrl: string;
  readonly logs: LogLine[];
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every process spawned here, for the suites' cleanup. */
export const children: ChildProcess[] = [];

/** Only what the test sets: nothing from the runner's environment (REDIS_URL, NODE_OPTIONS...) leaks in. */
export function cleanEnv(settings: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', ...settings };
}

/**
 * Spawns the gateway on a port the OS picks (PORT=0: no race for a "free" port) and resolves once its
 * `gateway listening` log line says where it is.
 */
export async function spawnGateway(settings: Record<string, string>): Promise<RunningGateway> {
  const child = spawn(process.execPath, [MAIN], {
    cwd: REPO_ROOT,
    env: cleanEnv({ PORT: '0', ADMIN_PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...settings }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const logs: LogLine[] = [];
  let pending = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line
      }
      newline = pending.indexOf('\n');
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const listening = await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the gateway exited with ${child.exitCode}: ${stderr}`);
      return logs.find((line) => line.msg === 'gateway listening');
    },
    { what: "the 'gateway listening' log line", timeoutMs: 30_000 },
  );
  return {
    child,
    url: String(listening.url),
    adminUrl: String(listening.adminUrl),
    logs,
    stderr: () => stderr,
    exited,
  };
}
