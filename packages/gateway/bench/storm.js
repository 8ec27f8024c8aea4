// Reconnect storm: N clients reconnect to one gateway at the same moment, each with a Last-Event-ID
// `replay` events back, while live events keep being published. Measures how long until every client
// has its missed events, and checks that each client got exactly the events after its cursor (missed,
// then live), in order, once. The raw baseline keeps no history, so this is judged against the absolute
// target: all caught up within 5 s.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { cpuSeconds, openFileLimit, percentile, startServer, stop } from './harness.js';
import { httpStreamDecoder } from './http-stream.js';

export const TARGET_MS = 5000;
/** Events published before the cursor, so the cursor is a retained event with older history behind it. */
const OLDER_EVENTS = 20;
/** Must match the gateway's HISTORY_MAX_LENGTH (default 1000), as the SDK documents. */
const HISTORY_MAX_LENGTH = 1000;
/** A storm losing more than this share of its connections is run again with half the clients. */
const MAX_FAILED_SHARE = 0.01;
/** The fallback stops halving below this many clients. */
const MIN_CONNS = 500;
/** File descriptors this process keeps for itself (Redis, pipes, the live publisher) beside the clients. */
const RESERVED_FDS = 200;
/** After the last live event is published, how long clients get to receive it. */
const LIVE_DRAIN_MS = 10_000;
const ID_LINE = Buffer.from('\nid: ');
const LF = 10;
const LF_BYTE = Buffer.from('\n');

/**
 * Runs the storm with `conns` clients; while more than MAX_FAILED_SHARE of the connections fail, runs it
 * again with half as many. Returns one result per attempt, so a failed attempt stays visible.
 */
export async function runStorms(options) {
  let conns = fitToOpenFileLimit(options.conns);
  const results = [];
  for (let attempt = 1; ; attempt++) {
    const result = await runStorm({ ...options, conns, topic: `storm-${attempt}` });
    results.push(result);
    const failed = result.connectErrors;
    if (failed <= conns * MAX_FAILED_SHARE || conns / 2 < MIN_CONNS) return results;
    const next = Math.floor(conns / 2);
    console.log(`storm: ${failed} of ${conns} connections failed (${result.errorKinds}); retrying with ${next}`);
    conns = next;
    // The next attempt must not start while this one's streams still hold the servers' slots.
    await options.betweenAttempts?.();
  }
}

function fitToOpenFileLimit(conns) {
  const limit = openFileLimit();
  if (conns + RESERVED_FDS <= limit) return conns;
  const fitted = Math.max(1, limit - RESERVED_FDS);
  console.log(`storm: open-file limit ${limit} leaves room for ${fitted} clients, not ${conns}; using ${fitted}`);
  return fitted;
}

async function runStorm({ redisUrl, prefix, conns, replay, liveRate, eventBytes, timeoutMs, topic, target }) {
  if (OLDER_EVENTS + replay + liveRate * (timeoutMs / 1000) >= HISTORY_MAX_LENGTH) {
    throw new Error(`storm: ${replay} missed events plus live events would not fit in history`);
  }
  // `target`: an already running topology (port and the pids of its gateways), else one gateway of our own.
  const own = target ? undefined : await startServer('gateway', { redisUrl, prefix });
  const port = target ? target.port : own.port;
  const pids = target ? target.pids : [own.server.pid];
  const publisher = createPublisher({ redis: redisUrl, prefix, topic, maxLength: HISTORY_MAX_LENGTH, maxAgeMs: 0 });
  const data = 'x'.repeat(eventBytes);
  let clients = [];
  try {
    const history = await publisher.sendMany(Array.from({ length: OLDER_EVENTS + replay }, () => ({ data })));
    const cursor = history[OLDER_EVENTS - 1];
    const missed = history.slice(OLDER_EVENTS);

    const before = load(pids);
    const memory = sampleRss(pids);
    const live = publishLive(publisher, data, liveRate);
    const storm = openStorm(port, topic, cursor, missed.at(-1), conns);
    clients = storm.clients;
    await settledOrTimeout(storm.settled, timeoutMs);
    storm.endedAt = performance.now();
    const cost = loadSince(before, pids);
    const liveIds = await live.stop();
    const finalId = liveIds.at(-1) ?? missed.at(-1);
    const done = (c) => !c.streaming || c.error !== undefined || c.ids.at(-1) === finalId;
    await waitUntil(() => clients.every(done), LIVE_DRAIN_MS);
    return { ...summarise(clients, storm, [...missed, ...liveIds], liveIds.length), ...cost, ...memory.stop() };
  } finally {
    for (const client of clients) client.socket.destroy();
    await publisher.close();
    if (own) await stop(own.server);
  }
}

