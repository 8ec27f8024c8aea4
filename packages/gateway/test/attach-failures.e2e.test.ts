/**
 * A stream that cannot start (engine failure, drain while it attaches) must not make EventSource give
 * up for good: it gets an empty event stream with a retry hint and reconnects. And engine gap notices
 * reset only connections that actually missed something.
 */
import type { Position } from '@sse-gateway/publisher-sdk/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import type { Engine } from '../src/engine/engine.js';
import { MemoryEngine } from '../src/engine/memory-engine.js';
import {
  closeAllCollectors,
  collect,
  eventsUrl,
  publishAll,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { waitFor } from './support/wait.js';

/** The memory engine with some calls replaced (a Proxy, so every other method stays the real one). */
function engineWith(overrides: (inner: MemoryEngine) => Partial<Engine>): (config: Config) => Engine {
  return (config) => {
    const inner = new MemoryEngine({ maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs });
    const replaced = overrides(inner);
    return new Proxy(inner, {
      get(target, property) {
        if (Object.hasOwn(replaced, property)) return replaced[property as keyof Engine];
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
}

const gateways: TestGateway[] = [];
afterEach(async () => {
  closeAllCollectors();
  await Promise.all(gateways.splice(0).map((gateway) => gateway.close()));
});

describe('a stream that cannot start', () => {
  it('answers an empty event stream with a retry hint when the engine fails, and the client reconnects', async () => {
    let failures = 1;
    const gateway = await startTestGateway(
      {},
      {
        engine: engineWith((inner) => ({
          head: async (topic) => {
            if (failures-- > 0) throw new Error('Redis blip');
            return inner.head(topic);
          },
        })),
      },
    );
    gateways.push(gateway);
    const response = await fetch(eventsUrl(gateway.url, 'blip'));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(await response.text()).toMatch(/^retry: \d+\n\n$/);

    // EventSource sees an ended stream, not an error status: it reconnects, and this time it works.
    failures = 1;
    const client = collect(eventsUrl(gateway.url, 'blip'));
    await client.waitForOpen(2, { timeoutMs: 20_000 });
    await publishAll(gateway.url, 'blip', ['after the blip']);
    await client.waitForCount(1);
    expect(client.events[0]?.data).toBe('after the blip');
  });

  it('answers an empty event stream when the node drains while the stream attaches', async () => {
    let releaseSubscribe: () => void = () => {};
    const subscribed = new Promise<void>((resolve) => {
      releaseSubscribe = resolve;
    });
    const gateway = await startTestGateway(
      {},
      {
        engine: engineWith((inner) => ({
          subscribe: async (topic) => {
            await subscribed;
            await inner.subscribe(topic);
          },
        })),
      },
    );
    const pending = fetch(eventsUrl(gateway.url, 'attaching'));
    await waitFor(() => gateway.gateway.hub.connectionCount === 1, { what: 'the stream to start attaching' });
    const closing = gateway.close();
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(await response.text()).toMatch(/^retry: \d+\n\n$/);
    releaseSubscribe();
    await closing;
  });
});

describe('engine gap notices', () => {
  it('reset only connections that are behind the gap', async () => {
    const gateway = await startTestGateway();
    gateways.push(gateway);
    const topic = 'gap/behind';
    const [first] = await publishAll(gateway.url, topic, ['0']);
    const client = collect(eventsUrl(gateway.url, topic));
    await client.waitForOpen();
    const ids = await publishAll(gateway.url, topic, ['1', '2']);
    await client.waitForCount(2);

    // A gap that ends before what the client already has: it missed nothing, no reset.
    const [epoch, rest] = (first as string).split(':') as [string, string];
    const [ms, seq] = rest.split('-').map(Number) as [number, number];
    const behind: Position = { epoch, ms, seq };
    gateway.gateway.hub.onGap(topic, 'trimmed', behind);
    const [next] = await publishAll(gateway.url, topic, ['3']);
    await client.waitForCount(3);
    expect(client.events.map((event) => event.event)).toEqual(['message', 'message', 'message']);
    expect(client.events.map((event) => event.id)).toEqual([...ids, next]);
  });
});
