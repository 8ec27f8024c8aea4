// `pnpm bench`: one gateway node on Redis, next to a minimal raw node:http fan-out (bench/raw-baseline.js)
// measured in the same run, so the ratio is what counts. Servers run pinned to CPU 0 (when taskset exists);
// Redis, publisher and clients on CPU 1 (the publish phase puts its publishers on CPU 0 instead). Phases, in
// this order (all by default; pick some with --only):
//   fanout   deliveries/s and publish->receive latency, gateway and raw baseline, and Nchan when installed
//            (bench/nchan.js; --no-nchan skips it) (--conns, --seconds, --rate)
//   publish  SDK sendMany rate against redis-benchmark running the publish script (bench/publish-rate.js)
//   storm    N clients reconnecting at once with Last-Event-ID, each replaying missed events (bench/storm.js)
//   cluster  SDK publish rate and gateway fan-out on a 3+3 Redis Cluster against one redis-server, and recovery
//            from a SIGKILLed primary (bench/cluster.js)
//   storm-lb the same storm through HAProxy onto 3 gateways (pnpm cluster's topology, local processes)
//   rolling  rolling restart of 3 nodes behind HAProxy (SIGTERM, drain, start, healthy, next) under live
//            traffic: lost/duplicated events, reconnect times, refused reconnects (bench/rolling.js)
//   ramp     the bounded-latency ramp: open-loop publishing, rate x1.5 per step, until an event is more
//            than 500 ms late at its last client or p99 > 1 s; raw, gateway and Nchan (bench/ramp.js)
//            (--ramp-conns, --ramp-start-rate, --ramp-step-seconds)
//   connect  time to open N streams, gateway against the raw baseline, alternating rounds, medians
//            (--connect-conns, --connect-rounds)
//   h2       gateway fan-out over cleartext HTTP/2 (h2c), many streams per session and one per session,
//            against HTTP/1.1 on the same gateway build in the same run (--h2-conns, --h2-streams-per-session)
//
//   pnpm bench
//   pnpm bench -- --only fanout --conns 1000,10000 --seconds 5 --rate 10
//   pnpm bench -- --only storm --storm-conns 10000 --storm-replay 100
//   pnpm bench -- --only publish --publish-events 200000 --publish-batch 128 --publish-in-flight 8 --publish-rounds 3
//   pnpm bench -- --only cluster --cluster-rounds 3 --cluster-conns 1000 --cluster-recovery-conns 500
//   pnpm bench -- --only rolling --rolling-conns 3000 --rolling-rate 10
//   pnpm bench -- --only h2 --h2-conns 1000 --h2-streams-per-session 100 --h2-rounds 3
//
// Everything listens on 127.0.0.1; every process started here is stopped here, by pid.
import { spawnSync } from 'node:child_process';
import http2 from 'node:http2';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { startLocalCluster } from '../dist/cluster/local-cluster.js';
import { CLUSTER_NODE_TIMEOUT_MS, LATE_MS, runCluster } from './cluster.js';
import {
  cpuSeconds,
  freePort,
  hasTaskset,
  percentile,
  pinSelf,
  startRedis,
  startServer,
  stop,
  stopAll,
} from './harness.js';
import { childPids, hasNchan, nchanPublisher, processTreeRssKb, startNchan, stopNchan } from './nchan.js';
import { BENCHMARK_CLIENTS, runPublishRate, TARGET_RATIO } from './publish-rate.js';
import { LAST_LATE_MS, P99_MS, runRamp } from './ramp.js';
import { runRolling } from './rolling.js';
import { connect, connectH2, openH2Session } from './sse-client.js';
import { meetsTarget, runStorms, TARGET_MS } from './storm.js';