/** Publishes one event every 1/rate s until stopped; stop() resolves with their ids in publish order. */
function publishLive(publisher, data, rate) {
  const sends = [];
  const timer = rate > 0 ? setInterval(() => sends.push(publisher.send('message', data)), 1000 / rate) : undefined;
  return {
    stop() {
      clearInterval(timer);
      return Promise.all(sends);
    },
  };
}

/** Opens every connection in one synchronous loop: the whole storm is in flight before any reply is read. */
function openStorm(port, topic, cursor, lastMissed, conns) {
  const request =
    `GET /events?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Accept: text/event-stream\r\nLast-Event-ID: ${cursor}\r\n\r\n`;
  let resolveSettled;
  const settled = new Promise((resolve) => (resolveSettled = resolve));
  let unsettled = conns;
  const onSettled = () => {
    if (--unsettled === 0) resolveSettled();
  };
  const startedAt = performance.now();
  const clients = [];
  for (let i = 0; i < conns; i++) clients.push(stormClient(port, request, lastMissed, onSettled));
  return { clients, startedAt, issueMs: performance.now() - startedAt, settled };
}

/**
 * One resuming SSE client on a raw socket. It records every `id:` it receives and settles once it has the
 * last missed event (caught up) or its connection failed. The body is read through the chunked decoder:
 * behind a proxy, chunk boundaries fall anywhere, even inside an `id:` line.
 */
function stormClient(port, request, lastMissed, onSettled) {
  const socket = net.connect(port, '127.0.0.1');
  const client = { socket, startedAt: performance.now(), caughtUpAt: 0, ids: [], streaming: false, error: undefined };
  let settled = false;
  const settle = (error) => {
    if (settled) return;
    settled = true;
    client.error = error;
    onSettled();
  };
  // The body's last (partial) line; it starts as a LF so that every id line, the first included, follows one.
  let pending = LF_BYTE;
  // A refusal is settled once its body says who refused: the gateway's JSON error code, or the proxy.
  let refusal;
  const onHead = (status, head) => {
    if (status === 200) client.streaming = true;
    else refusal = { status, json: /\r\ncontent-type: application\/json/i.test(head) };
  };
  const onBody = (piece) => {
    if (refusal) {
      const code = refusal.json ? /"code":"([^"]+)"/.exec(piece.toString('latin1'))?.[1] : 'proxy';
      settle(`HTTP ${refusal.status} ${code ?? ''}`.trim());
      socket.destroy();
      return;
    }
    const data = Buffer.concat([pending, piece]);
    // Always >= 0: data starts with the LF kept from the previous piece.
    const lastLf = data.lastIndexOf(LF);
    for (let at = data.indexOf(ID_LINE); at >= 0 && at < lastLf; at = data.indexOf(ID_LINE, at + 1)) {
      // toString copies: a slice of a larger string would keep the whole chunk's text alive.
      const id = data.toString('latin1', at + ID_LINE.length, data.indexOf(LF, at + ID_LINE.length));
      client.ids.push(id);
      if (id === lastMissed && client.caughtUpAt === 0) {
        client.caughtUpAt = performance.now();
        settle(undefined);
      }
    }
    pending = Buffer.from(data.subarray(lastLf)); // a copy, for the same reason
  };
  const push = httpStreamDecoder(onHead, onBody);
  socket.once('connect', () => socket.write(request));
  socket.once('error', (error) => settle(error.code ?? error.message));
  socket.once('close', () => settle(refusal ? `HTTP ${refusal.status}` : 'closed'));
  socket.on('data', push);
  return client;
}

/**
 * Where the storm's time goes: CPU of the gateway and of this process (the clients), and the kernel's
 * count of connections dropped because the gateway's accept queue was full (host-wide, so a concurrent
 * benchmark on the same machine would show up here too).
 */
function load(serverPids) {
  return { gatewayCpu: totalCpu(serverPids), clientCpu: process.cpuUsage(), overflows: listenOverflows() };
}

