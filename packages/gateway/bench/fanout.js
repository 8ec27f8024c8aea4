// `pnpm bench`: fan-out throughput and publish->receive latency of one gateway node on Redis, next to a
// minimal raw node:http fan-out (bench/raw-baseline.js) measured in the same run, so the ratio is what
// counts. Servers run pinned to CPU 0 (when taskset exists); Redis, publisher and clients on CPU 1.
//
//   pnpm bench                                  # 1000 connections
//   pnpm bench -- --conns 1000,10000 --seconds 5 --rate 10
//
// Everything listens on 127.0.0.1; every process started here is stopped here, by pid.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createPublisher } from '@sse-gateway/publisher-sdk';

const { values: args } = parseArgs({
  options: {
    conns: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    rate: { type: 'string', default: '10' },
    size: { type: 'string', default: '100' },
    gzip: { type: 'boolean', default: false },
  },
});
const CONNECTION_COUNTS = args.conns.split(',').map(Number);
const SECONDS = Number(args.seconds);
const LATENCY_RATE = Number(args.rate);
const EVENT_BYTES = Number(args.size);
/** Publisher stays at most this many events ahead of the slowest-connected sentinel client. */
const WINDOW = 64;
/** Every SAMPLE_EVERY-th connection parses timestamps for latency; the others only count frames. */
const SAMPLE_EVERY = 20;
const TOPIC = 'bench';
const PREFIX = `bench:${process.pid}:`;

