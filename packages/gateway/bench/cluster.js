// Redis Cluster phase: the SDK and one gateway node on a 3-primary, 3-replica Redis Cluster (spawned by
// src/cluster/local-redis.ts, cluster-node-timeout 2 s) against the same on one redis-server, measured in
// the same run, alternating over rounds so that drift on a shared machine hits both alike:
//   1. SDK publish throughput: sendMany batches spread over many topics (so over every primary), several
//      calls in flight, from a child process on CPU 0 (bench/sdk-publish.js); cluster / single.
//   2. Fan-out: deliveries/s of one gateway node (CPU 0), clients on topics on every primary; cluster / single.
//   3. Recovery: SIGKILL of the primary owning one topic while clients follow topics on every primary and a
//      publisher sends at a steady rate; how long until every client has every acknowledged event.
// Every Redis process runs on CPU 1 with the publisher and the clients. On a 2-CPU machine the three
// primaries (and their replicas) share that one core: the ratios measure what the cluster path costs, not
// what spreading the load over primaries would gain.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { Cluster, Redis } from 'ioredis';
import { startLocalRedis } from '../dist/cluster/local-redis.js';
import { adopt, cpuSeconds, percentile, pinPid, run, startRedis, startServer, stop } from './harness.js';
import { eventStreamLines } from './http-stream.js';
import { connect } from './sse-client.js';

/** As src/cluster/local-redis.ts starts it. */
export const CLUSTER_NODE_TIMEOUT_MS = 2000;
/** Must match the gateway's HISTORY_MAX_LENGTH (default 1000). */
const HISTORY_MAX_LENGTH = 1000;
/** Fan-out: the publisher stays at most this many events per topic ahead of the slowest topic's client. */
const WINDOW = 64;
/** Recovery: an event that took longer than this from send to its last client was held up by the fault. */
export const LATE_MS = 250;
/** Recovery: after the publisher stops, how long clients get to receive what was acknowledged. */
const DRAIN_MS = 15_000;
/** Recovery: steady publishing before the kill. */
const WARM_UP_MS = 3000;
/** Recovery: a client whose stream ends comes back with Last-Event-ID after this long, at most this often. */
const RECONNECT_DELAY_MS = 250;
const MAX_RECONNECTS = 20;
const POLL_MS = 50;

/**
 * options: { prefix, eventBytes, rounds, publishEvents, publishTopics, batch, inFlight, fanoutConns,
 * fanoutTopicsPerPrimary, seconds, recoveryConns, recoveryTopicsPerPrimary, recoveryRate, recoverySeconds }.
 */
export async function runCluster(options) {
  const dir = mkdtempSync(join(tmpdir(), 'sse-bench-cluster-'));
  const single = await startRedis();
  let cluster;
  try {
    cluster = await startCluster(dir);
    const publish = await comparePublish(single, cluster, options);
    const fanout = await compareFanout(single, cluster, options);
    const recovery = await runRecovery(cluster, options);
    return { publish, fanout, recovery };
  } finally {
    cluster?.admin.disconnect();
    for (const node of cluster?.nodes ?? []) await stop(node.child);
    await stop(single.child);
    rmSync(dir, { recursive: true, force: true });
  }
}

// -------------------------------------------------------------------------------------------------
// The cluster and its slot map
// -------------------------------------------------------------------------------------------------

async function startCluster(dir) {
  const local = await startLocalRedis({ topology: 'cluster', dir, output: 'pipe' });
  for (const child of local.children) {
    adopt(child);
    pinPid(child.pid, 1);
  }
  // The URL lists the nodes in the order they were spawned, as `children` does.
  const ports = local.url
    .slice('redis+cluster://'.length)
    .split(',')
    .map((address) => Number(address.split(':')[1]));
  const nodes = ports.map((port, index) => ({ port, child: local.children[index] }));
  const admin = new Redis({ host: '127.0.0.1', port: ports[0], protocol: 2, maxRetriesPerRequest: 1 });
  return { url: local.url, nodes, admin };
}

/** CLUSTER SLOTS as ranges with the primary's port and its replicas' ports. */
async function slotMap(admin) {
  const reply = await admin.call('CLUSTER', 'SLOTS');
  return reply.map(([start, end, primary, ...replicas]) => ({
    start,
    end,
    primary: Number(primary[1]),
    replicas: replicas.map((replica) => Number(replica[1])),
  }));
}

