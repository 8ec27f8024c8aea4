/// <reference types="node" />
/**
 * Bounded memory and timeouts: a client that stops reading is cut off (unsent backlog over
 * maxBufferedBytes, or a write that makes no progress within writeTimeoutMs) without slowing a healthy
 * client of the same topic; idle connections and old connections are closed; a resuming client is not
 * mistaken for a slow one.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  closeAllCollectors,
  closeAllRawStreams,
  collect,
  countOf,
  eventsUrl,
  metric,
  publish,
  publishAll,
  type Received,
  range,
  rawStream,
  startTestGateway,
  stats,
  type TestGateway,
} from './support/gateway.js';
import { waitFor, withDeadline } from './support/wait.js';

const KIB = 1024;
const gateways: TestGateway[] = [];
const sockets: Socket[] = [];

async function gatewayWith(overrides: Parameters<typeof startTestGateway>[0]): Promise<TestGateway> {
  const started = await startTestGateway(overrides);
  gateways.push(started);
  return started;
}

afterEach(() => {
  closeAllCollectors();
  closeAllRawStreams();
  for (const socket of sockets.splice(0)) socket.destroy();
});

afterAll(async () => {
  await Promise.all(gateways.map((started) => started.close()));
});

/** A big event whose sequence number can be read back: `<n>:xxxx...`. */
function bigData(n: number, bytes: number): string {
  const head = `${n}:`;
  return head + 'x'.repeat(bytes - head.length);
}
const sequence = (events: readonly Received[]) =>
  events.map((event) => Number(event.data.slice(0, event.data.indexOf(':'))));

/**
 * Opens /events over a raw TCP socket, waits for the response head and the retry line, then stops
 * reading for good: the kernel buffers fill, then the gateway's.
 */