const PHASES = ['fanout', 'ramp', 'connect', 'h2', 'publish', 'storm', 'storm-lb', 'rolling', 'cluster'];
// pnpm 10 hands `pnpm bench -- --only x` on with the `--`, which would end option parsing here.
const argv = process.argv.slice(2);
const { values: args } = parseArgs({
  args: argv[0] === '--' ? argv.slice(1) : argv,
  options: {
    only: { type: 'string', default: PHASES.join(',') },
    conns: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    rate: { type: 'string', default: '10' },
    size: { type: 'string', default: '100' },
    gzip: { type: 'boolean', default: false },
    'storm-conns': { type: 'string', default: '10000' },
    'storm-replay': { type: 'string', default: '100' },
    'storm-live-rate': { type: 'string', default: '10' },
    'storm-timeout': { type: 'string', default: '30' },
    'publish-events': { type: 'string', default: '200000' },
    'publish-pipeline': { type: 'string', default: '64' },
    'publish-batch': { type: 'string', default: '128' },
    'publish-in-flight': { type: 'string', default: '8' },
    'publish-rounds': { type: 'string', default: '3' },
    // The cluster phase's publishers also take --publish-batch and --publish-in-flight; its fan-out --seconds.
    'cluster-rounds': { type: 'string', default: '3' },
    'cluster-events': { type: 'string', default: '100000' },
    'cluster-topics': { type: 'string', default: '64' },
    'cluster-conns': { type: 'string', default: '1000' },
    'cluster-topics-per-primary': { type: 'string', default: '3' },
    'cluster-recovery-conns': { type: 'string', default: '500' },
    'cluster-recovery-topics-per-primary': { type: 'string', default: '4' },
    'cluster-recovery-rate': { type: 'string', default: '20' },
    'cluster-recovery-seconds': { type: 'string', default: '20' },
    'h2-conns': { type: 'string', default: '1000' },
    'h2-streams-per-session': { type: 'string', default: '100' },
    'h2-rounds': { type: 'string', default: '3' },
    'no-nchan': { type: 'boolean', default: false },
    'ramp-conns': { type: 'string', default: '1000,10000' },
    // auto: 20 000 deliveries/s at the first step (20 events/s to 1 000 streams, 2 to 10 000), so the
    // baseline's first step holds at every size.
    'ramp-start-rate': { type: 'string', default: 'auto' },
    'ramp-step-seconds': { type: 'string', default: '3' },
    'connect-conns': { type: 'string', default: '10000' },
    'connect-rounds': { type: 'string', default: '5' },
    'rolling-conns': { type: 'string', default: '3000' },
    'rolling-rate': { type: 'string', default: '10' },
    'rolling-drain-ms': { type: 'string', default: '3000' },
  },
});
const phases = args.only.split(',');
const unknownPhase = phases.find((phase) => !PHASES.includes(phase));
if (unknownPhase) throw new Error(`unknown phase ${unknownPhase}: --only takes ${PHASES.join(',')}`);
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

/**
 * One fan-out measurement. `transport`: 'h1' (one HTTP/1.1 socket per stream), or 'h2' with
 * `streamsPerSession` streams on each cleartext HTTP/2 session (the gateway runs with H2C=true).
 */