async function ownerOf(admin, map, prefix, topic) {
  const slot = await admin.call('CLUSTER', 'KEYSLOT', topicKeys(prefix, topic).stream);
  const range = map.find((r) => slot >= r.start && slot <= r.end);
  if (!range) throw new Error(`slot ${slot} is not served`);
  return range.primary;
}

/** `perPrimary` topics named `<base>/<n>` on each primary, in primary order. */
async function topicsOnEveryPrimary(admin, map, prefix, base, perPrimary) {
  const primaries = [...new Set(map.map((r) => r.primary))];
  const byOwner = new Map(primaries.map((port) => [port, []]));
  for (let n = 0; [...byOwner.values()].some((list) => list.length < perPrimary); n++) {
    if (n > 10_000) throw new Error('could not spread topics over the primaries');
    const topic = `${base}/${n}`;
    const list = byOwner.get(await ownerOf(admin, map, prefix, topic));
    if (list.length < perPrimary) list.push(topic);
  }
  return { topics: [...byOwner.values()].flat(), byOwner };
}

/** How many of `topics` each primary owns, e.g. "22/21/21". */
async function spread(admin, map, prefix, topics) {
  const counts = new Map();
  for (const topic of topics) {
    const owner = await ownerOf(admin, map, prefix, topic);
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  return [...counts.values()].sort((a, b) => b - a).join('/');
}

// -------------------------------------------------------------------------------------------------
// 1. SDK publish throughput
// -------------------------------------------------------------------------------------------------

async function comparePublish(single, cluster, options) {
  const first = cluster.nodes[0];
  const checkers = {
    single: new Redis(single.url, { protocol: 2 }),
    cluster: new Cluster([{ host: '127.0.0.1', port: first.port }], { redisOptions: { protocol: 2 } }),
  };
  const urls = { single: single.url, cluster: cluster.url };
  try {
    const map = await slotMap(cluster.admin);
    // Topics per primary in the first round (each round has topics of its own, spread alike).
    const names = Array.from({ length: options.publishTopics }, (_, i) => `cluster-publish-1-cluster/${i}`);
    const topicSpread = await spread(cluster.admin, map, options.prefix, names);
    const rounds = [];
    for (let round = 1; round <= options.rounds; round++) {
      const order = round % 2 === 1 ? ['single', 'cluster'] : ['cluster', 'single'];
      const result = {};
      for (const kind of order) {
        result[kind] = await measurePublish(urls[kind], checkers[kind], `cluster-publish-${round}-${kind}`, options);
      }
      rounds.push({
        single: result.single.rate,
        cluster: result.cluster.rate,
        singleBusy: result.single.busy,
        clusterBusy: result.cluster.busy,
        ratio: result.cluster.rate / result.single.rate,
      });
    }
    return { rounds, median: medians(rounds), topicSpread };
  } finally {
    checkers.single.disconnect();
    checkers.cluster.disconnect();
  }
}

async function measurePublish(
  url,
  checker,
  base,
  { prefix, publishEvents, publishTopics, batch, inFlight, eventBytes },
) {
  const script = fileURLToPath(new URL('sdk-publish.js', import.meta.url));
  const argv = [
    ...[script, '--redis', url, '--prefix', prefix, '--topic', base, '--topics', publishTopics],
    ...['--events', publishEvents, '--batch', batch, '--in-flight', inFlight, '--size', eventBytes],
    ...['--max-length', HISTORY_MAX_LENGTH],
  ];
  const output = await run(0, process.execPath, argv.map(String));
  const { ms, stored, busy } = JSON.parse(output.trim().split('\n').at(-1));
  // Every event the SDK says it stored is in its topic's stream, and nothing else is.
  let added = 0;
  for (let i = 0; i < publishTopics; i++) {
    const info = await checker.xinfo('STREAM', topicKeys(prefix, `${base}/${i}`).stream);
    added += Number(info[info.indexOf('entries-added') + 1]);
  }
  if (added !== stored) throw new Error(`the SDK stored ${added} events on ${url}, not ${stored}`);
  return { rate: (publishEvents / ms) * 1000, busy };
}

// -------------------------------------------------------------------------------------------------
// 2. Fan-out
// -------------------------------------------------------------------------------------------------

async function compareFanout(single, cluster, options) {
  const map = await slotMap(cluster.admin);
  const urls = { single: single.url, cluster: cluster.url };
  const rounds = [];
  let topicCount = 0;
  for (let round = 1; round <= options.rounds; round++) {
    const base = `cluster-fanout-${round}`;
    const { topics } = await topicsOnEveryPrimary(
      cluster.admin,
      map,
      options.prefix,
      base,
      options.fanoutTopicsPerPrimary,
    );
    topicCount = topics.length;
    const order = round % 2 === 1 ? ['single', 'cluster'] : ['cluster', 'single'];
    const result = {};
    for (const kind of order) result[kind] = await fanoutRun(urls[kind], topics, options);
    rounds.push({
      single: result.single.deliveriesPerSecond,
      cluster: result.cluster.deliveriesPerSecond,
      singleBusy: result.single.gatewayBusy,
      clusterBusy: result.cluster.gatewayBusy,
      singleDeliveriesPerWrite: result.single.deliveriesPerWrite,
      clusterDeliveriesPerWrite: result.cluster.deliveriesPerWrite,
      ratio: result.cluster.deliveriesPerSecond / result.single.deliveriesPerSecond,
    });
  }
  return { rounds, median: medians(rounds), topics: topicCount };
}

/** bench/fanout.js's throughput run, with the clients spread round-robin over `topics`. */
async function fanoutRun(redisUrl, topics, { prefix, fanoutConns, seconds, eventBytes }) {
  const { server, port } = await startServer('gateway', { redisUrl, prefix });
  const clients = [];
  let publisher;
  try {
    await waitReady(port);
    const stats = { sentAt: new Map(), latencies: [], measuring: false };
    for (let i = 0; i < fanoutConns; i += 200) {
      const batch = [];
      for (let j = i; j < Math.min(fanoutConns, i + 200); j++) {
        // The last connection of each topic reads sequence numbers: the publisher paces itself on them.
        batch.push(connect(port, topics[j % topics.length], j >= fanoutConns - topics.length, stats));
      }
      clients.push(...(await Promise.all(batch)));
    }
    const sentinels = clients.slice(-topics.length);
    publisher = createPublisher({ redis: redisUrl, prefix, maxLength: HISTORY_MAX_LENGTH, maxAgeMs: 0 });
    const pad = 'x'.repeat(Math.max(0, eventBytes - 20));
    let seq = 0;
    /** `n` events to every topic, in one sendMany. */
    const publish = async (n) => {
      const items = [];
      for (let i = 0; i < n; i++) {
        const s = seq++;
        for (const topic of topics) items.push({ topic, event: 'tick', data: `${s},${pad}` });
      }
      await publisher.sendMany(items);
    };
    const behind = () => seq - 1 - Math.min(...sentinels.map((c) => c.lastSeq));
    const waitFor = async (predicate, ms) => {
      const deadline = performance.now() + ms;
      while (!predicate()) {
        if (performance.now() > deadline) throw new Error(`fan-out on ${redisUrl}: clients stopped receiving`);
        await new Promise((resolve) => setImmediate(resolve));
      }
    };

    // Warm up until every subscription is live.
    await publish(1);
    await waitFor(() => clients.every((c) => c.frames >= 1), 30_000);

    const framesBefore = clients.reduce((sum, c) => sum + c.frames, 0);
    const cpuBefore = cpuSeconds(server.pid);
    const writesBefore = writeSyscalls(server.pid);
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      if (behind() < WINDOW) await publish(8);
      else await new Promise((resolve) => setImmediate(resolve));
    }
    const elapsed = (performance.now() - t0) / 1000;
    const delivered = clients.reduce((sum, c) => sum + c.frames, 0) - framesBefore;
    const gatewayBusy = (cpuSeconds(server.pid) - cpuBefore) / elapsed;
    const writes = writeSyscalls(server.pid) - writesBefore;
    await waitFor(() => behind() === 0, 60_000);
    return {
      deliveriesPerSecond: delivered / elapsed,
      gatewayBusy,
      deliveriesPerWrite: delivered / writes,
    };
  } finally {
    await publisher?.close();
    for (const c of clients) c.socket.destroy();
    await stop(server);
  }
}

