/**
 * The behaviour every engine must have, run against the embedded and the Redis engine alike
 * (memory-engine.test.ts, redis-engine.test.ts). Engines under test are fresh per test.
 */
import { comparePositions, type Position } from '@sse-gateway/publisher-sdk/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Engine, HistoryPage, Publication, PublishRequest, Retention } from '../src/engine/engine.js';

export interface EngineUnderTest {
  /** Not started yet: the suite starts it with its own sink. */
  readonly engine: Engine;
  /** Closes the engine and removes whatever it stored. */
  cleanup(): Promise<void>;
}

export type MakeEngine = (retention: Retention) => Promise<EngineUnderTest>;

const UNBOUNDED: Retention = { maxLength: 0, maxAgeMs: 0 };
export const EMPTY: Position = { epoch: '', ms: 0, seq: 0 };

/** Waits for a condition instead of sleeping: retries `check` until it stops throwing or the deadline passes. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 15_000, intervalMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() >= deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Everything the sink received, with helpers to look at one topic. */
export class Recorder {
  readonly received: Publication[] = [];
  readonly sink = (publication: Publication): void => {
    this.received.push(publication);
  };

  of(topic: string): Publication[] {
    return this.received.filter((publication) => publication.topic === topic);
  }

  dataOf(topic: string): string[] {
    return this.of(topic).map((publication) => publication.data);
  }
}

export function expectStrictlyIncreasing(positions: readonly Position[]): void {
  for (let index = 1; index < positions.length; index++) {
    const previous = positions[index - 1] as Position;
    const current = positions[index] as Position;
    expect(current.epoch).toBe(previous.epoch);
    expect(comparePositions(current, previous), `position ${index} must follow position ${index - 1}`).toBeGreaterThan(
      0,
    );
  }
}

export function events(topic: string, count: number, from = 0): PublishRequest[] {
  return Array.from({ length: count }, (_, index) => ({ topic, event: 'tick', data: `${topic}#${from + index}` }));
}

/** Reads every page after `after`, asserting each page is events (no reset). */
export async function readAll(engine: Engine, topic: string, after: Position, limit = 1000): Promise<Publication[]> {
  const all: Publication[] = [];
  let cursor = after;
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await engine.readAfter(topic, cursor, limit);
    if (page.kind !== 'events') throw new Error(`expected events, got a ${page.reason} reset`);
    all.push(...page.events);
    if (!page.more) return all;
    const last = page.events.at(-1);
    if (!last) throw new Error('a page with more=true must not be empty');
    cursor = last.position;
  }
  throw new Error('too many pages');
}

function expectReset(page: HistoryPage, reason: string, position: Position): void {
  expect(page).toEqual({ kind: 'reset', reason, position });
}

function samePosition(position: Position): Position {
  return { epoch: position.epoch, ms: position.ms, seq: position.seq };
}

