/// <reference types="node" />
/**
 * WORKERS=2: one supervisor and two gateway worker processes sharing one port, on a real redis-server.
 * Streams land on both workers; a worker killed with SIGKILL is replaced while its clients resume on the
 * port (the other worker, or its successor) with every event exactly once; SIGTERM to the supervisor
 * drains both workers and exits 0. The embedded engine is refused with more than one worker.
 */
import { execFile } from 'node:child_process';
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeAllCollectors, collect, eventsUrl } from './support/gateway.js';
import { children, cleanEnv, MAIN, REPO_ROOT, spawnGateway } from './support/gateway-process.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor, withDeadline } from './support/wait.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
}, 60_000);
afterAll(async () => {
  await redis?.stop();
});
afterEach(() => {
  closeAllCollectors();
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

describe('WORKERS=2', () => {
  it('spreads streams over both workers, survives a worker kill -9 losing nothing, drains on SIGTERM', async () => {
    const prefix = uniquePrefix('workers');
    const gateway = await spawnGateway({
      WORKERS: '2',
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      RETRY_MS: '100',
      RETRY_JITTER: '0',
      DRAIN_MS: '500',
    });
    const listening = () => gateway.logs.filter((line) => line.msg === 'gateway listening');
    await waitFor(() => listening().length === 2, { what: 'both workers listening' });
    expect(new Set(listening().map((line) => line.worker)).size).toBe(2);

    const topic = 'workers/t';
    const clients = Array.from({ length: 20 }, () => collect(eventsUrl(gateway.url, topic)));
    await waitFor(() => clients.every((client) => client.opens === 1), { what: '20 streams open' });
    const holders = () =>
      new Set(gateway.logs.filter((line) => line.msg === 'connection opened').map((line) => line.worker));
    // Log lines leave in batches (within 100 ms): wait for them.
    await waitFor(() => holders().size === 2, { what: "'connection opened' lines from both workers" });

    // Published straight to Redis, as a worker service does (an HTTP publish could meet a kept-alive
    // connection to the worker about to be killed).
    const publisher = createPublisher({ redis: redis.url, prefix, topic });
    const send = (label: string) =>
      publisher.sendMany(Array.from({ length: 10 }, (_, n) => ({ event: 'message', data: `${label}${n}` })));
    const first = await send('a');
    await waitFor(() => clients.every((client) => client.events.length === 10), { what: 'the first 10 events' });

    const victim = listening()[0];
    process.kill(Number(victim?.pid), 'SIGKILL');
    const during = await send('b');
    await publisher.close();
    await waitFor(() => clients.every((client) => client.events.length === 20), {
      what: 'every client to have all 20 events after the kill',
      timeoutMs: 30_000,
    });
    for (const client of clients) expect(client.events.map((event) => event.id)).toEqual([...first, ...during]);
    expect(clients.filter((client) => client.opens > 1).length).toBeGreaterThan(0);
    await waitFor(() => gateway.logs.some((line) => line.msg === 'worker died; starting another'), {
      what: 'the supervisor to notice',
    });
    await waitFor(() => listening().length === 3, { what: 'a new worker listening' });

    gateway.child.kill('SIGTERM');
    const { code } = await withDeadline(gateway.exited, { what: 'the supervisor to exit', timeoutMs: 20_000 });
    expect(code).toBe(0);
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'stopped').length === 2, {
      what: "both workers' 'stopped' lines",
    });
  }, 90_000);

  it('refuses more than one worker on the embedded engine', async () => {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [MAIN], { cwd: REPO_ROOT, env: cleanEnv({ WORKERS: '2' }) }, (error, _out, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/WORKERS=2 needs Redis/);
  });
});
