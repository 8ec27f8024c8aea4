/**
 * The live dashboard in a real browser (Debian's headless Chromium, playwright-core), served by a node's
 * admin listener in `pnpm cluster`'s topology (HAProxy, 3 gateways, Redis). While `eventsource` clients
 * connect and leave through the balancer and events flow, the numbers on the page must match what /stats
 * answers. UPDATE_SCREENSHOT=1 writes the page to docs/dashboard.png (the README's picture).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { EventSource } from 'eventsource';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { CHROMIUM, haveChromium, launchChromium } from './support/chromium.js';
import { REPO_ROOT } from './support/gateway-process.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const runnable = haveChromium && existsSync(haproxy);
if (!runnable) {
  console.warn(`dashboard browser e2e skipped: needs ${CHROMIUM} (apt-get install chromium) and haproxy`);
}

const PREFIX = `dashboard-e2e:${process.pid}:`;
const TOPICS = ['orders/eu', 'orders/us', 'prices/btc', 'chat/lobby'];

interface ClusterStats {
  readonly cluster: {
    readonly nodes: ReadonlyArray<{ readonly id: string; readonly connections: number }>;
    readonly connections: number;
    readonly busiestTopics: ReadonlyArray<{ readonly topic: string; readonly consumers: number }>;
  };
}

describe.skipIf(!runnable)('dashboard in headless Chromium', () => {
  let cluster: LocalCluster;
  let browser: Browser;
  let page: Page;
  let publisher: Publisher;
  const sources: EventSource[] = [];
  let ticking: NodeJS.Timeout | undefined;

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 3,
      haproxyPath: haproxy,
      env: { LOG_LEVEL: 'warn', NODE_REPORT_MS: '250', HEARTBEAT_MS: '500', REDIS_PREFIX: PREFIX },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: PREFIX });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  }, 120_000);

  afterAll(async () => {
    if (ticking) clearInterval(ticking);
    for (const source of sources) source.close();
    await browser?.close();
    await publisher?.close();
    await cluster?.stop();
  });

  const adminUrl = () => cluster.nodes[0]?.adminUrl ?? '';
  const clusterStats = async () => (await (await fetch(`${adminUrl()}/stats`)).json()) as ClusterStats;
  const shown = async (id: string) => (await page.textContent(`#${id}`))?.trim() ?? '';
  /** Waits until the page and /stats agree on the cluster's connections, and both say `expected`. */
  const pageMatchesStats = (expected: number) =>
    waitFor(
      async () => {
        const stats = await clusterStats();
        const onPage = await shown('total-connections');
        return stats.cluster.connections === expected && onPage === String(expected) ? stats : undefined;
      },
      { timeoutMs: 30_000, what: `the dashboard and /stats both at ${expected} connections` },
    );
  const open = (topic: string, count: number) => {
    for (let i = 0; i < count; i++) sources.push(new EventSource(`${cluster.url}/events?topic=${topic}`));
  };

  it('shows the nodes, connections and busiest topics that /stats reports, live', async () => {
    await page.goto(`${adminUrl()}/dashboard`);
    await page.waitForSelector('#status:text-is("live")', { timeout: 30_000 });
    await waitFor(async () => (await shown('total-nodes')) === '3', { what: 'three nodes on the page' });

    open('orders/eu', 24);
    open('orders/us', 12);
    open('prices/btc', 8);
    open('chat/lobby', 4);
    await waitFor(() => sources.every((source) => source.readyState === EventSource.OPEN), {
      timeoutMs: 30_000,
      what: '48 streams open',
    });
    // Workers publish straight to Redis (the SDK); one service publishes over HTTP through the balancer.
    let round = 0;
    ticking = setInterval(() => {
      void publisher.sendMany(TOPICS.map((topic) => ({ topic, event: 'tick', data: String(Date.now()) })));
      if (round++ % 4 === 0) {
        void fetch(`${cluster.url}/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ topic: 'chat/lobby', event: 'say', data: 'hi' }),
        }).then((response) => response.body?.cancel());
      }
    }, 50);
    const stats = await pageMatchesStats(48);
    const rows = await page.$$eval('#topics tr', (trs) =>
      trs.map((tr) => [...tr.children].map((td) => td.textContent)),
    );
    expect(rows).toEqual(stats.cluster.busiestTopics.map((t) => [t.topic, String(t.consumers)]));
    expect(rows[0]).toEqual(['orders/eu', '24']);
    const nodeRows = await page.$$eval('#nodes tr', (trs) => trs.map((tr) => tr.children[0]?.textContent));
    expect(nodeRows).toEqual(['gateway1', 'gateway2', 'gateway3']);
    // Deliveries flow: 48 streams x 20 events/s of one topic each.
    await waitFor(async () => Number((await shown('deliveries-rate')).replace(/\D/g, '')) > 100, {
      timeoutMs: 30_000,
      what: 'a deliveries rate on the page',
    });
    await waitFor(async () => Number((await shown('received-rate')).replace(/\D/g, '')) > 0, {
      timeoutMs: 30_000,
      what: 'an events-in rate on the page',
    });
    await waitFor(async () => Number((await shown('publishes-rate')).replace(/\D/g, '')) > 0, {
      timeoutMs: 30_000,
      what: 'an HTTP publish rate on the page',
    });
    expect(await shown('redis-health')).toBe('ready');

    for (const source of sources.splice(0, 20)) source.close();
    await pageMatchesStats(28);

    if (process.env.UPDATE_SCREENSHOT === '1') {
      // Let the charts fill a little before the picture.
      await new Promise((resolve) => setTimeout(resolve, 15_000));
      await page.screenshot({ path: join(REPO_ROOT, 'docs', 'dashboard.png'), fullPage: true });
    }
  }, 120_000);
});