// -------------------------------------------------------------------------------------------------
// 3. Recovery from a SIGKILLed primary
// -------------------------------------------------------------------------------------------------

async function runRecovery(cluster, options) {
  const { prefix, recoveryConns, recoveryRate, recoverySeconds, eventBytes } = options;
  const map = await slotMap(cluster.admin);
  const { topics, byOwner } = await topicsOnEveryPrimary(
    cluster.admin,
    map,
    prefix,
    'cluster-recovery',
    options.recoveryTopicsPerPrimary,
  );
  const victimPort = await ownerOf(cluster.admin, map, prefix, topics[0]);
  const victim = cluster.nodes.find((node) => node.port === victimPort);
  const victimTopics = new Set(byOwner.get(victimPort));
  const replicaPort = map.find((r) => r.primary === victimPort).replicas[0];
  // The admin connection must not be the one the kill takes away.
  if (victimPort === cluster.nodes[0].port) {
    cluster.admin.disconnect();
    const other = cluster.nodes.find((node) => node.port !== victimPort && node.port !== replicaPort);
    cluster.admin = new Redis({ host: '127.0.0.1', port: other.port, protocol: 2, maxRetriesPerRequest: 1 });
  }

  const { server, port } = await startServer('gateway', { redisUrl: cluster.url, prefix });
  // The gateway's cluster client re-reads the slot map every SLOTS_REFRESH_INTERVAL_MS from its start.
  const gatewayStartedAt = performance.now();
  const clients = [];
  let publisher;
  let ticker;
  const replica = new Redis({ host: '127.0.0.1', port: replicaPort, protocol: 2, maxRetriesPerRequest: 1 });
  try {
    await waitReady(port);
    for (let i = 0; i < recoveryConns; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(recoveryConns, i + 100); j++) {
        batch.push(recoveryClient(port, topics[j % topics.length]));
      }
      clients.push(...(await Promise.all(batch)));
    }

    publisher = createPublisher({ redis: cluster.url, prefix, maxLength: HISTORY_MAX_LENGTH, maxAgeMs: 0 });
    const data = 'x'.repeat(eventBytes);
    /** Acknowledged events: { topic, id, sentAt, ackAt }. */
    const acked = [];
    const sends = [];
    const failures = { count: 0, maybeStored: 0, messages: new Map() };
    // One send per topic per tick, each on its own: a topic waiting for a failover holds up no other.
    const tick = () => {
      for (const topic of topics) {
        const sentAt = performance.now();
        sends.push(
          publisher.send('tick', data, { topic }).then(
            (id) => acked.push({ topic, id, sentAt, ackAt: performance.now() }),
            (error) => {
              failures.count++;
              if (error.maybeStored) failures.maybeStored++;
              const key = String(error.message).slice(0, 120);
              failures.messages.set(key, (failures.messages.get(key) ?? 0) + 1);
            },
          ),
        );
      }
    };
    ticker = setInterval(tick, 1000 / recoveryRate);
    await sleep(WARM_UP_MS);

    const killAt = performance.now();
    const killedAt = new Date();
    await stop(victim.child);
    const watch = watchFailover(replica, cluster.admin, port, killAt, killAt + recoverySeconds * 1000);
    await sleep(recoverySeconds * 1000);
    clearInterval(ticker);
    ticker = undefined;
    const stoppedAt = performance.now();
    const timeline = await watch;
    // Bounded by the SDK's maxRetryTimeMs (30 s): every send is answered or rejected by then.
    await Promise.all(sends);
    await waitUntil(() => clients.every((c) => hasAll(c, acked)), DRAIN_MS);
    return {
      ...summarise(clients, acked, victimTopics, killAt, stoppedAt),
      ...timeline,
      killedAt: killedAt.toISOString(),
      gatewayAgeAtKillMs: killAt - gatewayStartedAt,
      conns: clients.length,
      topics: topics.length,
      victimTopics: victimTopics.size,
      eventsPerSecond: recoveryRate * topics.length,
      failed: failures.count,
      failedMaybeStored: failures.maybeStored,
      failureKinds: [...failures.messages].map(([message, n]) => `${message} x${n}`).join('; ') || '-',
      publishResumedMs: firstAck(acked, victimTopics, killAt),
      longestPublishMs: Math.max(...acked.map((e) => e.ackAt - e.sentAt)),
    };
  } finally {
    if (ticker) clearInterval(ticker);
    replica.disconnect();
    await publisher?.close();
    for (const c of clients) c.close();
    await stop(server);
  }
}

