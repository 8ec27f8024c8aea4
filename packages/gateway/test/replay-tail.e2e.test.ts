/**
 * Resumes served from the node's own tail of a topic: once one history read has reached the end of the
 * stream while the topic is subscribed, that run plus the live events after it is contiguous, so a later
 * resume from inside it needs no read at all, and still gets exactly the events after its cursor.
 */
import { afterEach, describe, expect, it } from 'vitest';
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

/** The embedded engine, counting history reads. */
function countingEngine() {
  const counter = { reads: 0 };
  const make = (config: { historyMaxLength: number; historyMaxAgeMs: number }): Engine => {
    const inner = new MemoryEngine({ maxLength: config.historyMaxLength, maxAgeMs: config.historyMaxAgeMs });
    return new Proxy(inner, {
      get(target, property) {
        if (property === 'readAfter') {
          return (...args: Parameters<Engine['readAfter']>) => {
            counter.reads++;
            return target.readAfter(...args);
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  return { counter, make };
}

let gateway: TestGateway | undefined;
afterEach(async () => {
  closeAllCollectors();
  await gateway?.close();
  gateway = undefined;
});

describe('resume from the node tail', () => {
  it('serves a resume inside the tail without a read, exactly the events after the cursor', async () => {
    const { counter, make } = countingEngine();
    gateway = await startTestGateway({}, { engine: make });
    const url = eventsUrl(gateway.url, 'tail/a');
    const watcher = collect(url);
    await waitFor(() => watcher.opens === 1, { what: 'the first stream open' });
    const first = await publishAll(
      gateway.url,
      'tail/a',
      Array.from({ length: 30 }, (_, n) => `e${n}`),
    );
    await waitFor(() => watcher.events.length === 30, { what: '30 live events' });

    // One read seeds the tail: a resume from event 10 reads history once, up to the end of the stream.
    const seeding = collect(url, { lastEventId: first[9] });
    await waitFor(() => seeding.events.length === 20, { what: 'the seeding resume' });
    expect(counter.reads).toBe(1);

    const more = await publishAll(
      gateway.url,
      'tail/a',
      Array.from({ length: 10 }, (_, n) => `e${30 + n}`),
    );
    await waitFor(() => watcher.events.length === 40, { what: '40 live events' });

    // Inside the tail (its base, one of its events, its newest): no read, exactly the events after.
    const resumes = [first[9], first[19], more[9]].map((id) => ({ id, client: collect(url, { lastEventId: id }) }));
    await waitFor(() => resumes.every(({ client }) => client.opens === 1), { what: 'the resumes open' });
    const all = [...first, ...more];
    const after = (id: string | undefined) => all.slice(all.indexOf(id as string) + 1);
    for (const { id, client } of resumes) {
      await waitFor(() => client.events.length >= after(id).length, { what: `the events after ${id}` });
    }
    const last = await publishAll(gateway.url, 'tail/a', ['e40']);
    for (const { id, client } of resumes) {
      await waitFor(() => client.events.length === after(id).length + 1, { what: 'the live event too' });
      expect(client.events.map((event) => event.id)).toEqual([...after(id), ...last]);
    }
    expect(counter.reads).toBe(1);

    // Before the tail's base: read from history as before.
    const older = collect(url, { lastEventId: first[4] });
    await waitFor(() => older.events.length === 36, { what: 'a resume from before the tail' });
    expect(older.events.map((event) => event.id)).toEqual([...all.slice(5), ...last]);
    expect(counter.reads).toBe(2);
  });
});
