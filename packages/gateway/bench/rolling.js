// Rolling restart under load, what operators do every deploy: `pnpm cluster`'s topology (HAProxy, 3 gateway
// processes, redis-server; src/cluster/local-cluster.ts), clients through HAProxy that reconnect as
// EventSource does (after the server's retry hint, with Last-Event-ID), live events at a steady rate.
// Each node in turn gets SIGTERM (drain over DRAIN_MS), starts again and must be healthy in HAProxy before
// the next. Reports lost and duplicated events per client, reconnect times, refused reconnects and the
// busiest second of reconnects against MAX_NEW_CONNECTIONS_PER_SECOND.
import net from 'node:net';
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { startLocalCluster } from '../dist/cluster/local-cluster.js';
import { percentile } from './harness.js';
import { eventStreamLines } from './http-stream.js';

const TOPICS = ['rolling/a', 'rolling/b', 'rolling/c'];
const WARM_UP_MS = 2000;
const SETTLE_MS = 1000;
const CATCH_UP_MS = 20_000;
/** Per node, the gateway's default: a rolling restart must stay under it without any 503. */
const MAX_NEW_CONNECTIONS_PER_SECOND = 10_000;

/** options: { conns, rate, drainMs, retryMs } */
export async function runRolling({ conns, rate, drainMs, retryMs }) {
  const prefix = `rolling:${process.pid}:`;
  const cluster = await startLocalCluster({
    gateways: 3,
    env: {
      LOG_LEVEL: 'warn',
      DRAIN_MS: String(drainMs),
      RETRY_MS: String(retryMs),
      RETRY_JITTER: '0.5', // the gateway's default
      REDIS_PREFIX: prefix,
      HISTORY_MAX_LENGTH: '10000',
      MAX_CONNECTIONS: '50000',
      MAX_CONNECTIONS_PER_CLIENT: '50000', // every client comes from 127.0.0.1 through HAProxy
      MAX_NEW_CONNECTIONS_PER_SECOND: String(MAX_NEW_CONNECTIONS_PER_SECOND),
    },
  });
  const port = Number(new URL(cluster.url).port);
  const publisher = createPublisher({ redis: cluster.redisUrl, prefix, maxLength: 10_000, maxAgeMs: 0 });
  const clients = [];
  const sent = new Map(TOPICS.map((topic) => [topic, []]));
  let publishing;
  try {
    for (let i = 0; i < conns; i += 200) {
      const batch = [];
      for (let j = i; j < Math.min(conns, i + 200); j++) batch.push(rollingClient(port, TOPICS[j % TOPICS.length]));
      clients.push(...(await Promise.all(batch)));
    }
    let stop = false;
    publishing = (async () => {
      for (let tick = 0; !stop; tick++) {
        const topic = TOPICS[tick % TOPICS.length];
        const id = await publisher.send('message', String(tick), { topic });
        sent.get(topic).push(id);
        await new Promise((resolve) => setTimeout(resolve, 1000 / rate));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, WARM_UP_MS));

    const restarts = [];
    for (const node of cluster.nodes) {
      const startedAt = performance.now();
      await node.kill('SIGTERM');
      const drainedMs = performance.now() - startedAt;
      await node.restart();
      await cluster.waitForHealthyBackends(3);
      restarts.push({ node: node.name, drainedMs, backMs: performance.now() - startedAt });
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    }
    stop = true;
    await publishing;
    const deadline = performance.now() + CATCH_UP_MS;
    const caughtUp = (client) => client.ids.at(-1) === sent.get(client.topic).at(-1);
    while (!clients.every(caughtUp) && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return summarise(clients, sent, restarts, conns, rate);
  } finally {
    for (const client of clients) client.close();
    await publisher.close();
    await cluster.stop();
  }
}

function summarise(clients, sent, restarts, conns, rate) {
  let lost = 0;
  let dups = 0;
  let refused = 0;
  const reconnectMs = [];
  const afterHintMs = [];
  let retried = 0;
  const perSecond = new Map();
  for (const client of clients) {
    const expected = sent.get(client.topic);
    const seen = new Set(client.ids);
    dups += client.ids.length - seen.size;
    // Everything published after the client's first stream opened (it opened before publishing began).
    lost += expected.filter((id) => !seen.has(id)).length;
    refused += client.refused;
    reconnectMs.push(...client.reconnectMs);
    afterHintMs.push(...client.afterHintMs);
    retried += client.attempts.filter((n) => n > 1).length;
    for (const at of client.connectAt)
      perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
  }
  reconnectMs.sort((a, b) => a - b);
  afterHintMs.sort((a, b) => a - b);
  return {
    conns,
    rate,
    events: [...sent.values()].reduce((sum, list) => sum + list.length, 0),
    lost,
    dups,
    refused,
    reconnects: reconnectMs.length,
    reconnectP50: percentile(reconnectMs, 50),
    reconnectP99: percentile(reconnectMs, 99),
    afterHintP50: percentile(afterHintMs, 50),
    afterHintP99: percentile(afterHintMs, 99),
    retried,
    busiestSecond: Math.max(0, ...perSecond.values()),
    limit: MAX_NEW_CONNECTIONS_PER_SECOND,
    restarts,
    notCaughtUp: clients.filter((client) => client.ids.at(-1) !== sent.get(client.topic).at(-1)).length,
  };
}

/**
 * A client like EventSource: reconnects when its stream ends, after the last `retry:` hint, with
 * Last-Event-ID; records ids, reconnect times (from its stream's end to the next event it receives, so
 * a draining node's retry-only answer does not count as back) and refused answers. Resolves once the
 * first stream is open.
 */
function rollingClient(port, topic) {
  const client = {
    topic,
    ids: [],
    reconnectMs: [],
    /** Per reconnect: the time beyond the first hint waited (back minus that hint), and connects it took. */
    afterHintMs: [],
    attempts: [],
    connectAt: [],
    refused: 0,
    closed: false,
    socket: undefined,
    close() {
      client.closed = true;
      client.socket?.destroy();
    },
  };
  let retryMs = 1000;
  let endedAt;
  let hintAtEnd = 0;
  let attemptsSinceEnd = 0;
  let opened = false;
  return new Promise((resolve, reject) => {
    const open = () => {
      const socket = net.connect(port, '127.0.0.1');
      client.socket = socket;
      client.connectAt.push(performance.now());
      const resume = client.ids.length > 0 ? `Last-Event-ID: ${client.ids.at(-1)}\r\n` : '';
      socket.once('connect', () => {
        socket.write(
          `GET /events?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
            `Accept: text/event-stream\r\n${resume}\r\n`,
        );
      });
      socket.on('error', () => {});
      socket.once('close', () => {
        if (client.closed) return;
        if (!opened) {
          reject(new Error(`rolling client on ${topic}: first stream refused`));
          return;
        }
        if (endedAt === undefined) {
          endedAt = performance.now();
          hintAtEnd = retryMs;
          attemptsSinceEnd = 0;
        }
        attemptsSinceEnd++;
        setTimeout(open, retryMs);
      });
      const onLine = (line) => {
        if (line.startsWith('id: ')) {
          client.ids.push(line.slice(4));
          if (endedAt !== undefined) {
            const backMs = performance.now() - endedAt;
            client.reconnectMs.push(backMs);
            client.afterHintMs.push(backMs - hintAtEnd);
            client.attempts.push(attemptsSinceEnd);
          }
          endedAt = undefined;
        } else if (line.startsWith('retry: ')) retryMs = Number(line.slice(7));
      };
      const onHead = (status) => {
        if (status !== 200) {
          client.refused++;
          socket.destroy();
          return;
        }
        if (!opened) {
          opened = true;
          resolve(client);
        }
      };
      socket.on('data', eventStreamLines(onHead, onLine));
    };
    open();
  });
}