/**
 * Polls the killed primary's replica (ROLE), a surviving node (CLUSTER INFO) and the gateway's /readyz until
 * `until`: when the replica was promoted, when the cluster said `cluster_state:fail` (it then refuses every
 * command, on every primary), and when the gateway said it was not ready, relative to the kill.
 */
async function watchFailover(replica, admin, gatewayPort, killAt, until) {
  const spans = { clusterFail: [Number.NaN, Number.NaN], unready: [Number.NaN, Number.NaN] };
  const mark = (span, at) => {
    if (Number.isNaN(span[0])) span[0] = at;
    span[1] = at;
  };
  let promotedMs = Number.NaN;
  while (performance.now() < until) {
    const [role, info, ready] = await Promise.all([
      Number.isNaN(promotedMs) ? replica.call('ROLE').catch(() => undefined) : undefined,
      admin.call('CLUSTER', 'INFO').catch(() => ''),
      readyz(gatewayPort),
    ]);
    const at = performance.now() - killAt;
    if (Array.isArray(role) && role[0] === 'master') promotedMs = at;
    if (String(info).includes('cluster_state:fail')) mark(spans.clusterFail, at);
    if (!ready) mark(spans.unready, at);
    await sleep(POLL_MS);
  }
  const [clusterFailFromMs, clusterFailToMs] = spans.clusterFail;
  const [unreadyFromMs, unreadyToMs] = spans.unready;
  return { promotedMs, clusterFailFromMs, clusterFailToMs, unreadyFromMs, unreadyToMs };
}

