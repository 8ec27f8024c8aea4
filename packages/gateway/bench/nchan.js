// Nchan (the nginx SSE/pub-sub module, Debian's libnginx-mod-nchan) as a peer in the fan-out phase: one
// nginx worker pinned to CPU 0 like the gateway, messages stored in the same redis-server. Subscribers use
// the gateway's URL shape (/events?topic=...), so the bench's SSE client works unchanged; publishing is
// Nchan's own HTTP publisher endpoint (POST /pub?topic=...), over one kept-alive connection.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForPort } from '../dist/cluster/processes.js';
import { adopt, hasTaskset, stop } from './harness.js';

const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((path) => existsSync(path));
const MODULE = ['/usr/lib/nginx/modules/ngx_nchan_module.so'].find((path) => existsSync(path));

/** Whether nginx with the Nchan module is installed (apt-get install nginx libnginx-mod-nchan). */
export const hasNchan = Boolean(NGINX && MODULE);

export async function startNchan({ redisUrl, port }) {
  const dir = mkdtempSync(join(tmpdir(), 'sse-bench-nchan-'));
  const config = `
load_module ${MODULE};
worker_processes 1;
worker_rlimit_nofile 65536;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 60000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  upstream redis_server { nchan_redis_server ${redisUrl}; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /events {
      nchan_subscriber eventsource;
      nchan_channel_id $arg_topic;
      nchan_redis_pass redis_server;
      nchan_subscriber_first_message newest;
    }
    location = /pub {
      nchan_publisher;
      nchan_channel_id $arg_topic;
      nchan_redis_pass redis_server;
      nchan_message_buffer_length 1000;
      nchan_message_timeout 1h;
    }
  }
}
`;
  const configPath = join(dir, 'nginx.conf');
  writeFileSync(configPath, config);
  const argv = ['-p', dir, '-c', configPath, '-g', 'daemon off;'];
  const child = hasTaskset
    ? spawn('taskset', ['-c', '0', NGINX, ...argv], { stdio: 'ignore' })
    : spawn(NGINX, argv, { stdio: 'ignore' });
  adopt(child);
  await waitForPort(port, 'nginx', () => '', child);
  await waitForRedisStorage(port);
  return { server: child, port };
}

/**
 * Nchan answers subscribers 503 until its worker's Redis connection is up (seen: a ramp phase started
 * right after nginx listened got 503 on its first stream): wait until a subscriber gets 200.
 */
async function waitForRedisStorage(port, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let status;
  while (Date.now() < deadline) {
    status = await new Promise((resolve) => {
      const request = http.get(
        { host: '127.0.0.1', port, path: '/events?topic=bench-probe', headers: { accept: 'text/event-stream' } },
        (response) => {
          resolve(response.statusCode);
          request.destroy();
        },
      );
      request.on('error', () => resolve(undefined));
    });
    if (status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Nchan still answers subscribers ${status} after ${timeoutMs} ms (is its Redis reachable?)`);
}

/**
 * Stops nginx with its workers: a SIGKILLed master leaves its workers running (seen: orphans holding the
 * port after a bench run), so the workers go first, by pid.
 */
export async function stopNchan(child) {
  for (const pid of childPids(child.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await stop(child);
}

/** RSS of nginx's master and workers together, in KB. */
export function processTreeRssKb(pid) {
  const own =
    Number(
      spawnSync('ps', ['-o', 'rss=', '-p', String(pid)])
        .stdout.toString()
        .trim(),
    ) || 0;
  const children = spawnSync('ps', ['-o', 'rss=', '--ppid', String(pid)])
    .stdout.toString()
    .split('\n')
    .map(Number)
    .filter(Number.isFinite)
    .reduce((sum, kb) => sum + kb, 0);
  return own + children;
}

/** The pids of nginx's workers (the fan-out runs there, not in the master). */
export function childPids(pid) {
  return spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)])
    .stdout.toString()
    .split('\n')
    .map((line) => Number(line.trim()))
    .filter((value) => value > 0);
}

/** Publishes events one POST at a time, in order, over one kept-alive connection. */
export function nchanPublisher(port, topic) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const post = (data) =>
    new Promise((resolve, reject) => {
      const request = http.request(
        { host: '127.0.0.1', port, method: 'POST', path: `/pub?topic=${encodeURIComponent(topic)}`, agent },
        (response) => {
          response.resume();
          response.on('end', () =>
            response.statusCode < 300 ? resolve() : reject(new Error(`nchan publish ${response.statusCode}`)),
          );
        },
      );
      request.on('error', reject);
      request.end(data);
    });
  return {
    async sendMany(items) {
      for (const item of items) await post(item.data);
    },
    async close() {
      agent.destroy();
    },
  };
}