async function runOne(kind, redisUrl, conns, { transport = 'h1', streamsPerSession = 1 } = {}) {
  const env = transport === 'h2' ? { H2C: 'true', H2_MAX_CONCURRENT_STREAMS: String(streamsPerSession) } : {};
  const { server, port } =
    kind === 'nchan'
      ? await startNchan({ redisUrl, port: await freePort() })
      : await startServer(kind, { redisUrl, prefix: PREFIX, gzip: args.gzip, env });
  // Nginx fans out in its worker process: count the whole tree.
  const serverPids = () => (kind === 'nchan' ? [server.pid, ...childPids(server.pid)] : [server.pid]);
  const serverCpu = () => serverPids().reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const sessions = [];
  const open = async (index, sampled, stats) => {
    if (transport === 'h1') return connect(port, TOPIC, sampled, stats);
    const slot = Math.floor(index / streamsPerSession);
    sessions[slot] ??= openH2Session(http2, `http://127.0.0.1:${port}`);
    return connectH2(await sessions[slot], TOPIC, sampled, stats);
  };

  const rss = () =>
    kind === 'nchan'
      ? processTreeRssKb(server.pid)
      : Number(
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
    for (let j = i; j < Math.min(conns, i + 200); j++) batch.push(open(j, j % SAMPLE_EVERY === 0, stats));
    clients.push(...(await Promise.all(batch)));
  }
  const connectMs = performance.now() - connectStart;
  await new Promise((resolve) => setTimeout(resolve, 500));
  const idleKbPerConn = (rss() - rssBeforeKb) / conns;
  const sentinel = clients[clients.length - 1 - ((clients.length - 1) % SAMPLE_EVERY)];

  const publisher =
    kind === 'nchan'
      ? nchanPublisher(port, TOPIC)
      : createPublisher({ redis: redisUrl, prefix: PREFIX, topic: TOPIC, maxLength: 1000, maxAgeMs: 0 });
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
  const cpuBefore = serverCpu();
  const t0 = performance.now();
  while (performance.now() - t0 < SECONDS * 1000) {
    if (seq - 1 - sentinel.lastSeq < WINDOW) await publish(8);
    else await new Promise((resolve) => setImmediate(resolve));
  }
  const elapsed = (performance.now() - t0) / 1000;
  const delivered = clients.reduce((sum, c) => sum + c.frames, 0) - framesBefore;
  const serverBusy = (serverCpu() - cpuBefore) / elapsed;
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
  // Integrity of the count: every client got every event exactly once (a miscount would skew deliveries/s).
  await waitFor(() => clients.every((c) => c.frames >= seq), 60_000);
  const miscounted = clients.filter((c) => c.frames !== seq).length;
  if (miscounted > 0) throw new Error(`${kind}: ${miscounted} clients counted other than ${seq} events`);
  const sorted = stats.latencies.sort((a, b) => a - b);

  await publisher.close();
  for (const c of clients) c.close();
  for (const session of sessions) (await session).destroy();
  await (kind === 'nchan' ? stopNchan(server) : stop(server));
  return {
    kind,
    transport: transport === 'h1' ? 'HTTP/1.1' : `h2c, ${streamsPerSession} per session`,
    serverBusy,
    conns,
    deliveriesPerSecond: Math.round(delivered / elapsed),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    connectMs,
    idleKbPerConn,
  };
}

async function fanoutPhase(redisUrl) {
  const rows = [];
  for (const conns of CONNECTION_COUNTS) {
    const raw = await runOne('raw', redisUrl, conns);
    const gateway = await runOne('gateway', redisUrl, conns);
    const peers = args['no-nchan'] || !hasNchan ? [] : [await runOne('nchan', redisUrl, conns)];
    rows.push({ ...raw, base: raw }, { ...gateway, base: raw }, ...peers.map((peer) => ({ ...peer, base: raw })));
    const ratio = (gateway.deliveriesPerSecond / raw.deliveriesPerSecond).toFixed(2);
    console.log(
      `\n${conns} connections: gateway delivers ${ratio}x the raw baseline; ` +
        `p99 ${gateway.p99.toFixed(1)} ms vs ${raw.p99.toFixed(1)} ms`,
    );
  }
  if (!hasNchan) console.log('(Nchan not installed: apt-get install nginx libnginx-mod-nchan to measure it too)');
  console.log(
    '\n| server | conns | deliveries/s | vs raw | server CPU | p50 ms | p99 ms | connect ms | vs raw | RSS KB per idle conn |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(
      `| ${r.kind} | ${r.conns} | ${r.deliveriesPerSecond} | ${(r.deliveriesPerSecond / r.base.deliveriesPerSecond).toFixed(2)} | ` +
        `${Math.round(r.serverBusy * 100)}% | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ` +
        `${r.connectMs.toFixed(0)} | ${(r.connectMs / r.base.connectMs).toFixed(2)} | ${r.idleKbPerConn.toFixed(1)} |`,
    );
  }
}