function totalCpu(pids) {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

function loadSince(before, serverPids) {
  const clientCpu = process.cpuUsage(before.clientCpu);
  return {
    gatewayCpuS: totalCpu(serverPids) - before.gatewayCpu,
    clientCpuS: (clientCpu.user + clientCpu.system) / 1e6,
    listenOverflows: listenOverflows() - before.overflows,
  };
}

/**
 * The gateways' resident memory (summed over `pids`) every 100 ms while the storm runs: what it held before,
 * and its peak. A storm's memory must stay bounded: replays share bytes, a slow client is cut off.
 */
function sampleRss(pids) {
  const pageKb = (Number(spawnSync('getconf', ['PAGESIZE']).stdout.toString()) || 4096) / 1024;
  const rssKb = () =>
    pids.reduce((sum, pid) => {
      try {
        return sum + Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * pageKb;
      } catch {
        return sum; // the process is gone
      }
    }, 0);
  const beforeKb = rssKb();
  let peakKb = beforeKb;
  const timer = setInterval(() => {
    peakKb = Math.max(peakKb, rssKb());
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return { rssBeforeMb: beforeKb / 1024, peakRssMb: Math.max(peakKb, rssKb()) / 1024 };
    },
  };
}

/** TcpExt ListenOverflows from /proc/net/netstat: a header line of names, then a line of values. */
function listenOverflows() {
  const [names, values] = readFileSync('/proc/net/netstat', 'latin1')
    .split('\n')
    .filter((line) => line.startsWith('TcpExt:'))
    .map((line) => line.split(' '));
  return Number(values[names.indexOf('ListenOverflows')]);
}

function settledOrTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(predicate, ms) {
  const deadline = performance.now() + ms;
  while (!predicate() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

/**
 * Compares what one client received with `expected`, the ids after its cursor in publish order. A gap is
 * an event missing before the newest one received; events after it are `late` (not there by the end).
 */
function checkClient(ids, expected, indexOf) {
  const seen = new Set();
  let dups = 0;
  let unexpected = 0;
  let outOfOrder = false;
  let newest = -1;
  for (const id of ids) {
    const index = indexOf.get(id);
    if (index === undefined) unexpected++;
    else if (seen.has(id)) dups++;
    else {
      seen.add(id);
      if (index < newest) outOfOrder = true;
      newest = Math.max(newest, index);
    }
  }
  return { gaps: newest + 1 - seen.size, late: expected.length - 1 - newest, dups, unexpected, outOfOrder };
}

function summarise(clients, storm, expected, liveEvents) {
  const indexOf = new Map(expected.map((id, index) => [id, index]));
  const errorKinds = new Map();
  const times = [];
  const totals = { connectErrors: 0, notCaughtUp: 0, gaps: 0, late: 0, dups: 0, unexpected: 0, outOfOrder: 0 };
  let lastCaughtUpAt = storm.startedAt;
  for (const client of clients) {
    if (!client.streaming) {
      totals.connectErrors++;
      const kind = client.error ?? 'timeout';
      errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1);
      continue;
    }
    // Catching up while the live events drain, after the storm's timeout, does not count.
    if (client.caughtUpAt === 0 || client.caughtUpAt > storm.endedAt) totals.notCaughtUp++;
    else {
      times.push(client.caughtUpAt - client.startedAt);
      lastCaughtUpAt = Math.max(lastCaughtUpAt, client.caughtUpAt);
    }
    const check = checkClient(client.ids, expected, indexOf);
    totals.gaps += check.gaps;
    totals.late += check.late;
    totals.dups += check.dups;
    totals.unexpected += check.unexpected;
    if (check.outOfOrder) totals.outOfOrder++;
  }
  times.sort((a, b) => a - b);
  return {
    conns: clients.length,
    replayed: expected.length - liveEvents,
    liveEvents,
    issueMs: storm.issueMs,
    // Time until the last streaming client caught up; Infinity when one never did within the timeout.
    allCaughtUpMs: totals.notCaughtUp > 0 ? Number.POSITIVE_INFINITY : lastCaughtUpAt - storm.startedAt,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    ...totals,
    errorKinds: [...errorKinds].map(([kind, count]) => `${kind} x${count}`).join(', ') || '-',
  };
}

/** Whether an attempt meets the target: everyone connected and caught up in time, nothing lost or repeated. */
export function meetsTarget(r) {
  const clean = r.connectErrors + r.notCaughtUp + r.gaps + r.late + r.dups + r.unexpected + r.outOfOrder === 0;
  return clean && r.allCaughtUpMs <= TARGET_MS;
}
