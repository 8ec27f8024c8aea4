/**
 * The demo page in a real browser (Debian's headless Chromium driven by playwright-core) through the
 * local cluster's load balancer: it connects, publishes from the page, and when the replica holding its
 * stream is killed, the browser's own EventSource reconnects through HAProxy to another replica and
 * resumes with Last-Event-ID: every event published meanwhile shows up once.
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
    `demo browser e2e skipped: needs ${CHROMIUM} (apt-get install chromium) and haproxy; .ci/run installs both`,
  );
}

const PREFIX = `demo-e2e:${process.pid}:`;
const TOPIC = 'demo/browser';

describe.skipIf(!runnable)('demo page in headless Chromium through the load balancer', () => {
  let cluster: LocalCluster;
  let browser: Browser;
  let page: Page;
  let publisher: Publisher;

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 2,
      haproxyPath: haproxy,
      env: { LOG_LEVEL: 'warn', RETRY_MS: '300', RETRY_JITTER: '0.2', REDIS_PREFIX: PREFIX },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: PREFIX, topic: TOPIC });
    browser = await launchChromium();
    page = await browser.newPage();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await publisher?.close();
    await cluster?.stop();
  });

  const logged = () =>
    page.$$eval('#log li', (items) => items.map((item) => ({ id: item.dataset.id, text: item.textContent ?? '' })));

  it('connects, publishes from the page, and resumes on another replica after a kill -9', async () => {
    await page.goto(`${cluster.url}/demo`);
    await page.fill('#topics', TOPIC);
    await page.click('#connect');
    // Polled from the test (a string predicate would be an eval, which the page's CSP forbids).
    await page.waitForSelector('#status:text-is("open")', {
      timeout: 30_000,
    });

    // Publish from the page itself (dev mode: no auth keys configured).
    await page.fill('#pub-topic', TOPIC);
    await page.fill('#pub-data', 'hello from the page');
    await page.click('#publish');
    await waitFor(async () => (await logged()).some((item) => item.text.includes('hello from the page')), {
      what: 'the page to show its own event',
    });

    // Kill the replica that holds the browser's stream.
    const counts = await Promise.all(
      cluster.nodes.map((node) =>
        fetch(`${node.adminUrl}/stats`)
          .then((response) => response.json() as Promise<{ connections: number }>)
          .then((stats) => stats.connections),
      ),
    );
    const holder = cluster.nodes[counts.findIndex((count) => count > 0)];
    if (!holder) throw new Error(`no replica holds the browser's stream: ${counts.join(',')}`);
    await holder.kill('SIGKILL');

    // Publish while the browser is disconnected or reconnecting: it must get all of them, once.
    const sent: string[] = [];
    for (let i = 0; i < 20; i++) {
      const data = `missed-${i}`;
      await publisher.send('message', data);
      sent.push(data);
    }
    await waitFor(
      async () => {
        const texts = (await logged()).map((item) => item.text);
        return sent.every((data) => texts.some((text) => text.endsWith(` ${data}`)));
      },
      { timeoutMs: 30_000, what: 'the browser to show every event published during the failover' },
    );
    const texts = (await logged()).map((item) => item.text);
    for (const data of sent) expect(texts.filter((text) => text.endsWith(` ${data}`))).toHaveLength(1);
    expect(await page.textContent('#status')).toBe('open');
    // The stream now lives on the surviving replica: the browser really moved.
    const survivor = cluster.nodes.find((node) => node !== holder);
    const stats = (await fetch(`${survivor?.adminUrl}/stats`).then((response) => response.json())) as {
      connections: number;
    };
    expect(stats.connections).toBe(1);
    await page.screenshot({ path: `${process.env.TMPDIR ?? '/tmp'}/sse-gateway-demo.png` });
  }, 120_000);
});