async function h2Phase(redisUrl) {
  const conns = Number(args['h2-conns']);
  const many = Number(args['h2-streams-per-session']);
  const rounds = Number(args['h2-rounds']);
  const transports = [
    { transport: 'h1' },
    { transport: 'h2', streamsPerSession: many },
    { transport: 'h2', streamsPerSession: 1 },
  ];
  // Alternating rounds, medians per transport: this shared machine drifts by tens of percent between runs.
  const results = transports.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [index, options] of transports.entries())
      results[index]?.push(await runOne('gateway', redisUrl, conns, options));
  }
  const median = (list, key) => [...list.map((r) => r[key])].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const h1Rate = median(results[0], 'deliveriesPerSecond');
  console.log(
    `\nHTTP/2 fan-out (gateway, ${conns} streams, cleartext h2c so only the protocol differs; clients with ` +
      `Chrome's windows; HTTP/1.1 on the same build is the baseline; medians of ${rounds} alternating rounds)`,
  );
  console.log(
    '| transport | streams | deliveries/s | vs HTTP/1.1 | gateway CPU busy | p50 ms | p99 ms | connect ms | RSS KB per idle stream | rounds deliveries/s |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const list of results) {
    const rate = median(list, 'deliveriesPerSecond');
    console.log(
      `| ${list[0].transport} | ${conns} | ${rate} | ${(rate / h1Rate).toFixed(2)} | ` +
        `${Math.round(median(list, 'serverBusy') * 100)}% | ${median(list, 'p50').toFixed(1)} | ` +
        `${median(list, 'p99').toFixed(1)} | ${median(list, 'connectMs').toFixed(0)} | ` +
        `${median(list, 'idleKbPerConn').toFixed(1)} | ${list.map((r) => r.deliveriesPerSecond).join(', ')} |`,
    );
  }
}

async function rampPhase(redisUrl) {
  console.log(
    `\nBounded-latency ramp: open-loop publishing for ${args['ramp-step-seconds']} s per step, rate x1.5 per step from ` +
      `${args['ramp-start-rate'] === 'auto' ? '20 000 deliveries/s' : `${args['ramp-start-rate']}/s`}; a step holds when every client got every event, the newest reached its last ` +
      `sampled client within ${LAST_LATE_MS} ms and p99 <= ${P99_MS} ms`,
  );
  console.log('| server | streams | sustained deliveries/s | vs raw | events/s | p99 ms there | first failing step |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const conns of args['ramp-conns'].split(',').map(Number)) {
    const results = await runRamp({
      kinds: args['no-nchan'] ? ['raw', 'gateway'] : ['raw', 'gateway', 'nchan'],
      conns,
      startRate:
        args['ramp-start-rate'] === 'auto' ? Math.max(1, Math.round(20_000 / conns)) : Number(args['ramp-start-rate']),
      factor: 1.5,
      stepSeconds: Number(args['ramp-step-seconds']),
      maxSteps: 30,
      eventBytes: EVENT_BYTES,
      prefix: PREFIX,
      redisUrl,
    });
    const raw = results.find((r) => r.kind === 'raw')?.best?.deliveries ?? Number.NaN;
    for (const r of results) {
      const failed = r.steps.find((step) => !step.held);
      const why = failed
        ? `${failed.rate}/s: p99 ${failed.p99.toFixed(0)} ms, last ${failed.lastLateMs.toFixed(0)} ms late`
        : 'none';
      console.log(
        `| ${r.kind} | ${conns} | ${r.best?.deliveries ?? 0} | ${((r.best?.deliveries ?? 0) / raw).toFixed(2)} | ` +
          `${r.best?.rate ?? 0} | ${r.best ? r.best.p99.toFixed(0) : '-'} | ${why} |`,
      );
    }
  }
}

/** Opens `conns` streams in batches of 200 concurrent connects; resolves with the time it took. */
async function timeConnects(kind, redisUrl, conns) {
  const { server, port } = await startServer(kind, { redisUrl, prefix: PREFIX });
  const stats = { sentAt: new Map(), latencies: [], measuring: false };
  const clients = [];
  try {
    const startedAt = performance.now();
    for (let i = 0; i < conns; i += 200) {
      const batch = [];
      for (let j = i; j < Math.min(conns, i + 200); j++) batch.push(connect(port, TOPIC, false, stats));
      clients.push(...(await Promise.all(batch)));
    }
    return performance.now() - startedAt;
  } finally {
    for (const client of clients) client.close();
    await stop(server);
  }
}