/** After the kill, the first acknowledgement of an event sent after the kill to a topic of the dead primary. */
function firstAck(acked, victimTopics, killAt) {
  const times = acked.filter((e) => victimTopics.has(e.topic) && e.sentAt > killAt).map((e) => e.ackAt - killAt);
  return times.length > 0 ? Math.min(...times) : Number.NaN;
}

/** Whether a client has every acknowledged event of its topic (or was told it missed some: a reset). */
function hasAll(client, acked) {
  if (client.resets.length > 0) return true;
  for (let i = client.checked; i < acked.length; i++) {
    const event = acked[i];
    if (event.topic === client.topic && !client.received.has(event.id)) return false;
    client.checked = i + 1;
  }
  return true;
}

/**
 * Per acknowledged event: when its last client had it. Late events (> LATE_MS from send to last client)
 * after the kill were held up by the fault; the recovery ends when the last of them reached its last client.
 */
function summarise(clients, acked, victimTopics, killAt, stoppedAt) {
  const byTopic = new Map();
  for (const client of clients) {
    const list = byTopic.get(client.topic) ?? [];
    list.push(client);
    byTopic.set(client.topic, list);
  }
  let missing = 0;
  let missingAfterReset = 0;
  let late = 0;
  let lateLatest = killAt;
  let lateElsewhere = 0;
  let lateElsewhereLatest = killAt;
  let lateElsewherePublishMs = 0;
  const normal = [];
  for (const event of acked) {
    let done = Number.NEGATIVE_INFINITY;
    let lacking = 0;
    for (const client of byTopic.get(event.topic) ?? []) {
      const at = client.received.get(event.id);
      if (at === undefined) {
        lacking++;
        if (client.resets.length > 0) missingAfterReset++;
        else missing++;
      } else done = Math.max(done, at);
    }
    if (event.sentAt < killAt - 1000) normal.push(done - event.sentAt);
    if (lacking > 0 || done - event.sentAt > LATE_MS) {
      late++;
      if (lacking === 0) lateLatest = Math.max(lateLatest, done);
      if (!victimTopics.has(event.topic)) {
        lateElsewhere++;
        lateElsewherePublishMs = Math.max(lateElsewherePublishMs, event.ackAt - event.sentAt);
        if (lacking === 0) lateElsewhereLatest = Math.max(lateElsewhereLatest, done);
      }
    }
  }
  normal.sort((a, b) => a - b);
  const reasons = new Map();
  for (const client of clients) for (const reason of client.resets) reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  return {
    caughtUpMs: missing > 0 ? Number.POSITIVE_INFINITY : lateLatest - killAt,
    // A fault still being repaired when the publisher stopped: the window was too short to call it done.
    unfinished: lateLatest > stoppedAt - 2000,
    acked: acked.length,
    late,
    // Held up although their topic lived on a primary that kept running.
    lateElsewhere,
    lateElsewhereCaughtUpMs: lateElsewhereLatest - killAt,
    /** The longest of their publishes: near their lateness, the publisher held them; far below, the gateway. */
    lateElsewherePublishMs,
    missing,
    missingAfterReset,
    resetClients: clients.filter((c) => c.resets.length > 0).length,
    resetReasons: [...reasons].map(([reason, n]) => `${reason} x${n}`).join(', ') || '-',
    dups: clients.reduce((sum, c) => sum + c.dups, 0),
    reconnects: clients.reduce((sum, c) => sum + c.reconnects, 0),
    normalP99Ms: percentile(normal, 99),
  };
}

