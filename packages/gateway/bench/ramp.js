// The bounded-latency ramp: what users feel, as opposed to the closed-loop saturated phase in fanout.js.
// Events are published open-loop at a fixed rate for a few seconds per step, the rate growing by a factor
// each step; a step holds when every client got every event, the newest event reached its last sampled
// client within LAST_LATE_MS after the step, and the p99 publish->receive latency stayed within P99_MS.
// The result is the highest rate that held, as deliveries/s (rate x streams).
import { createPublisher } from '@sse-gateway/publisher-sdk';
import { freePort, percentile, startServer, stop } from './harness.js';
import { hasNchan, nchanPublisher, startNchan, stopNchan } from './nchan.js';
import { connect } from './sse-client.js';

export const LAST_LATE_MS = 500;
export const P99_MS = 1000;
const SAMPLE_EVERY = 20;
const TOPIC = 'ramp';

/** options: { kinds, conns, startRate, factor, stepSeconds, maxSteps, eventBytes, prefix, redisUrl } */
export async function runRamp(options) {
  const results = [];
  for (const kind of options.kinds) {
    if (kind === 'nchan' && !hasNchan) continue;
    results.push(await rampOne(kind, options));
  }
  return results;
}

async function rampOne(kind, { conns, startRate, factor, stepSeconds, maxSteps, eventBytes, prefix, redisUrl }) {
  const { server, port } =
    kind === 'nchan'
      ? await startNchan({ redisUrl, port: await freePort() })
      : await startServer(kind, { redisUrl, prefix });
  const stats = { sentAt: new Map(), latencies: [], measuring: false };
  const clients = [];
  const publisher =
    kind === 'nchan'
      ? nchanPublisher(port, TOPIC)
      : createPublisher({ redis: redisUrl, prefix, topic: TOPIC, maxLength: 1000, maxAgeMs: 0 });
  try {
    for (let i = 0; i < conns; i += 200) {
      const batch = [];
      for (let j = i; j < Math.min(conns, i + 200); j++)
        batch.push(connect(port, TOPIC, j % SAMPLE_EVERY === 0, stats));
      clients.push(...(await Promise.all(batch)));
    }
    const pad = 'x'.repeat(Math.max(0, eventBytes - 20));
    let seq = 0;
    const send = () => {
      const s = seq++;
      stats.sentAt.set(s, performance.now());
      return publisher.sendMany([{ event: 'tick', data: `${s},${pad}` }]);
    };
    await send();
    await until(() => clients.every((c) => c.frames >= 1), 30_000);

    const steps = [];
    let rate = startRate;
    for (let step = 0; step < maxSteps; step++) {
      stats.latencies = [];
      stats.measuring = true;
      const firstSeq = seq;
      const startedAt = performance.now();
      const count = Math.round(rate * stepSeconds);
      // Open loop: each event at its scheduled time, not when the previous one was acknowledged.
      const sends = [];
      for (let n = 0; n < count; n++) {
        const due = startedAt + (n * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
        sends.push(send());
      }
      await Promise.all(sends);
      const lastSeq = seq - 1;
      const sampled = clients.filter((_, index) => index % SAMPLE_EVERY === 0);
      const endedAt = performance.now();
      const reached = await until(() => sampled.every((c) => c.lastSeq >= lastSeq), LAST_LATE_MS);
      const lastLateMs = performance.now() - endedAt;
      // Every client must have every event (given a moment more, so a slow step still counts correctly).
      await until(() => clients.every((c) => c.frames >= seq), 10_000);
      stats.measuring = false;
      const complete = clients.every((c) => c.frames === seq);
      const sorted = stats.latencies.sort((a, b) => a - b);
      const p99 = percentile(sorted, 99);
      const held = reached && complete && p99 <= P99_MS;
      steps.push({ rate, deliveries: rate * conns, p99, lastLateMs, held, events: lastSeq - firstSeq + 1 });
      if (!held) break;
      rate = Math.round(rate * factor);
    }
    const best = steps.filter((s) => s.held).at(-1);
    return { kind, conns, steps, best };
  } finally {
    for (const client of clients) client.close();
    await publisher.close();
    await (kind === 'nchan' ? stopNchan(server) : stop(server));
  }
}

async function until(predicate, ms) {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}