async function connectPhase(redisUrl) {
  const conns = Number(args['connect-conns']);
  const rounds = Number(args['connect-rounds']);
  const times = { raw: [], gateway: [] };
  for (let round = 0; round < rounds; round++) {
    for (const kind of ['raw', 'gateway']) times[kind].push(await timeConnects(kind, redisUrl, conns));
  }
  const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const raw = median(times.raw);
  const gateway = median(times.gateway);
  console.log(
    `\nConnect ${conns} streams (batches of 200 concurrent connects, servers on CPU 0), medians of ${rounds} alternating rounds`,
  );
  console.log('| server | median ms | vs raw | rounds ms |');
  console.log('| --- | --- | --- | --- |');
  for (const [kind, value] of [
    ['raw', raw],
    ['gateway', gateway],
  ]) {
    console.log(
      `| ${kind} | ${value.toFixed(0)} | ${(value / raw).toFixed(2)} | ${times[kind].map((t) => t.toFixed(0)).join(', ')} |`,
    );
  }
}

async function rollingPhase() {
  const r = await runRolling({
    conns: Number(args['rolling-conns']),
    rate: Number(args['rolling-rate']),
    drainMs: Number(args['rolling-drain-ms']),
    retryMs: 1000,
  });
  console.log(
    `\nRolling restart: 3 gateways behind HAProxy (local processes, unpinned), ${r.conns} clients over 3 topics, ` +
      `${r.rate} events/s; each node SIGTERM (DRAIN_MS ${args['rolling-drain-ms']}), started again, healthy, then the next; ` +
      'gateways run with DRAIN_DELAY_MS 3500 (readiness off before any stream closes; HAProxy takes the node out), ' +
      'so drained streams get a 250 ms retry hint (jitter 0.5, the default) instead of RETRY_MS 1000; clients ' +
      'reconnect after the hint with Last-Event-ID',
  );
  console.log(
    '| clients | events | lost | dups | not caught up | reconnects | back p50 ms | back p99 ms | beyond the hint p50 / p99 ms | reconnects taking 2+ connects | refused | busiest second of connects (limit per node) | restarts (drained ms / healthy again ms) |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const restarts = r.restarts.map((x) => `${x.node} ${x.drainedMs.toFixed(0)}/${x.backMs.toFixed(0)}`).join(', ');
  console.log(
    `| ${r.conns} | ${r.events} | ${r.lost} | ${r.dups} | ${r.notCaughtUp} | ${r.reconnects} | ${r.reconnectP50.toFixed(0)} | ` +
      `${r.reconnectP99.toFixed(0)} | ${r.afterHintP50.toFixed(0)} / ${r.afterHintP99.toFixed(0)} | ${r.retried} | ${r.refused} | ${r.busiestSecond} (${r.limit}) | ${restarts} |`,
  );
}

async function stormPhase(redisUrl, { behindHaproxy = false } = {}) {
  const timeoutMs = Number(args['storm-timeout']) * 1000;
  let cluster;
  if (behindHaproxy) {
    cluster = await startLocalCluster({
      gateways: 3,
      env: {
        LOG_LEVEL: 'info',
        REDIS_PREFIX: PREFIX,
        MAX_CONNECTIONS: '50000',
        MAX_CONNECTIONS_PER_CLIENT: '50000',
        MAX_NEW_CONNECTIONS_PER_SECOND: '100000',
        // Behind a proxy a departed client is noticed at the next heartbeat: keep that short, so the
        // streams of a failed attempt are gone before the next one starts (betweenAttempts).
        HEARTBEAT_MS: '2000',
      },
    });
  }
  const caughtUp = (ms) => (Number.isFinite(ms) ? ms.toFixed(0) : `> ${timeoutMs}`);
  const target = cluster
    ? { port: Number(new URL(cluster.url).port), pids: cluster.nodes.map((node) => node.pid) }
    : undefined;
  const results = await runStorms({
    redisUrl: cluster?.redisUrl ?? redisUrl,
    target,
    prefix: PREFIX,
    conns: Number(args['storm-conns']),
    replay: Number(args['storm-replay']),
    liveRate: Number(args['storm-live-rate']),
    eventBytes: EVENT_BYTES,
    timeoutMs,
    betweenAttempts: cluster ? () => waitForNoStreams(cluster.nodes) : undefined,
  });
  // Health-check verdicts during the storm: a replica marked DOWN turns its share of the storm into 503s.
  const transitions =
    cluster
      ?.haproxyLog()
      .split('\n')
      .filter((line) => / is (DOWN|UP)/.test(line)) ?? [];
  if (transitions.length > 0) console.log(`HAProxy health checks during the storm:\n${transitions.join('\n')}`);
  await cluster?.stop();
  console.log(
    `\nReconnect storm (${cluster ? 'HAProxy + 3 gateways, unpinned' : 'gateway'}; connects issued in one loop; live events at ${args['storm-live-rate']}/s; ` +
      `p50/p99 per client, from its connect to its last missed event; ` +
      `target: all caught up within ${TARGET_MS} ms, no gap or dup)`,
  );
  console.log(
    '| conns | missed events | live events | connects issued ms | all caught up ms | p50 ms | p99 ms | ' +
      'connect errors | not caught up | gaps | late | dups | unexpected ids | out of order | target |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of results) {
    const errors = r.connectErrors === 0 ? '0' : `${r.connectErrors} (${r.errorKinds})`;
    console.log(
      `| ${r.conns} | ${r.replayed} | ${r.liveEvents} | ${r.issueMs.toFixed(0)} | ${caughtUp(r.allCaughtUpMs)} | ` +
        `${r.p50.toFixed(0)} | ${r.p99.toFixed(0)} | ${errors} | ${r.notCaughtUp} | ${r.gaps} | ${r.late} | ` +
        `${r.dups} | ${r.unexpected} | ${r.outOfOrder} | ${meetsTarget(r) ? 'met' : 'MISSED'} |`,
    );
  }
  console.log('\nWhere the storm time went (from the first connect until all caught up or the timeout)');
  console.log(
    `| conns | gateway CPU s (${cluster ? 'all 3' : 'CPU 0'}) | bench clients CPU s | accept-queue overflows (host-wide) | gateway RSS MB before / peak${cluster ? ' (sum of 3)' : ''} |`,
  );
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of results) {
    console.log(
      `| ${r.conns} | ${r.gatewayCpuS.toFixed(1)} | ${r.clientCpuS.toFixed(1)} | ${r.listenOverflows} | ` +
        `${r.rssBeforeMb.toFixed(0)} / ${r.peakRssMb.toFixed(0)} |`,
    );
  }
}