export function runEngineContract(name: string, make: MakeEngine): void {
  describe(`engine contract: ${name}`, () => {
    let made: EngineUnderTest[] = [];

    async function startEngine(retention: Retention = UNBOUNDED): Promise<{ engine: Engine; recorder: Recorder }> {
      const underTest = await make(retention);
      made.push(underTest);
      const recorder = new Recorder();
      await underTest.engine.start(recorder.sink);
      return { engine: underTest.engine, recorder };
    }

    afterEach(async () => {
      const cleaning = made;
      made = [];
      await Promise.all(cleaning.map((underTest) => underTest.cleanup()));
    });

    it('assigns strictly increasing positions per topic', async () => {
      const { engine } = await startEngine();
      const positions: Position[] = [];
      for (const request of events('orders/1', 20)) positions.push(...(await engine.publish([request])));
      positions.push(...(await engine.publish(events('orders/1', 30, 20))));
      expect(positions).toHaveLength(50);
      expect(positions[0]?.epoch).not.toBe('');
      expectStrictlyIncreasing(positions);
    });

    it('pushes publications of subscribed topics to the sink in order, and none of other topics', async () => {
      const { engine, recorder } = await startEngine();
      await engine.subscribe('a');
      const published: Publication[] = [];
      for (let index = 0; index < 20; index++) {
        const requests: PublishRequest[] = [
          { topic: 'a', event: index % 2 ? 'tick' : 'message', data: `a#${index}\nline 2` },
          { topic: 'b', event: 'tick', data: `b#${index}` },
        ];
        const positions = await engine.publish(requests);
        published.push({ ...(requests[0] as PublishRequest), position: positions[0] as Position });
      }
      await eventually(() => expect(recorder.of('a')).toHaveLength(20));
      expect(recorder.of('a')).toEqual(published);
      expect(recorder.of('b')).toEqual([]);

      // After unsubscribing, 'a' stops; a marker on a newly subscribed topic proves the flow went on.
      await engine.unsubscribe('a');
      await engine.subscribe('c');
      await engine.publish(events('a', 3, 100));
      const [marker] = await engine.publish(events('c', 1));
      await eventually(() => expect(recorder.of('c').map((p) => p.position)).toEqual([marker]));
      expect(recorder.of('a')).toHaveLength(20);
      expect(recorder.of('b')).toEqual([]);
    });

    it('delivers exactly once after a quick subscribe / unsubscribe / subscribe', async () => {
      const { engine, recorder } = await startEngine();
      const first = engine.subscribe('flip');
      await engine.unsubscribe('flip');
      const second = engine.subscribe('flip');
      await Promise.all([first, second]);
      // And once more across event-loop turns, with the engine's batches in flight.
      await engine.unsubscribe('flip');
      await new Promise((resolve) => setImmediate(resolve));
      await engine.subscribe('flip');
      const positions = await engine.publish(events('flip', 5));
      await eventually(() => expect(recorder.of('flip').map((p) => p.position)).toEqual(positions));
      const [marker] = await engine.publish(events('flip', 1, 5));
      await eventually(() => expect(recorder.of('flip').at(-1)?.position).toEqual(marker));
      expect(recorder.of('flip').map((p) => p.position)).toEqual([...positions, marker]);
    });

    it('reports an empty head for an unknown topic and the last position otherwise', async () => {
      const { engine } = await startEngine();
      expect(await engine.head('nobody/here')).toEqual(EMPTY);
      await engine.publish(events('h', 3));
      const [last] = await engine.publish(events('h', 1, 3));
      expect(await engine.head('h')).toEqual(last);
      expect(await engine.head('nobody/here')).toEqual(EMPTY);
    });

    it('pages through the events after a position, each exactly once, in order', async () => {
      const { engine } = await startEngine();
      const positions = await engine.publish(events('p', 25));
      const start = positions[4] as Position;
      const seen: Publication[] = [];
      let cursor = start;
      let pages = 0;
      for (;;) {
        const page = await engine.readAfter('p', cursor, 7);
        if (page.kind !== 'events') throw new Error(`unexpected ${page.reason} reset`);
        expect(page.events.length).toBeLessThanOrEqual(7);
        seen.push(...page.events);
        pages++;
        if (!page.more) break;
        cursor = (page.events.at(-1) as Publication).position;
      }
      expect(pages).toBe(3);
      expect(seen.map((p) => p.position)).toEqual(positions.slice(5));
      expect(seen.map((p) => p.data)).toEqual(events('p', 20, 5).map((e) => e.data));
      expect(seen.every((p) => p.topic === 'p' && p.event === 'tick')).toBe(true);

      const last = positions.at(-1) as Position;
      expect(await engine.readAfter('p', last, 7)).toEqual({ kind: 'events', events: [], more: false });
    });

    it('reads everything from the empty-epoch origin, and nothing of an unknown topic', async () => {
      const { engine } = await startEngine();
      const positions = await engine.publish(events('o', 12));
      const all = await readAll(engine, 'o', EMPTY, 5);
      expect(all.map((p) => p.position)).toEqual(positions);
      expect(await engine.readAfter('unknown', EMPTY, 10)).toEqual({ kind: 'events', events: [], more: false });
    });

    it('answers a trimmed reset at the newest removed event once retention removed events after the cursor', async () => {
      const { engine } = await startEngine({ maxLength: 5, maxAgeMs: 0 });
      const positions = await engine.publish(events('t', 12));
      const newestRemoved = positions[6] as Position;
      expectReset(await engine.readAfter('t', positions[0] as Position, 100), 'trimmed', newestRemoved);
      expectReset(await engine.readAfter('t', positions[5] as Position, 100), 'trimmed', newestRemoved);
      expectReset(await engine.readAfter('t', EMPTY, 100), 'trimmed', newestRemoved);

      const rest = await readAll(engine, 't', newestRemoved, 2);
      expect(rest.map((p) => p.position)).toEqual(positions.slice(7));
      expect(rest.map((p) => p.data)).toEqual(events('t', 5, 7).map((e) => e.data));
      // A cursor still inside history is served normally.
      expect((await readAll(engine, 't', positions[8] as Position)).map((p) => p.position)).toEqual(positions.slice(9));
    });

    it('answers an ahead reset at the head for a cursor beyond history', async () => {
      const { engine } = await startEngine();
      const positions = await engine.publish(events('ahead', 3));
      const last = positions[2] as Position;
      expectReset(await engine.readAfter('ahead', { ...last, seq: last.seq + 1 }, 10), 'ahead', last);
      expectReset(await engine.readAfter('ahead', { ...last, ms: last.ms + 60_000 }, 10), 'ahead', last);
    });

    it('answers a stream-lost reset for a cursor from another epoch', async () => {
      const { engine } = await startEngine();
      const [first] = await engine.publish(events('lost', 3));
      const epoch = (first as Position).epoch;
      const foreign = { epoch: epoch === 'f0reign' ? 'f0reign2' : 'f0reign', ms: 1, seq: 0 };
      expectReset(await engine.readAfter('lost', foreign, 10), 'stream-lost', { epoch, ms: 0, seq: 0 });
      // Resuming from the reset position serves the whole new history.
      expect(await readAll(engine, 'lost', { epoch, ms: 0, seq: 0 })).toHaveLength(3);
      expectReset(await engine.readAfter('never-published', foreign, 10), 'stream-lost', EMPTY);
    });

    it('keeps per-topic order in a batch spanning several topics', async () => {
      const { engine, recorder } = await startEngine();
      const topics = ['x', 'y', 'z'];
      await Promise.all(topics.map((topic) => engine.subscribe(topic)));
      const batch: PublishRequest[] = [];
      for (let index = 0; index < 30; index++) {
        const topic = topics[index % 3] as string;
        batch.push({ topic, event: 'tick', data: `${topic}#${Math.floor(index / 3)}` });
      }
      const positions = await engine.publish(batch);
      expect(positions).toHaveLength(30);
      for (const topic of topics) {
        const mine = positions.filter((_, index) => batch[index]?.topic === topic);
        expectStrictlyIncreasing(mine);
        const stored = await readAll(engine, topic, EMPTY);
        expect(stored.map((p) => p.position)).toEqual(mine);
        expect(stored.map((p) => p.data)).toEqual(events(topic, 10).map((e) => e.data));
        await eventually(() => expect(recorder.of(topic).map((p) => samePosition(p.position))).toEqual(mine));
      }
    });

    it('stores a publish repeated with the same idempotency key once, answering the first position', async () => {
      const { engine, recorder } = await startEngine();
      await engine.subscribe('idem');
      const key = `key-${Math.random().toString(36).slice(2)}`;
      const [first] = await engine.publish([{ topic: 'idem', event: 'tick', data: 'a', idempotencyKey: key }]);
      const [again] = await engine.publish([{ topic: 'idem', event: 'tick', data: 'a', idempotencyKey: key }]);
      const [other] = await engine.publish([{ topic: 'idem', event: 'tick', data: 'b', idempotencyKey: `${key}-2` }]);
      expect(again).toEqual(first);
      expect(other).not.toEqual(first);
      expect((await readAll(engine, 'idem', EMPTY)).map((p) => p.data)).toEqual(['a', 'b']);
      await eventually(() => expect(recorder.dataOf('idem')).toEqual(['a', 'b']));
    });

    it('gives distinct positions to many concurrent publishes', async () => {
      const { engine, recorder } = await startEngine();
      await engine.subscribe('busy');
      const requests = Array.from({ length: 200 }, (_, index) => ({
        topic: index % 4 === 0 ? 'quiet' : 'busy',
        event: 'tick',
        data: `#${index}`,
      }));
      const results = await Promise.all(requests.map((request) => engine.publish([request])));
      const byTopic = new Map<string, Position[]>();
      results.forEach((positions, index) => {
        const topic = (requests[index] as PublishRequest).topic;
        byTopic.set(topic, [...(byTopic.get(topic) ?? []), positions[0] as Position]);
      });
      for (const [topic, positions] of byTopic) {
        const keys = new Set(positions.map((p) => `${p.epoch}:${p.ms}-${p.seq}`));
        expect(keys.size).toBe(positions.length);
        const sorted = [...positions].sort(comparePositions);
        const stored = await readAll(engine, topic, EMPTY);
        expect(stored.map((p) => p.position)).toEqual(sorted);
      }
      const busy = [...(byTopic.get('busy') ?? [])].sort(comparePositions);
      await eventually(() => expect(recorder.of('busy').map((p) => p.position)).toEqual(busy));
    });
  });
}