const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length >= 2;
const pin = (cpu, command, argv) => (hasTaskset ? ['taskset', ['-c', String(cpu), command, ...argv]] : [command, argv]);
const started = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function start(cpu, command, argv, env, readyText) {
  const [cmd, fullArgv] = pin(cpu, command, argv);
  const child = spawn(cmd, fullArgv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  return new Promise((resolve, reject) => {
    let output = '';
    const deadline = setTimeout(() => reject(new Error(`${command} did not start: ${output}`)), 20_000);
    const onData = (chunk) => {
      output += chunk;
      if (output.includes(readyText)) {
        clearTimeout(deadline);
        resolve(child);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code}: ${output}`)));
  });
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  child.kill('SIGKILL');
  return once(child, 'exit');
}

/** One SSE client over a raw socket: counts frames, and (if sampled) records publish->receive latency. */
function connect(port, sampled, stats) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const client = { socket, frames: 0, lastSeq: -1 };
    let headersDone = false;
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(`GET /events?topic=${TOPIC} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
    });
    socket.on('data', (chunk) => {
      if (!headersDone) {
        if (chunk.indexOf('\r\n\r\n') < 0) return;
        headersDone = true;
        if (!chunk.toString('latin1', 0, 12).startsWith('HTTP/1.1 200')) {
          reject(new Error(`stream refused: ${chunk.toString('utf8', 0, 300)}`));
          return;
        }
        resolve(client);
      }
      let at = chunk.indexOf('data: ');
      while (at >= 0) {
        client.frames++;
        if (sampled) {
          const end = chunk.indexOf(44, at); // ','
          const seq = Number(chunk.toString('latin1', at + 6, end));
          const sentAt = stats.sentAt.get(seq);
          if (sentAt !== undefined && stats.measuring) stats.latencies.push(performance.now() - sentAt);
          client.lastSeq = seq;
        }
        at = chunk.indexOf('data: ', at + 6);
      }
    });
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function runOne(kind, redisUrl, conns) {
  const port = await freePort();
  const env = {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    REDIS_PREFIX: PREFIX,
    LOG_LEVEL: 'info', // the default: connection open/close lines are part of the product's cost
    GZIP: String(args.gzip),
    MAX_BUFFERED_BYTES: String(8 * 1024 * 1024),
    MAX_CONNECTIONS: '50000',
    MAX_CONNECTIONS_PER_CLIENT: '50000', // every bench client comes from 127.0.0.1
    MAX_NEW_CONNECTIONS_PER_SECOND: '100000',
  };
  const here = fileURLToPath(new URL('.', import.meta.url));
  const entry = kind === 'raw' ? `${here}raw-baseline.js` : `${here}../dist/main.js`;
  const server = await start(0, process.execPath, [entry], env, kind === 'raw' ? 'listening' : 'gateway listening');

  const rss = () =>
    Number(
      spawnSync('ps', ['-o', 'rss=', '-p', String(server.pid)])
        .stdout.toString()
        .trim(),
    );
  const rssBeforeKb = rss();
  const stats = { sentAt: new Map(), latencies: [], measuring: false };
  const clients = [];
  const connectStart = performance.now();
  for (let i = 0; i < conns; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(conns, i + 200); j++) batch.push(connect(port, j % SAMPLE_EVERY === 0, stats));
    clients.push(...(await Promise.all(batch)));
  }
  const connectMs = performance.now() - connectStart;
  await new Promise((resolve) => setTimeout(resolve, 500));
  const idleKbPerConn = (rss() - rssBeforeKb) / conns;
  const sentinel = clients[clients.length - 1 - ((clients.length - 1) % SAMPLE_EVERY)];

  const publisher = createPublisher({
    redis: redisUrl,
    prefix: PREFIX,
    topic: TOPIC,
    maxLength: 1000,
    maxAgeMs: 0,
  });
  const pad = 'x'.repeat(Math.max(0, EVENT_BYTES - 20));
  let seq = 0;
  const publish = async (n) => {
    const items = [];
    for (let i = 0; i < n; i++) {
      const s = seq++;
      stats.sentAt.set(s, performance.now());
      items.push({ event: 'tick', data: `${s},${pad}` });
    }
    await publisher.sendMany(items);
  };
  const waitFor = async (predicate, ms) => {
    const deadline = performance.now() + ms;
    while (!predicate()) {
      if (performance.now() > deadline) throw new Error(`${kind}: clients stopped receiving (seq ${seq})`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  // Warm up until every subscription is live.
  await publish(1);
  await waitFor(() => clients.every((c) => c.frames >= 1), 30_000);

  // Throughput: keep the publisher at most WINDOW events ahead of the sentinel client.
  const framesBefore = clients.reduce((sum, c) => sum + c.frames, 0);
  const t0 = performance.now();
  while (performance.now() - t0 < SECONDS * 1000) {
    if (seq - 1 - sentinel.lastSeq < WINDOW) await publish(8);
    else await new Promise((resolve) => setImmediate(resolve));
  }
  const elapsed = (performance.now() - t0) / 1000;
  const delivered = clients.reduce((sum, c) => sum + c.frames, 0) - framesBefore;
  await waitFor(() => sentinel.lastSeq === seq - 1, 60_000);

  // Latency: a fixed, modest rate; publish->receive at every sampled client.
  stats.measuring = true;
  const latencyEvents = Math.max(20, Math.round(LATENCY_RATE * SECONDS));
  for (let i = 0; i < latencyEvents; i++) {
    await publish(1);
    await new Promise((resolve) => setTimeout(resolve, 1000 / LATENCY_RATE));
  }
  await waitFor(() => sentinel.lastSeq === seq - 1, 60_000);
  stats.measuring = false;
  const sorted = stats.latencies.sort((a, b) => a - b);

  await publisher.close();
  for (const c of clients) c.socket.destroy();
  await stop(server);
  return {
    kind,
    conns,
    deliveriesPerSecond: Math.round(delivered / elapsed),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    connectMs,
    idleKbPerConn,
  };
}

async function main() {
  const redisPort = await freePort();
  await start(
    1,
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {},
    'Ready to accept connections',
  );
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  if (hasTaskset) spawnSync('taskset', ['-cp', '1', String(process.pid)]);
  console.log(
    `sse-gateway fan-out bench: ${os.cpus().length} CPUs (${os.cpus()[0]?.model}), node ${process.version}, ` +
      `${EVENT_BYTES}-byte events, ${SECONDS}s per phase, latency at ${LATENCY_RATE} msg/s, gzip ${args.gzip}, ` +
      `pinning ${hasTaskset ? 'servers to CPU 0, rest to CPU 1' : 'off'}`,
  );
  const rows = [];
  for (const conns of CONNECTION_COUNTS) {
    const raw = await runOne('raw', redisUrl, conns);
    const gateway = await runOne('gateway', redisUrl, conns);
    rows.push(raw, gateway);
    const ratio = (gateway.deliveriesPerSecond / raw.deliveriesPerSecond).toFixed(2);
    console.log(
      `\n${conns} connections: gateway delivers ${ratio}x the raw baseline; ` +
        `p99 ${gateway.p99.toFixed(1)} ms vs ${raw.p99.toFixed(1)} ms`,
    );
  }
  console.log('\n| server | conns | deliveries/s | p50 ms | p99 ms | connect ms | RSS KB per idle conn |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(
      `| ${r.kind} | ${r.conns} | ${r.deliveriesPerSecond} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ` +
        `${r.connectMs.toFixed(0)} | ${r.idleKbPerConn.toFixed(1)} |`,
    );
  }
}

try {
  await main();
} finally {
  await Promise.all(started.map(stop));
}
