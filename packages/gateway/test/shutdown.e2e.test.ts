/// <reference types="node" />
/**
 * The real process: `node packages/gateway/dist/main.js` (build first: `npx tsc -b`). SIGTERM drains
 * (readiness off, no new streams, existing ones closed spread over DRAIN_MS) and exits 0, after serving on
 * with readiness off for DRAIN_DELAY_MS when that is set; `--help` prints
 * usage; an invalid environment exits 2 listing every problem.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type Collector,
  closeAllCollectors,
  closeAllRawStreams,
  collect,
  eventsUrl,
  publishAll,
  type RawStream,
  range,
  rawStream,
} from './support/gateway.js';
import { children, cleanEnv, MAIN, REPO_ROOT, spawnGateway } from './support/gateway-process.js';
import { waitFor, withDeadline } from './support/wait.js';

/** Status of a GET, or 'refused' when the node no longer accepts connections. */
async function statusOrRefused(url: string): Promise<number | 'refused'> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    await response.body?.cancel();
    return response.status;
  } catch {
    return 'refused';
  }
}

function run(args: string[], settings: Record<string, string>) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [MAIN, ...args],
      { cwd: REPO_ROOT, env: cleanEnv(settings), timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

beforeAll(() => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: build first with \`npx tsc -b\``);
});