/** Waits (up to 30 s) until no gateway of `nodes` holds a stream, as their /stats report. */
async function waitForNoStreams(nodes) {
  const deadline = performance.now() + 30_000;
  const open = async () => {
    const counts = await Promise.all(
      nodes.map((node) =>
        fetch(`${node.adminUrl}/stats`)
          .then((response) => response.json())
          .then((s) => s.connections),
      ),
    );
    return counts.reduce((sum, count) => sum + count, 0);
  };
  let left = await open();
  while (left > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    left = await open();
  }
  if (left > 0) console.log(`storm: ${left} streams of the previous attempt still open after 30 s`);
}

async function publishPhase(redis) {
  const options = {
    redisUrl: redis.url,
    redisPort: redis.port,
    prefix: PREFIX,
    events: Number(args['publish-events']),
    pipeline: Number(args['publish-pipeline']),
    batch: Number(args['publish-batch']),
    inFlight: Number(args['publish-in-flight']),
    eventBytes: EVENT_BYTES,
    rounds: Number(args['publish-rounds']),
  };
  const { rounds, median } = await runPublishRate(options);
  console.log(
    `\nPublish rate, ${options.events} events per run (${hasTaskset ? 'publisher on CPU 0, Redis on CPU 1' : 'unpinned'}): ` +
      `redis-benchmark EVALSHA of the publish script with ${BENCHMARK_CLIENTS} connections, -P ${options.pipeline}; ` +
      `SDK sendMany on 1 connection, ${options.batch} events per call, ${options.inFlight} calls in flight`,
  );
  console.log('| round | redis-benchmark events/s | SDK events/s | SDK / redis-benchmark | SDK CPU busy |');
  console.log('| --- | --- | --- | --- | --- |');
  const row = (label, r) =>
    `| ${label} | ${Math.round(r.benchmarkRate)} | ${Math.round(r.sdkRate)} | ${r.ratio.toFixed(2)} | ` +
    `${Math.round(r.sdkBusy * 100)}% |`;
  for (const [index, r] of rounds.entries()) console.log(row(index + 1, r));
  console.log(row('median', median));
  const verdict = median.ratio >= TARGET_RATIO ? 'met' : 'MISSED';
  console.log(
    `\nSDK publishes at ${median.ratio.toFixed(2)}x redis-benchmark's rate (target >= ${TARGET_RATIO}: ${verdict})`,
  );
}

