/// <reference types="node" />
/**
 * The publisher SDK's HTTP transport against a real gateway: ids it resolves with are the ids
 * subscribers see, batches keep their order, bad input fails locally, gateway refusals and unreachable
 * gateways map to typed errors.
 */
import { createPublisher, NetworkError, PublishError, ValidationError } from '@sse-gateway/publisher-sdk';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  closeAllCollectors,
  collect,
  eventsUrl,
  range,
  startTestGateway,
  type TestGateway,
  unusedPort,
} from './support/gateway.js';

let gateway: TestGateway;
/** Where nothing listens: a send that reached the network would fail with NetworkError, not ValidationError. */
let nowhere: string;

beforeAll(async () => {
  gateway = await startTestGateway({ maxPayloadBytes: 1024, maxBatchSize: 10 });
  nowhere = `http://127.0.0.1:${await unusedPort()}`;
});

afterEach(() => {
  closeAllCollectors();
});

afterAll(async () => {
  await gateway?.close();
});

/** Resolves with the rejection of `promise` (fails the test when it resolves). */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

describe('send', () => {
  it('resolves with the id that subscribers see as lastEventId', async () => {
    const topic = 'sdk/send';
    const subscriber = collect(eventsUrl(gateway.url, topic), { events: ['tick'] });
    await subscriber.waitForOpen();
    const publisher = createPublisher({ url: gateway.url, topic });
    const id = await publisher.send('tick', { n: 1 });
    expect(id).toMatch(/^[0-9a-z]{1,16}:\d+-\d+$/);
    await subscriber.waitForCount(1);
    expect(subscriber.events[0]).toEqual({ id, event: 'tick', data: '{"n":1}' });
    expect(subscriber.source.readyState).toBe(1);
    await publisher.close();
  });

  it('sends strings as they are, the default event without an event line, and other topics on request', async () => {
    const topic = 'sdk/kinds';
    const other = 'sdk/kinds-other';
    const subscriber = collect(eventsUrl(gateway.url, [topic, other]), { events: ['price'] });
    await subscriber.waitForOpen();
    const publisher = createPublisher({ url: `${gateway.url}/`, topic });
    const first = await publisher.send('message', 'line one\nline two');
    const second = await publisher.send('price', '101.5', { topic: other });
    await subscriber.waitForCount(2);
    expect(subscriber.events[0]).toMatchObject({ event: 'message', data: 'line one\nline two' });
    expect(subscriber.events[1]).toMatchObject({ event: 'price', data: '101.5' });
    // Multi-topic ids: one position per sorted topic, each the id the publisher got back.
    expect(subscriber.events[1]?.id.split(',')).toEqual([first, second]);
    await publisher.close();
  });
});

describe('sendMany', () => {
  it('stores a batch in order and resolves with the ids in that order', async () => {
    const topic = 'sdk/batch';
    const subscriber = collect(eventsUrl(gateway.url, topic));
    await subscriber.waitForOpen();
    const publisher = createPublisher({ url: gateway.url, topic });
    const ids = await publisher.sendMany(range(0, 10).map((n) => ({ data: String(n) })));
    expect(ids).toHaveLength(10);
    expect(new Set(ids).size).toBe(10);
    await subscriber.waitForCount(10);
    expect(subscriber.events.map((event) => event.data)).toEqual(range(0, 10).map(String));
    expect(subscriber.events.map((event) => event.id)).toEqual(ids);
    expect(await publisher.sendMany([])).toEqual([]);
    await publisher.close();
  });

  it('splits a batch larger than the gateway MAX_BATCH_SIZE into several requests, in order', async () => {
    const topic = 'sdk/big-batch';
    const subscriber = collect(eventsUrl(gateway.url, topic));
    await subscriber.waitForOpen();
    // This gateway accepts 10 events per request.
    const publisher = createPublisher({ url: gateway.url, topic, maxBatchSize: 10 });
    const ids = await publisher.sendMany(range(0, 250).map((n) => ({ data: String(n) })));
    expect(ids).toHaveLength(250);
    await subscriber.waitForCount(250);
    expect(subscriber.events.map((event) => event.data)).toEqual(range(0, 250).map(String));
    expect(subscriber.events.map((event) => event.id)).toEqual(ids);
    await publisher.close();
  });
});

describe('errors', () => {
  it.each([
    ['a topic with a space', { topic: 'bad topic' }, 'tick'],
    ['an empty topic', { topic: '' }, 'tick'],
    ['a CR in the event name', { topic: 'sdk/ok' }, 'tick\rdata: forged'],
    ['a LF in the event name', { topic: 'sdk/ok' }, 'tick\nid: 1'],
    ['the reserved gateway. prefix', { topic: 'sdk/ok' }, 'gateway.reset'],
  ])('%s is a ValidationError raised before anything is sent', async (_what, options, event) => {
    // Pointed at a port nothing listens on: reaching the network would give a NetworkError instead.
    const publisher = createPublisher({ url: nowhere, ...options });
    const error = await rejectionOf(publisher.send(event, 'x'));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toBeInstanceOf(PublishError);
    expect((error as ValidationError).kind).toBe('validation');
    expect((error as ValidationError).status).toBeUndefined();
  });

  it('a publisher without any topic is a ValidationError', async () => {
    const publisher = createPublisher({ url: nowhere });
    expect(await rejectionOf(publisher.send('tick', 'x'))).toBeInstanceOf(ValidationError);
  });

  it('data that is not JSON-serialisable is a ValidationError', async () => {
    const publisher = createPublisher({ url: nowhere, topic: 'sdk/ok' });
    expect(await rejectionOf(publisher.send('tick', 10n))).toBeInstanceOf(ValidationError);
  });

  it('a gateway 4xx becomes a ValidationError carrying the status and the gateway error code', async () => {
    const publisher = createPublisher({ url: gateway.url, topic: 'sdk/refused' });
    // Valid for the SDK, too big for this gateway (maxPayloadBytes 1024).
    const tooBig = await rejectionOf(publisher.send('tick', 'x'.repeat(2000)));
    expect(tooBig).toBeInstanceOf(ValidationError);
    expect(tooBig).toMatchObject({ status: 413, code: 'payload_too_large', kind: 'validation' });
    expect((tooBig as Error).message).toContain('413');

    const tooMany = await rejectionOf(publisher.sendMany(range(0, 11).map((n) => ({ data: String(n) }))));
    expect(tooMany).toBeInstanceOf(ValidationError);
    expect(tooMany).toMatchObject({ status: 413, code: 'batch_too_large' });
    await publisher.close();
  });

  it('an unreachable gateway is a NetworkError with the cause attached', async () => {
    const publisher = createPublisher({ url: nowhere, topic: 'sdk/unreachable', timeoutMs: 5000 });
    const error = await rejectionOf(publisher.send('tick', 'x'));
    expect(error).toBeInstanceOf(NetworkError);
    expect((error as NetworkError).kind).toBe('network');
    expect((error as NetworkError).cause).toBeInstanceOf(Error);
    expect((error as Error).message).toContain(nowhere.replace('http://', ''));
  });

  it('a send after close is refused', async () => {
    const publisher = createPublisher({ url: gateway.url, topic: 'sdk/closed' });
    await publisher.close();
    const error = await rejectionOf(publisher.send('tick', 'x'));
    expect(error).toBeInstanceOf(PublishError);
    expect((error as PublishError).kind).toBe('closed');
  });
});
