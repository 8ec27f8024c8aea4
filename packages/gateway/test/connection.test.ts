/**
 * The Connection on its own, without sockets: a recording sink stands in for the transport (the sink
 * interface is the boundary; the real sinks are exercised end to end over HTTP/1.1, HTTP/2 and gzip). Checks
 * exactly-once positions, the replay queue, the byte budget, the write timeout's progress rule and which
 * ending each close reason takes.
 */
import type { Position } from '@sse-gateway/publisher-sdk/protocol';
import { describe, expect, it } from 'vitest';
import { Connection, type SweepLimits } from '../src/hub/connection.js';
import { type Delivery, encodeDelivery } from '../src/hub/delivery.js';
import type { StreamSink } from '../src/sink/stream-sink.js';

class RecordingSink implements StreamSink {
  started = false;
  gone = false;
  bufferedBytes = 0;
  flushedBytes = 0;
  readonly written: string[] = [];
  ended: 'end' | 'abort' | 'retry-only' | undefined;
  #writable: (() => void)[] = [];

  start(): void {
    this.started = true;
  }
  write(bytes: Buffer | string): void {
    this.written.push(bytes.toString());
  }
  onceWritable(callback: () => void): void {
    this.#writable.push(callback);
  }
  drain(): void {
    this.bufferedBytes = 0;
    for (const callback of this.#writable.splice(0)) callback();
  }
  end(): void {
    this.ended = 'end';
  }
  abort(): void {
    this.ended = 'abort';
  }
  answerRetryOnly(): void {
    this.ended = 'retry-only';
  }
  text(): string {
    return this.written.join('');
  }
}

const at = (ms: number, seq = 0, epoch = 'e1'): Position => ({ epoch, ms, seq });
const ORIGIN: Position = { epoch: '', ms: 0, seq: 0 };
const delivery = (topic: string, position: Position, data = `d${position.ms}`): Delivery =>
  encodeDelivery({ topic, position, event: 'message', data });
const limits: SweepLimits = { writeTimeoutMs: 1000, closeOnWriteTimeout: true, idleTimeoutMs: 0 };

function open(topics: string[], options: { budget?: number; positions?: Position[] } = {}) {
  const sink = new RecordingSink();
  const connection = new Connection({
    id: 1,
    topics,
    positions: options.positions ?? topics.map(() => ORIGIN),
    sink,
    maxBufferedBytes: options.budget ?? 1 << 20,
    now: 0,
    closeAt: Number.POSITIVE_INFINITY,
    remoteAddress: undefined,
    expiresAt: Number.POSITIVE_INFINITY,
    retryHintMs: 2000,
    headers: {},
  });
  return { connection, sink };
}

describe('Connection', () => {
  it('writes nothing before start, then the retry hint first', () => {
    const { connection, sink } = open(['a']);
    connection.writeHeartbeat();
    expect(sink.written).toEqual([]);
    connection.start();
    expect(sink.text()).toBe('retry: 2000\n\n');
  });

  it('sends each position once and in order: history overlapping live is skipped', () => {
    const { connection, sink } = open(['a']);
    connection.start();
    connection.deliver(delivery('a', at(2)));
    connection.deliver(delivery('a', at(3)));
    const history = [delivery('a', at(1)), delivery('a', at(2))];
    connection.writeHistoryChunk({ deliveries: history, bytes: Buffer.concat(history.map((item) => item.frame)) });
    connection.goLive();
    connection.deliver(delivery('a', at(3)));
    const ids = sink.text().match(/^id: .*$/gm);
    expect(ids).toEqual(['id: e1:1-0', 'id: e1:2-0', 'id: e1:3-0']);
    expect(connection.eventsSent).toBe(3);
  });

  it('gives a multi-topic connection one combined id per event', () => {
    const { connection, sink } = open(['a', 'b']);
    connection.start();
    connection.goLive();
    connection.deliver(delivery('b', at(5)));
    connection.deliver(delivery('a', at(7)));
    expect(sink.text().match(/^id: .*$/gm)).toEqual(['id: :0-0,e1:5-0', 'id: e1:7-0,e1:5-0']);
  });

  it('resets a topic whose history was recreated (other epoch) before its first new event', () => {
    const { connection, sink } = open(['a'], { positions: [at(4)] });
    const resets: string[] = [];
    const deliveries = { events: 0 };
    connection.onReset = (reason) => resets.push(reason);
    connection.deliveries = deliveries;
    connection.start();
    connection.goLive();
    connection.deliver(delivery('a', at(1, 0, 'e2')));
    expect(sink.text()).toContain('event: gateway.reset');
    expect(sink.text()).toContain('"reason":"stream-lost"');
    expect(
      sink
        .text()
        .match(/^id: .*$/gm)
        ?.at(-1),
    ).toBe('id: e2:1-0');
  });

  it('closes as a slow consumer when the replay queue outgrows the budget, and aborts', () => {
    const { connection, sink } = open(['a'], { budget: 100 });
    connection.start();
    for (let ms = 1; ms <= 10 && !connection.closed; ms++) connection.deliver(delivery('a', at(ms), 'x'.repeat(20)));
    expect(connection.closeReason).toBe('slow-consumer');
    expect(sink.ended).toBe('abort');
  });

  it('closes as a slow consumer when the sink backlog is over the budget at the next write', () => {
    const { connection, sink } = open(['a'], { budget: 100 });
    connection.start();
    connection.goLive();
    sink.bufferedBytes = 101;
    connection.deliver(delivery('a', at(1)));
    expect(connection.closeReason).toBe('slow-consumer');
  });

  it('times out a write only when the transport took nothing for the whole timeout', () => {
    const { connection, sink } = open(['a']);
    connection.start();
    sink.bufferedBytes = 50;
    expect(connection.sweep(0, false, limits)).toBeUndefined();
    sink.flushedBytes = 10; // a slow but moving reader
    expect(connection.sweep(900, false, limits)).toBeUndefined();
    expect(connection.sweep(1800, false, limits)).toBeUndefined();
    expect(connection.sweep(2900, false, limits)).toBe('write-timeout');
    const lenient = { ...limits, closeOnWriteTimeout: false };
    expect(connection.sweep(3500, false, lenient)).toBeUndefined();
    expect(connection.sweep(3900, false, lenient)).toBe('write-stalled');
  });

  it('resolves whenWritable once the sink drained', async () => {
    const { connection, sink } = open(['a'], { budget: 100 });
    connection.start();
    sink.bufferedBytes = 80;
    let resolved = false;
    const writable = connection.whenWritable().then(() => {
      resolved = true;
    });
    await Promise.resolve();
    expect(resolved).toBe(false);
    sink.drain();
    await writable;
    expect(resolved).toBe(true);
  });

  it('heartbeats only a connection that wrote nothing since the last round', () => {
    const { connection, sink } = open(['a']);
    connection.start();
    connection.sweep(0, true, limits); // the retry hint counted as traffic
    const before = sink.written.length;
    connection.sweep(1, true, limits);
    expect(sink.written.slice(before)).toEqual([':\n\n']);
  });

  it.each([
    ['client-closed', 'abort'],
    ['slow-consumer', 'abort'],
    ['write-timeout', 'abort'],
    ['shutdown', 'end'],
    ['max-age', 'end'],
    ['idle-timeout', 'end'],
  ] as const)('ends a started stream closed for %s with %s', (reason, ending) => {
    const { connection, sink } = open(['a']);
    connection.start();
    connection.close(reason);
    expect(sink.ended).toBe(ending);
  });

  it('answers a stream that never started with a retry-only response, unless the client left', () => {
    const first = open(['a']);
    first.connection.close('shutdown');
    expect(first.sink.ended).toBe('retry-only');
    const second = open(['a']);
    second.connection.close('client-closed');
    expect(second.sink.ended).toBe('abort');
  });
});