async function clusterPhase() {
  const options = {
    prefix: PREFIX,
    eventBytes: EVENT_BYTES,
    rounds: Number(args['cluster-rounds']),
    publishEvents: Number(args['cluster-events']),
    publishTopics: Number(args['cluster-topics']),
    batch: Number(args['publish-batch']),
    inFlight: Number(args['publish-in-flight']),
    fanoutConns: Number(args['cluster-conns']),
    fanoutTopicsPerPrimary: Number(args['cluster-topics-per-primary']),
    seconds: SECONDS,
    recoveryConns: Number(args['cluster-recovery-conns']),
    recoveryTopicsPerPrimary: Number(args['cluster-recovery-topics-per-primary']),
    recoveryRate: Number(args['cluster-recovery-rate']),
    recoverySeconds: Number(args['cluster-recovery-seconds']),
  };
  const { publish, fanout, recovery } = await runCluster(options);
  console.log(
    `\nRedis Cluster: 3 primaries + 3 replicas (cluster-node-timeout ${CLUSTER_NODE_TIMEOUT_MS} ms) against one ` +
      `redis-server, same run, alternating over ${options.rounds} rounds; ` +
      `${hasTaskset ? 'every Redis on CPU 1 with the load, gateway and SDK publisher on CPU 0' : 'unpinned'}. ` +
      "On this machine the 3 primaries share one core: the ratios measure the cluster path's overhead, not scale-out.",
  );
  const pct = (busy) => `${Math.round(busy * 100)}%`;
  console.log(
    `\nSDK publish rate on the cluster, ${options.publishEvents} events per run: sendMany of ${options.batch} events ` +
      `round-robin over ${options.publishTopics} topics (${publish.topicSpread} per primary), ` +
      `${options.inFlight} calls in flight, 1 connection per node`,
  );
  console.log('| round | single events/s | cluster events/s | cluster / single | SDK CPU busy single | cluster |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  const publishRow = (label, r) =>
    `| ${label} | ${Math.round(r.single)} | ${Math.round(r.cluster)} | ${r.ratio.toFixed(2)} | ` +
    `${pct(r.singleBusy)} | ${pct(r.clusterBusy)} |`;
  for (const [index, r] of publish.rounds.entries()) console.log(publishRow(index + 1, r));
  console.log(publishRow('median', publish.median));

  console.log(
    `\nGateway fan-out on the cluster: ${options.fanoutConns} connections over ${fanout.topics} topics ` +
      `(${options.fanoutTopicsPerPrimary} per primary), ${SECONDS}s saturated`,
  );
  console.log(
    '| round | single deliveries/s | cluster deliveries/s | cluster / single | gateway CPU single | cluster | ' +
      'deliveries per gateway write syscall single | cluster |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  const fanoutRow = (label, r) =>
    `| ${label} | ${Math.round(r.single)} | ${Math.round(r.cluster)} | ${r.ratio.toFixed(2)} | ` +
    `${pct(r.singleBusy)} | ${pct(r.clusterBusy)} | ${r.singleDeliveriesPerWrite.toFixed(1)} | ` +
    `${r.clusterDeliveriesPerWrite.toFixed(1)} |`;
  for (const [index, r] of fanout.rounds.entries()) console.log(fanoutRow(index + 1, r));
  console.log(fanoutRow('median', fanout.median));

  const r = recovery;
  const ms = (value) => (Number.isFinite(value) ? value.toFixed(0) : String(value));
  console.log(
    `\nRecovery: SIGKILL of the primary owning ${r.victimTopics} of ${r.topics} topics, ${r.conns} clients, ` +
      `${r.eventsPerSecond} events/s (1 send per topic per tick), observed ${options.recoverySeconds}s; times from ` +
      `the kill; caught up = the last event held up by the fault (> ${LATE_MS} ms from send to its last client) ` +
      'reached its last client',
  );
  console.log(
    '| all caught up ms | replica promoted ms | cluster_state fail ms | first ack on the killed topics ms | ' +
      'longest publish ms | gateway unready ms | publishes failed (maybe stored) | clients with gateway.reset | ' +
      'acked deliveries missing | late events (on other primaries, their caught up ms) | dups | reconnects | ' +
      'normal p99 ms |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const span = (from, to) => (Number.isNaN(from) ? 'never' : `${ms(from)}-${ms(to)}`);
  const unready = span(r.unreadyFromMs, r.unreadyToMs);
  console.log(
    `| ${ms(r.caughtUpMs)}${r.unfinished ? ' (still catching up at the end)' : ''} | ${ms(r.promotedMs)} | ` +
      `${span(r.clusterFailFromMs, r.clusterFailToMs)} | ` +
      `${ms(r.publishResumedMs)} | ${ms(r.longestPublishMs)} | ${unready} | ${r.failed} (${r.failedMaybeStored}) | ` +
      `${r.resetClients} (${r.resetReasons}) | ${r.missing} (+${r.missingAfterReset} after a reset) | ` +
      `${r.late} of ${r.acked} (${r.lateElsewhere}, ${ms(r.lateElsewhereCaughtUpMs)}) | ${r.dups} | ${r.reconnects} | ${ms(r.normalP99Ms)} |`,
  );
  console.log(
    `killed at ${r.killedAt}, ${ms(r.gatewayAgeAtKillMs)} ms after the gateway started; ` +
      `events held up on the other primaries: ${r.lateElsewhere}, their longest publish ` +
      `${ms(r.lateElsewherePublishMs)} ms, the last of them delivered ${ms(r.lateElsewhereCaughtUpMs)} ms after the kill`,
  );
  if (r.failed > 0) console.log(`failed publishes: ${r.failureKinds}`);
}

async function main() {
  const redis = await startRedis();
  pinSelf(1);
  console.log(
    `sse-gateway bench (${phases.join(', ')}): ${os.cpus().length} CPUs (${os.cpus()[0]?.model}), ` +
      `node ${process.version}, ${EVENT_BYTES}-byte events, ${SECONDS}s per fan-out phase, latency at ` +
      `${LATENCY_RATE} msg/s, gzip ${args.gzip}, pinning ${hasTaskset ? 'servers to CPU 0, rest to CPU 1' : 'off'}`,
  );
  if (phases.includes('fanout')) await fanoutPhase(redis.url);
  if (phases.includes('ramp')) await rampPhase(redis.url);
  if (phases.includes('connect')) await connectPhase(redis.url);
  if (phases.includes('h2')) await h2Phase(redis.url);
  if (phases.includes('publish')) await publishPhase(redis);
  // The storm leaves thousands of closing sockets and a large Redis heap behind: only the cluster phase, with
  // Redis processes of its own, comes after it.
  if (phases.includes('storm')) await stormPhase(redis.url);
  if (phases.includes('storm-lb')) await stormPhase(redis.url, { behindHaproxy: true });
  if (phases.includes('rolling')) await rollingPhase();
  if (phases.includes('cluster')) await clusterPhase();
}

try {
  await main();
} finally {
  await stopAll();
  // A Redis Cluster client of the SDK can keep its 5 s slot-refresh timer armed after publisher.close() (seen
  // once after the cluster phase, the process idle with no socket left): exit rather than hang. An error
  // thrown above ends the process before this fires.
  setTimeout(() => process.exit(), 1000).unref();
}
