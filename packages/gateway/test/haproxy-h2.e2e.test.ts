/**
 * HTTP/2 through the load balancer: Node's http2 client talks h2 to HAProxy's TLS front end, which sends
 * each stream to a replica as its own HTTP/1.1 request (the local cluster's topology, real processes).
 * Fifty streams on one session get every event once and in order; a stream whose reader stops is cut off
 * as a slow consumer once HAProxy's and the kernel's buffers are full, while the other streams of the same
 * session keep flowing, and it resumes from history.
 */
import { existsSync } from 'node:fs';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, type LocalCluster, startLocalCluster } from '../src/cluster/local-cluster.js';
import { closeAllSessions, type H2Stream, openSession, openStream, waitForEvents } from './support/h2-client.js';
import { waitFor } from './support/wait.js';

const haproxy = findHaproxy();
const haveHaproxy = existsSync(haproxy);
if (!haveHaproxy) console.warn('haproxy h2 e2e skipped: haproxy is not installed (.ci/run installs it)');

const PREFIX = `haproxy-h2-e2e:${process.pid}:`;

describe.skipIf(!haveHaproxy)('HTTP/2 clients through HAProxy (h2 in front, HTTP/1.1 to the replicas)', () => {
  let cluster: LocalCluster;
  let publisher: Publisher;

  beforeAll(async () => {
    cluster = await startLocalCluster({
      gateways: 2,
      haproxyPath: haproxy,
      env: {
        LOG_LEVEL: 'warn',
        RETRY_MS: '300',
        MAX_BUFFERED_BYTES: String(256 * 1024),
        WRITE_TIMEOUT_MS: '60000',
        // HAProxy passes a departed client on only when it next writes to it: heartbeats reap them quickly.
        HEARTBEAT_MS: '1000',
        HISTORY_MAX_LENGTH: '100000',
        REDIS_PREFIX: PREFIX,
      },
    });
    publisher = createPublisher({ redis: cluster.redisUrl, prefix: PREFIX, maxLength: 100_000 });
  }, 120_000);

  afterEach(() => closeAllSessions());

  afterAll(async () => {
    await publisher?.close();
    await cluster?.stop();
  });

  const totalConnections = async () => {
    const counts = await Promise.all(
      cluster.nodes.map((node) =>
        fetch(`${node.adminUrl}/stats`)
          .then((response) => response.json() as Promise<{ connections: number }>)
          .then((stats) => stats.connections),
      ),
    );
    return counts.reduce((sum, count) => sum + count, 0);
  };
  const slowConsumerCuts = async () => {
    const texts = await Promise.all(
      cluster.nodes.map((node) => fetch(`${node.adminUrl}/metrics`).then((r) => r.text())),
    );
    return texts
      .flatMap((text) => text.split('\n'))
      .filter((line) => line.startsWith('sse_gateway_disconnects_total{reason="slow-consumer"}'))
      .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
  };
  const datas = (stream: H2Stream) => stream.events.map((event) => event.data.replace(/x+$/, ''));

  it('delivers every event once and in order to 50 streams on one session', async () => {
    const session = await openSession(cluster.tlsUrl);
    const topics = ['lb-h2/a', 'lb-h2/b', 'lb-h2/c', 'lb-h2/d', 'lb-h2/e'];
    const streams = await Promise.all(
      Array.from({ length: 50 }, (_, n) => openStream(session, `/events?topic=${topics[n % topics.length]}`)),
    );
    expect(streams.every((stream) => stream.status === 200)).toBe(true);
    await waitFor(async () => (await totalConnections()) === 50, { what: '50 streams on the replicas' });
    for (let n = 0; n < 30; n++) {
      await publisher.sendMany(topics.map((topic) => ({ topic, event: 'message', data: `${topic}#${n}` })));
    }
    await waitForEvents(streams, 30, '30 events on every stream', 30_000);
    streams.forEach((stream, n) => {
      const topic = topics[n % topics.length] as string;
      expect(datas(stream), `stream ${n}`).toEqual(Array.from({ length: 30 }, (_, i) => `${topic}#${i}`));
    });
    session.destroy();
    await waitFor(async () => (await totalConnections()) === 0, { what: 'the streams to leave', timeoutMs: 30_000 });
  }, 90_000);

  it('cuts off only the paused stream; the others on the session keep flowing; it resumes from history', async () => {
    const topic = 'lb-h2/slow';
    const session = await openSession(cluster.tlsUrl);
    const stalled = await openStream(session, `/events?topic=${topic}`);
    const flowing = await Promise.all([0, 1, 2].map(() => openStream(session, `/events?topic=${topic}`)));
    await waitFor(async () => (await totalConnections()) === 4, { what: '4 streams on the replicas' });
    const payload = 'x'.repeat(16 * 1024);
    let sent = 0;
    // Batches of 20 events of 16 KiB at the pace of the reading streams, until the paused one is cut off:
    // HAProxy's buffers and both sockets' kernel buffers fill first, then the replica's 256 KiB budget.
    for (let batch = 0; (await slowConsumerCuts()) === 0; batch++) {
      if (batch > 150) throw new Error(`the paused stream was never cut off (${sent} events sent)`);
      const events = Array.from({ length: 20 }, (_, i) => ({
        topic,
        event: 'message',
        data: `${topic}#${sent + i}${payload}`,
      }));
      await publisher.sendMany(events);
      sent += events.length;
      await waitForEvents(flowing, sent, `${sent} events on the flowing streams`, 30_000);
      if (batch === 0) {
        await waitForEvents([stalled], 20, 'the first batch on the stream about to pause');
        stalled.stream.pause();
      }
    }
    const expected = Array.from({ length: sent }, (_, i) => `${topic}#${i}`);
    for (const stream of flowing) {
      expect(stream.ended).toBeUndefined();
      expect(datas(stream)).toEqual(expected);
    }
    // HAProxy ends the client's stream once the replica cut it off; the paused reader sees that on resuming.
    stalled.stream.resume();
    await stalled.finished;
    expect(await slowConsumerCuts()).toBe(1);
    const lastSeen = stalled.events.at(-1)?.id as string;
    const resumed = await openStream(session, `/events?topic=${topic}`, { 'last-event-id': lastSeen });
    await waitForEvents([resumed], sent - stalled.events.length, 'the rest from history', 30_000);
    expect([...datas(stalled), ...datas(resumed)]).toEqual(expected);
  }, 120_000);
});