/**
 * An SSE client that records when each event id arrived and every `gateway.reset` (its reason), and comes
 * back with Last-Event-ID when its stream ends, as EventSource would. Resolves once the first stream is open.
 */
function recoveryClient(port, topic) {
  const client = {
    topic,
    received: new Map(),
    resets: [],
    dups: 0,
    reconnects: 0,
    checked: 0,
    lastId: undefined,
    socket: undefined,
    closed: false,
    close() {
      client.closed = true;
      client.socket?.destroy();
    },
  };
  return new Promise((resolve, reject) => {
    const open = () => {
      const socket = net.connect(port, '127.0.0.1');
      client.socket = socket;
      const resume = client.lastId === undefined ? '' : `Last-Event-ID: ${client.lastId}\r\n`;
      let streaming = false;
      let frame = { id: undefined, event: undefined, data: '' };
      socket.once('connect', () => {
        socket.write(
          `GET /events?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
            `Accept: text/event-stream\r\n${resume}\r\n`,
        );
      });
      socket.on('error', () => {});
      socket.once('close', () => {
        if (client.closed) return;
        if (!streaming && client.reconnects === 0 && client.received.size === 0) {
          reject(new Error(`recovery client on ${topic}: stream refused`));
          return;
        }
        if (client.reconnects >= MAX_RECONNECTS) return;
        client.reconnects++;
        setTimeout(open, RECONNECT_DELAY_MS);
      });
      const onLine = (line) => {
        if (line.startsWith('id: ')) frame.id = line.slice(4);
        else if (line.startsWith('event: ')) frame.event = line.slice(7);
        else if (line.startsWith('data: ')) frame.data = line.slice(6);
        else if (line === '') {
          if (frame.id !== undefined) onFrame(client, frame);
          frame = { id: undefined, event: undefined, data: '' };
        }
      };
      const onHead = (status) => {
        if (status !== 200) {
          socket.destroy();
          return;
        }
        streaming = true;
        resolve(client);
      };
      socket.on('data', eventStreamLines(onHead, onLine));
    };
    open();
  });
}

function onFrame(client, { id, event, data }) {
  client.lastId = id;
  if (event === 'gateway.reset') {
    client.resets.push(JSON.parse(data).reason);
    return;
  }
  if (client.received.has(id)) client.dups++;
  else client.received.set(id, performance.now());
}

// -------------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------------

/** Write syscalls (write, writev, sendmsg...) a process made so far: `syscw` in /proc/<pid>/io. */
function writeSyscalls(pid) {
  return Number(/syscw: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'latin1'))?.[1] ?? Number.NaN);
}

function readyz(port) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/readyz', timeout: 1000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(false));
  });
}

/** A gateway on a cluster turns streams away until its shard subscribers are up: wait for /readyz. */
async function waitReady(port) {
  const deadline = performance.now() + 20_000;
  while (!(await readyz(port))) {
    if (performance.now() > deadline) throw new Error(`the gateway on port ${port} did not become ready`);
    await sleep(POLL_MS);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(predicate, ms) {
  const deadline = performance.now() + ms;
  while (!predicate() && performance.now() < deadline) await sleep(20);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The median of every field over the rounds (the ratio is the median of each round's own ratio). */
function medians(rounds) {
  return Object.fromEntries(Object.keys(rounds[0]).map((key) => [key, median(rounds.map((r) => r[key]))]));
}