afterEach(() => {
  closeAllCollectors();
  closeAllRawStreams();
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

describe('SIGTERM', () => {
  it('turns readiness off, refuses new streams, ends every stream spread over DRAIN_MS, and exits 0', async () => {
    // A long retry hint: the clients stay away once their stream ended.
    const gateway = await spawnGateway({ DRAIN_MS: '1000', RETRY_MS: '60000', RETRY_JITTER: '0' });
    expect(await statusOrRefused(`${gateway.url}/readyz`)).toBe(200);
    const topic = 'shutdown/drain';
    const clients: Collector[] = range(0, 4).map(() => collect(eventsUrl(gateway.url, topic)));
    await Promise.all(clients.map((client) => client.waitForOpen()));
    const streams: RawStream[] = await Promise.all(range(0, 2).map(() => rawStream(eventsUrl(gateway.url, topic))));
    await publishAll(gateway.url, topic, ['before']);
    for (const client of clients) await client.waitForCount(1);
    await waitFor(() => streams.every((stream) => stream.text.includes('data: before')), { what: 'the raw streams' });

    const signalledAt = Date.now();
    gateway.child.kill('SIGTERM');

    // Readiness off (503 on a connection still open) or the port no longer accepting: either way, not ready.
    await waitFor(async () => (await statusOrRefused(`${gateway.url}/readyz`)) !== 200, {
      what: '/readyz to stop answering 200',
    });
    expect([503, 'refused']).toContain(await statusOrRefused(eventsUrl(gateway.url, topic)));

    await withDeadline(Promise.all(streams.map((stream) => stream.finished)), {
      what: 'every raw stream to end',
      timeoutMs: 20_000,
    });
    for (const stream of streams) expect(stream.ended || stream.error !== undefined).toBe(true);
    // Without DRAIN_DELAY_MS no balancer is known to have taken the node out: the stream's own hint stands.
    for (const stream of streams) expect(stream.text).toMatch(/data: before\n\n$/);
    await waitFor(() => clients.every((client) => client.errors >= 1), {
      what: 'every EventSource to see its stream end',
    });

    const { code, signal } = await withDeadline(gateway.exited, { what: 'the process to exit', timeoutMs: 20_000 });
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(20_000);

    const draining = gateway.logs.find((line) => line.msg === 'draining');
    const stopped = gateway.logs.find((line) => line.msg === 'stopped');
    expect(draining).toBeDefined();
    expect(stopped).toBeDefined();
    const closes = gateway.logs.filter((line) => line.msg === 'connection closed');
    // Lines of different child loggers may reach the pipe slightly out of order: compare their times.
    for (const close of closes) {
      expect(close.time).toBeGreaterThanOrEqual(draining?.time ?? Number.POSITIVE_INFINITY);
      expect(close.time).toBeLessThanOrEqual(stopped?.time ?? 0);
    }
    expect(closes).toHaveLength(6);
    expect(closes.every((line) => line.reason === 'shutdown')).toBe(true);
    // Spread over the drain time (one close per 50 ms step here), not all at once.
    const times = closes.map((line) => line.time).sort((a, b) => a - b);
    expect((times.at(-1) ?? 0) - (times[0] ?? 0)).toBeGreaterThanOrEqual(5 * 40);
  });

  it('a client that reconnects during the drain is not told to give up for good (no 503 over its kept-alive connection)', async () => {
    // A short retry hint: EventSource reconnects while the node is still draining the others.
    const gateway = await spawnGateway({ DRAIN_MS: '2000', RETRY_MS: '30', RETRY_JITTER: '0' });
    const topic = 'shutdown/reconnect';
    const clients: Collector[] = range(0, 6).map(() => collect(eventsUrl(gateway.url, topic)));
    await Promise.all(clients.map((client) => client.waitForOpen()));
    gateway.child.kill('SIGTERM');
    const { code } = await withDeadline(gateway.exited, { what: 'the process to exit', timeoutMs: 20_000 });
    expect(code).toBe(0);
    await waitFor(() => clients.every((client) => client.errors >= 2), {
      what: 'every EventSource to have tried to reconnect at least once',
    });
    // EventSource treats any non-200 answer as fatal (readyState CLOSED, no more retries); a refused
    // connection is a network error it retries, so the client would find another node.
    const gaveUp = clients.filter((client) => client.source.readyState === 2).map((client) => client.errorCodes);
    expect(gaveUp, 'status codes seen by clients that gave up for good').toEqual([]);
  });
});

describe('SIGTERM with DRAIN_DELAY_MS', () => {
  it('turns readiness off first, keeps serving (new streams too) for the delay, then drains with a short reconnect hint', async () => {
    const DELAY = 1500;
    const gateway = await spawnGateway({ DRAIN_DELAY_MS: String(DELAY), DRAIN_MS: '300', RETRY_MS: '60000' });
    const topic = 'shutdown/delay';
    const before = await rawStream(eventsUrl(gateway.url, topic));
    await waitFor(() => before.text.includes('retry:'), { what: 'the first stream' });

    const signalledAt = Date.now();
    gateway.child.kill('SIGTERM');
    // Readiness off while the port still answers: what a balancer's health check sees.
    await waitFor(async () => (await statusOrRefused(`${gateway.url}/readyz`)) === 503, {
      what: '/readyz to answer 503',
    });
    // A client the balancer still sends here meanwhile gets a stream, and events flow to both.
    const during = await rawStream(eventsUrl(gateway.url, topic));
    expect(during.status).toBe(200);
    await publishAll(gateway.url, topic, ['during-the-delay']);
    await waitFor(() => [before, during].every((stream) => stream.text.includes('data: during-the-delay')), {
      what: 'the event on both streams',
    });
    expect(Date.now() - signalledAt).toBeLessThan(DELAY);

    await withDeadline(Promise.all([before.finished, during.finished]), {
      what: 'both streams to end',
      timeoutMs: 20_000,
    });
    // The balancer has taken the node out: each stream is told to come back soon (250 ms + RETRY_JITTER).
    for (const stream of [before, during]) {
      const hint = Number(/retry: (\d+)\n\n$/.exec(stream.text)?.[1]);
      expect(hint, stream.text.slice(-60)).toBeGreaterThanOrEqual(250);
      expect(hint).toBeLessThanOrEqual(375);
    }
    const { code } = await withDeadline(gateway.exited, { what: 'the process to exit', timeoutMs: 20_000 });
    expect(code).toBe(0);
    const announced = gateway.logs.find((line) => line.msg === 'readiness off; serving until the drain starts');
    const closes = gateway.logs.filter((line) => line.msg === 'connection closed');
    expect(announced?.drainDelayMs).toBe(DELAY);
    expect(closes).toHaveLength(2);
    for (const close of closes) {
      expect(close.reason).toBe('shutdown');
      // Nothing closed before the delay was over (log times are the process's own clock).
      expect(close.time - (announced?.time ?? 0)).toBeGreaterThanOrEqual(DELAY - 50);
    }
  });
});

describe('command line', () => {
  it('--help prints the usage and every setting, and exits 0', async () => {
    const { code, stdout } = await run(['--help'], {});
    expect(code).toBe(0);
    expect(stdout).toContain('Usage: sse-gateway');
    for (const name of ['PORT', 'REDIS_URL', 'HEARTBEAT_MS', 'DRAIN_MS', 'MAX_BUFFERED_BYTES'])
      expect(stdout).toContain(name);
  });

  it('an invalid environment exits 2 and lists every problem', async () => {
    const { code, stderr, stdout } = await run([], { PORT: 'abc', HEARTBEAT_MS: 'x' });
    expect(code).toBe(2);
    expect(stderr).toMatch(/PORT\b.*abc/);
    expect(stderr).toMatch(/HEARTBEAT_MS\b.*x/);
    expect(stdout).not.toContain('gateway listening');
  });
});
