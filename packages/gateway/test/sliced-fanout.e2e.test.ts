/**
 * Large fan-outs are written in slices across event-loop turns, with events that arrive meanwhile sent
 * as one batch. Slicing is lowered to a few writes here so a handful of real clients exercise it: order,
 * exactly-once and the replay handover must hold exactly as on the one-loop path.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configWith } from '../src/config.js';
import { type Gateway, startGateway } from '../src/gateway.js';
import { closeAllCollectors, collect, eventsUrl, publishAll, range } from './support/gateway.js';

describe('sliced fan-out', () => {
  let gateway: Gateway;

  beforeAll(async () => {
    const config = configWith({ port: 0, host: '127.0.0.1', retryMs: 100, retryJitter: 0, historyMaxLength: 100_000 });
    gateway = await startGateway(config, { logger: pino({ level: 'silent' }), fanOutSliceWrites: 4 });
  });

  afterAll(async () => {
    closeAllCollectors();
    await gateway?.close(0);
  });

  it('delivers every event once, in order, to every client, including clients that join mid-stream', async () => {
    const topic = 'sliced/one';
    const early = Array.from({ length: 12 }, () => collect(eventsUrl(gateway.url, topic)));
    await Promise.all(early.map((client) => client.waitForOpen()));
    const [startId] = await publishAll(gateway.url, topic, ['start']);
    // Small batches keep slices in flight while late clients resume from `start` and join the fan-out.
    const publishing = publishAll(gateway.url, topic, range(0, 300).map(String), { batchSize: 5 });
    const late = Array.from({ length: 4 }, () => collect(eventsUrl(gateway.url, topic), { lastEventId: startId }));
    await publishing;
    await publishAll(gateway.url, topic, range(300, 600).map(String));

    await Promise.all(early.map((client) => client.waitForCount(601)));
    await Promise.all(late.map((client) => client.waitForCount(600)));
    for (const client of early) {
      expect(client.events.map((event) => event.data)).toEqual(['start', ...range(0, 600).map(String)]);
    }
    for (const client of late) {
      expect(client.events.map((event) => event.data)).toEqual(range(0, 600).map(String));
    }
    // A straggling duplicate would arrive before this last event: it must be the very next one everywhere.
    await publishAll(gateway.url, topic, ['end']);
    await Promise.all(early.map((client) => client.waitForCount(602)));
    await Promise.all(late.map((client) => client.waitForCount(601)));
    for (const client of [...early, ...late]) expect(client.events.at(-1)?.data).toBe('end');
    expect(early.every((client) => client.events.length === 602)).toBe(true);
    expect(late.every((client) => client.events.length === 601)).toBe(true);
  });
});
