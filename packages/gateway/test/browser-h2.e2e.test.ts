/**
 * Twelve EventSources in one page of headless Chromium (Debian's, driven by playwright-core), through the
 * local cluster's HAProxy. Over HTTPS with HTTP/2 (the generated development certificate, accepted with
 * --ignore-certificate-errors) all twelve receive events on one connection; over HTTP/1.1 the same page
 * stalls at six, the browser's per-origin connection limit. After a kill -9 of a replica every stream
 * resumes through HAProxy with Last-Event-ID and gets each event exactly once.
 */
import { existsSync } from 'node:fs';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { CHROMIUM, haveChromium, launchChromium } from './support/chromium.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const runnable = haveChromium && existsSync(haproxy);
if (!runnable) {
  console.warn(
    `h2 browser e2e skipped: needs ${CHROMIUM} (apt-get install chromium) and haproxy; .ci/run installs both`,
  );
}

const PREFIX = `browser-h2-e2e:${process.pid}:`;
const STREAMS = 12;
const topicOf = (n: number) => `h2/browser/${n}`;

/** Runs in the page: opens one EventSource per topic and records what each receives. */
function openStreams(count: number): void {
  const state = { received: [] as string[][], open: [] as boolean[], opens: [] as number[] };
  (globalThis as unknown as { sse: typeof state }).sse = state;
  for (let n = 0; n < count; n++) {
    state.received[n] = [];
    state.open[n] = false;
    state.opens[n] = 0;
    const source = new EventSource(`/events?topic=h2/browser/${n}`);
    source.onopen = () => {
      state.open[n] = true;
      state.opens[n] = (state.opens[n] ?? 0) + 1;
    };
    source.onerror = () => {
      state.open[n] = false;
    };
    source.onmessage = (event) => state.received[n]?.push(event.data);
  }
}

interface PageState {
  received: string[][];
  open: boolean[];
  opens: number[];
}
const stateOf = (page: Page) => page.evaluate(() => (globalThis as unknown as { sse: PageState }).sse);

describe.skipIf(!runnable)('12 EventSources in one page: HTTP/2 through HAProxy vs HTTP/1.1', () => {
  let cluster: LocalCluster;
  let browser: Browser;
  let publisher: Publisher;

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 2,
      haproxyPath: haproxy,
      // HAProxy passes a departed client on only when it next writes to it: the heartbeat is what lets the
      // replicas notice the first page's streams are gone.
      env: { LOG_LEVEL: 'warn', RETRY_MS: '300', RETRY_JITTER: '0.2', HEARTBEAT_MS: '1000', REDIS_PREFIX: PREFIX },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: PREFIX });
    browser = await launchChromium(['--ignore-certificate-errors']);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await publisher?.close();
    await cluster?.stop();
  });

  async function publishRound(label: string): Promise<string[]> {
    const sent: string[] = [];
    for (let n = 0; n < STREAMS; n++) {
      const data = `${label}-${n}`;
      await publisher.send('message', data, { topic: topicOf(n) });
      sent.push(data);
    }
    return sent;
  }

  it('over HTTP/1.1 the page stalls at six open streams', async () => {
    // A context of its own: closing it ends its connections (a closed page leaves them to the socket pool).
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      await page.goto(`${cluster.url}/healthz`);
      await page.evaluate(openStreams, STREAMS);
      await waitFor(async () => (await stateOf(page)).open.filter(Boolean).length === 6, { what: 'six open streams' });
      await publishRound('h1');
      await waitFor(async () => (await stateOf(page)).received.filter((list) => list.length > 0).length === 6, {
        what: 'six streams with an event',
      });
      // The other six are still waiting for a connection: the browser holds their requests.
      const state = await stateOf(page);
      expect(state.open.filter(Boolean)).toHaveLength(6);
      expect(state.received.filter((list) => list.length === 0)).toHaveLength(6);
    } finally {
      await context.close();
    }
  }, 60_000);

  it('over HTTP/2 all twelve receive on one connection, and resume after a kill -9 of a replica', async () => {
    // A context of its own: closing it ends its connections (a closed page leaves them to the socket pool).
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      await page.goto(`${cluster.tlsUrl}/healthz`);
      const protocol = await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol");
      expect(protocol).toBe('h2');
      await page.evaluate(openStreams, STREAMS);
      await waitFor(async () => (await stateOf(page)).open.every(Boolean), { what: 'twelve open streams' });
      const first = await publishRound('first');
      await waitFor(async () => (await stateOf(page)).received.every((list, n) => list.includes(first[n] as string)), {
        what: 'an event on every stream',
      });

      // HAProxy spreads the twelve streams over both replicas; kill one of those holding some. (Streams of
      // the previous page may still be on their way out, until their next heartbeat.)
      const connectionCounts = () =>
        Promise.all(
          cluster.nodes.map((node) =>
            fetch(`${node.adminUrl}/stats`)
              .then((response) => response.json() as Promise<{ connections: number }>)
              .then((stats) => stats.connections),
          ),
        );
      const counts = await waitFor(
        async () => {
          const now = await connectionCounts();
          return now.reduce((sum, count) => sum + count, 0) === STREAMS ? now : undefined;
        },
        { what: 'the twelve streams to be all the replicas hold' },
      );
      const victim = cluster.nodes[counts.findIndex((count) => count > 0)];
      if (!victim) throw new Error(`no replica holds a stream: ${counts.join(',')}`);
      await victim.kill('SIGKILL');

      const during: string[][] = [];
      for (let round = 0; round < 5; round++) during.push(await publishRound(`during-${round}`));
      const expected = (n: number) => [first[n], ...during.map((round) => round[n])];
      await waitFor(
        async () =>
          (await stateOf(page)).received.every((list, n) => expected(n).every((data) => list.includes(data as string))),
        { what: 'every stream to get the events published after the kill', timeoutMs: 30_000 },
      );
      const state = await stateOf(page);
      for (const [n, list] of state.received.entries()) expect(list, `stream ${n}`).toEqual(expected(n));
      // Streams that were on the killed replica reconnected (a second open); the others stayed.
      expect(state.opens.filter((opens) => opens > 1)).toHaveLength(counts[cluster.nodes.indexOf(victim)] as number);
      await victim.restart();
    } finally {
      await context.close();
    }
  }, 90_000);
});
