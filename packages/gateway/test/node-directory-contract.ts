/**
 * The behaviour of every node directory, the cluster view (memory-engine.test.ts, redis-engine.test.ts,
 * redis-cluster.test.ts): nodes report, counts add up per topic, reports expire, a clean stop leaves at
 * once, and (Redis) a lost counts hash is rewritten whole at the next report.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { NodeDirectory, NodeInfo } from '../src/engine/node-directory.js';
import { eventually } from './engine-contract.js';

export interface DirectoryUnderTest {
  /** A directory as one node sees it; every call shares the same storage. */
  readonly directoryOfNode: () => NodeDirectory;
  /** Deletes a node's counts behind its back (a flush, an eviction), when the storage can lose them. */
  readonly loseCounts?: (nodeId: string) => Promise<void>;
  cleanup(): Promise<void>;
}

export function infoOf(id: string, connections: number, topTopics: Array<[string, number]> = []): NodeInfo {
  return {
    id,
    url: `http://127.0.0.1/${id}`,
    adminUrl: undefined,
    pid: 1,
    startedAt: Date.now() - 1000,
    reportedAt: Date.now(),
    draining: false,
    engineReady: true,
    connections,
    topics: topTopics.length,
    eventsDelivered: 0,
    eventsReceived: 0,
    eventsPublished: 0,
    topTopics,
  };
}

export function runNodeDirectoryContract(name: string, make: () => Promise<DirectoryUnderTest>): void {
  describe(`node directory contract: ${name}`, () => {
    let made: DirectoryUnderTest | undefined;
    afterEach(async () => {
      await made?.cleanup();
      made = undefined;
    });
    const suffix = () => Math.random().toString(36).slice(2, 8);

    it('lists reporting nodes and adds their counts up per topic, following changes', async () => {
      made = await make();
      const [a, b] = [made.directoryOfNode(), made.directoryOfNode()];
      const [idA, idB] = [`a-${suffix()}`, `b-${suffix()}`];
      await a.report(
        {
          info: infoOf(idA, 3),
          consumers: new Map([
            ['t/1', 2],
            ['t/2', 1],
          ]),
        },
        60_000,
      );
      await b.report({ info: infoOf(idB, 4), consumers: new Map([['t/1', 4]]) }, 60_000);
      const ids = (await a.nodes()).map((node) => node.id).filter((id) => id === idA || id === idB);
      expect(ids).toEqual([idA, idB].sort());
      expect(await b.consumers(['t/1', 't/2', 't/none'])).toMatchObject({
        't/1': { [idA]: 2, [idB]: 4 },
        't/2': { [idA]: 1 },
        't/none': {},
      });
      // Changed, removed and new topics: only differences are sent, the result is the same as a rewrite.
      await a.report(
        {
          info: infoOf(idA, 2),
          consumers: new Map([
            ['t/1', 1],
            ['t/3', 5],
          ]),
        },
        60_000,
      );
      const counts = await b.consumers(['t/1', 't/2', 't/3']);
      expect(counts['t/1']).toMatchObject({ [idA]: 1, [idB]: 4 });
      expect(counts['t/2']?.[idA]).toBeUndefined();
      expect(counts['t/3']).toMatchObject({ [idA]: 5 });
      expect((await b.nodes()).find((node) => node.id === idA)?.connections).toBe(2);
      // A node with no consumers left is still a node.
      await a.report({ info: infoOf(idA, 0), consumers: new Map() }, 60_000);
      expect((await b.consumers(['t/1', 't/3']))['t/3']?.[idA]).toBeUndefined();
      expect((await b.nodes()).some((node) => node.id === idA)).toBe(true);
    });

    it('drops a node whose report expired, and one that left, at once', async () => {
      made = await make();
      const [a, b] = [made.directoryOfNode(), made.directoryOfNode()];
      const [idA, idB] = [`a-${suffix()}`, `b-${suffix()}`];
      await a.report({ info: infoOf(idA, 1), consumers: new Map([['e/1', 1]]) }, 300);
      await b.report({ info: infoOf(idB, 1), consumers: new Map([['e/1', 1]]) }, 60_000);
      await eventually(async () => expect((await b.nodes()).some((node) => node.id === idA)).toBe(false), 15_000, 25);
      expect((await b.consumers(['e/1']))['e/1']).toEqual({ [idB]: 1 });
      await b.remove(idB);
      expect((await a.nodes()).some((node) => node.id === idB)).toBe(false);
      expect((await a.consumers(['e/1']))['e/1']).toEqual({});
    });

    it('rewrites counts whole when they were lost between two reports', async (context) => {
      made = await make();
      if (!made.loseCounts) {
        context.skip();
        return;
      }
      const a = made.directoryOfNode();
      const id = `a-${suffix()}`;
      await a.report(
        {
          info: infoOf(id, 3),
          consumers: new Map([
            ['l/1', 2],
            ['l/2', 1],
          ]),
        },
        60_000,
      );
      await made.loseCounts(id);
      // Only l/2 changed: a diff alone would leave l/1 missing.
      await a.report(
        {
          info: infoOf(id, 4),
          consumers: new Map([
            ['l/1', 2],
            ['l/2', 2],
          ]),
        },
        60_000,
      );
      expect(await a.consumers(['l/1', 'l/2'])).toEqual({ 'l/1': { [id]: 2 }, 'l/2': { [id]: 2 } });
    });
  });
}