async function stalledClient(base: string, topics: readonly string[]): Promise<{ socket: Socket; head: string }> {
  const { port } = new URL(base);
  const query = topics.map((topic) => `topic=${encodeURIComponent(topic)}`).join('&');
  const socket = connect({ host: '127.0.0.1', port: Number(port) });
  sockets.push(socket);
  await withDeadline(once(socket, 'connect'), { what: 'the raw socket to connect' });
  socket.write(`GET /events?${query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
  let head = '';
  const onData = (chunk: Buffer) => {
    head += chunk.toString('latin1');
  };
  socket.on('data', onData);
  await waitFor(() => head.includes('\r\n\r\n') && head.includes('retry: '), {
    what: 'the response head and retry line',
  });
  socket.off('data', onData);
  socket.pause();
  return { socket, head };
}

/** Resumes reading a stalled socket and resolves once the server has closed it (all its bytes drained). */
async function drainUntilClosed(socket: Socket): Promise<number> {
  let bytes = 0;
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  socket.on('error', () => {});
  const closed = once(socket, 'close');
  socket.resume();
  await withDeadline(closed, { what: 'the gateway to close the stalled connection', timeoutMs: 30_000 });
  return bytes;
}

describe('a client that stops reading', () => {
  it('is cut off as a slow consumer once its backlog passes maxBufferedBytes, while a healthy client gets everything', async () => {
    const slow = await gatewayWith({
      maxBufferedBytes: 256 * KIB,
      // Only the backlog budget may cut it here, not the write timeout.
      writeTimeoutMs: 600_000,
      historyMaxLength: 2000,
    });
    const topic = 'slow/budget';
    // Only the stalled client follows the marker topic too: its consumer count says whether it is still open.
    const marker = 'slow/budget-stalled';
    const healthy = collect(eventsUrl(slow.url, topic), { events: ['big'] });
    await healthy.waitForOpen();
    const { socket, head } = await stalledClient(slow.url, [topic, marker]);
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    await waitFor(() => slow.gateway.hub.consumers(topic) === 2 && slow.gateway.hub.consumers(marker) === 1, {
      what: 'both clients attached',
    });
    const before = await metric(slow.adminUrl, 'sse_gateway_disconnects_total', { reason: 'slow-consumer' });

    // One 32 KiB event per request, until the stalled client is gone (its kernel buffers hold a few MiB).
    let published = 0;
    while (slow.gateway.hub.consumers(marker) === 1) {
      const response = await publish(slow.url, { topic, event: 'big', data: bigData(published, 32 * KIB) });
      expect(response.status).toBe(200);
      published++;
      if (published > 4000) throw new Error('the stalled client was never cut off after 125 MiB');
    }
    // A few more after the cut: the healthy client keeps going.
    for (let extra = 0; extra < 20; extra++) {
      await publish(slow.url, { topic, event: 'big', data: bigData(published++, 32 * KIB) });
    }

    expect(await metric(slow.adminUrl, 'sse_gateway_disconnects_total', { reason: 'slow-consumer' })).toBe(before + 1);
    await waitFor(async () => (await stats(slow.adminUrl, [topic])).connections === 1, {
      what: 'one connection in /stats',
    });
    expect(slow.gateway.hub.connectionCount).toBe(1);
    expect((await stats(slow.adminUrl, [topic])).consumers[topic]).toBe(1);

    await healthy.waitForCount(published, { timeoutMs: 60_000 });
    expect(sequence(healthy.events)).toEqual(range(0, published));
    expect(healthy.events.every((event) => event.event === 'big' && event.data.length === 32 * KIB)).toBe(true);
    // Never slowed down or cut: one connection from start to end.
    expect(healthy.opens).toBe(1);

    // The stalled socket really was closed by the gateway: once it reads again it reaches the end.
    const drained = await drainUntilClosed(socket);
    expect(drained).toBeLessThan(published * 33 * KIB);
  });

  it('is cut off when a write makes no progress within writeTimeoutMs, even under a large budget', async () => {
    const timing = await gatewayWith({
      writeTimeoutMs: 300,
      maxBufferedBytes: 512 * 1024 * KIB,
      historyMaxLength: 2000,
    });
    const topic = 'slow/write-timeout';
    const marker = 'slow/write-timeout-stalled';
    const healthy = collect(eventsUrl(timing.url, topic), { events: ['big'] });
    await healthy.waitForOpen();
    const { socket } = await stalledClient(timing.url, [topic, marker]);
    await waitFor(() => timing.gateway.hub.consumers(topic) === 2 && timing.gateway.hub.consumers(marker) === 1, {
      what: 'both clients attached',
    });
    const before = await metric(timing.adminUrl, 'sse_gateway_disconnects_total', { reason: 'write-timeout' });
    const timeoutsBefore = await metric(timing.adminUrl, 'sse_gateway_write_timeouts_total');

    let published = 0;
    while (timing.gateway.hub.consumers(marker) === 1) {
      const response = await publish(timing.url, { topic, event: 'big', data: bigData(published, 32 * KIB) });
      expect(response.status).toBe(200);
      published++;
      // Once the kernel buffers are full, stop adding and let the write timeout fire on its own.
      if (published >= 400) {
        await waitFor(() => timing.gateway.hub.consumers(marker) === 0, {
          what: 'the write timeout to close the stalled client',
          timeoutMs: 30_000,
        });
      }
    }

    expect(await metric(timing.adminUrl, 'sse_gateway_disconnects_total', { reason: 'write-timeout' })).toBeGreaterThan(
      before,
    );
    expect(await metric(timing.adminUrl, 'sse_gateway_write_timeouts_total')).toBeGreaterThan(timeoutsBefore);
    expect(await metric(timing.adminUrl, 'sse_gateway_disconnects_total', { reason: 'slow-consumer' })).toBe(0);
    await drainUntilClosed(socket);
    await waitFor(() => timing.gateway.hub.connectionCount === 1, { what: 'only the healthy client left' });

    // A 300 ms write timeout is tight for a loaded machine: should the healthy client ever be cut too, it
    // resumes from history, so what must hold is that it sees every event once, in order.
    await healthy.waitForCount(published, { timeoutMs: 60_000 });
    expect(sequence(healthy.events)).toEqual(range(0, published));
  });
});

describe('a client resuming over a history larger than its budget', () => {
  it('gets all of it on one connection, not cut off as a slow consumer (replay honours backpressure)', async () => {
    const replaying = await gatewayWith({ maxBufferedBytes: 256 * KIB, historyMaxLength: 1000 });
    const topic = 'slow/replay';
    // 300 events of 16 KiB: about 4.7 MiB of history, far more than the 256 KiB budget.
    const ids = await publishAll(
      replaying.url,
      topic,
      range(0, 300).map((n) => bigData(n, 16 * KIB)),
      { batchSize: 50 },
    );
    const client = collect(eventsUrl(replaying.url, topic), { lastEventId: ids[0] });
    // Done when everything arrived, or as soon as the stream failed (the gateway cut it off).
    await waitFor(() => client.events.length >= 299 || client.errors > 0, {
      what: `the replay of 299 events (received ${client.events.length})`,
      timeoutMs: 30_000,
    });
    expect(await metric(replaying.adminUrl, 'sse_gateway_disconnects_total', { reason: 'slow-consumer' })).toBe(0);
    expect(client.errors, `stream failures after ${client.events.length} events`).toBe(0);
    expect(client.opens).toBe(1);
    await client.waitForCount(299);
    expect(sequence(client.events)).toEqual(range(1, 300));
  });
});

describe('idle timeout and max connection age', () => {
  it('closes a connection that received no event for idleTimeoutMs (heartbeats do not count); EventSource reconnects', async () => {
    const idle = await gatewayWith({ idleTimeoutMs: 300, heartbeatMs: 100 });
    const stream = await rawStream(eventsUrl(idle.url, 'idle/raw'));
    await withDeadline(stream.finished, { what: 'the idle stream to end', timeoutMs: 20_000 });
    expect(stream.ended).toBe(true);
    expect(stream.error).toBeUndefined();
    expect(stream.text).toMatch(/^retry: \d+\n\n/);
    expect(countOf(stream.text, 'data:')).toBe(0);
    expect(
      await metric(idle.adminUrl, 'sse_gateway_disconnects_total', { reason: 'idle-timeout' }),
    ).toBeGreaterThanOrEqual(1);

    const client = collect(eventsUrl(idle.url, 'idle/eventsource'));
    await client.waitForOpen(2, { timeoutMs: 20_000 });
    expect(client.errors).toBeGreaterThanOrEqual(1);
    // Reconnected and working: an event published now arrives.
    await publishAll(idle.url, 'idle/eventsource', ['hello']);
    await client.waitForCount(1);
    expect(client.events[0]?.data).toBe('hello');
  });

  it('closes connections older than maxConnectionAgeMs (minus at most 10% jitter), cleanly', async () => {
    const aging = await gatewayWith({ maxConnectionAgeMs: 400 });
    const openedAt = Date.now();
    const streams = await Promise.all(range(0, 3).map(() => rawStream(eventsUrl(aging.url, 'age/raw'))));
    await withDeadline(Promise.all(streams.map((stream) => stream.finished)), {
      what: 'the old streams to end',
      timeoutMs: 20_000,
    });
    const elapsed = Date.now() - openedAt;
    expect(elapsed).toBeGreaterThanOrEqual(360);
    for (const stream of streams) {
      expect(stream.ended).toBe(true);
      expect(stream.error).toBeUndefined();
    }
    expect(await metric(aging.adminUrl, 'sse_gateway_disconnects_total', { reason: 'max-age' })).toBe(3);
    await waitFor(() => aging.gateway.hub.connectionCount === 0, { what: 'no connection left' });
  });
});
