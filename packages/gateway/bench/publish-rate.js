// SDK publish rate, against redis-benchmark running the SDK's own publish script (EVALSHA, pipelined) on the
// same Redis in the same run: the ratio is what the SDK (validation, ioredis, one promise per batch) costs
// over the bare script. Both publishers run pinned to CPU 0, one after the other, alternating over several
// rounds so that drift on a shared machine hits both alike; Redis stays on CPU 1.
import { fileURLToPath } from 'node:url';
import { DEFAULT_IDEMPOTENCY_TTL_MS } from '@sse-gateway/publisher-sdk';
import { PUBLISH_SCRIPT } from '@sse-gateway/publisher-sdk/lua';
import { PROTOCOL_VERSION, topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';
import { run } from './harness.js';

export const TARGET_RATIO = 0.8;
/** redis-benchmark's default client count, spelled out because it shapes the rate. */
export const BENCHMARK_CLIENTS = 50;
/** Must match the gateway's HISTORY_MAX_LENGTH: trimming is part of every publish's cost. */
const HISTORY_MAX_LENGTH = 1000;

/**
 * options: { redisUrl, redisPort, prefix, events, pipeline, batch, inFlight, eventBytes, rounds }.
 * Every round publishes to fresh topics, so each run starts from an empty stream and its count can be checked.
 */
export async function runPublishRate(options) {
  const redis = new Redis(options.redisUrl, { protocol: 2 });
  try {
    const rounds = [];
    for (let round = 1; round <= options.rounds; round++) {
      const benchmarkRate = await measureRedisBenchmark(redis, options, `publish-redis-benchmark-${round}`);
      const sdk = await measureSdk(redis, options, `publish-sdk-${round}`);
      rounds.push({ benchmarkRate, sdkRate: sdk.rate, sdkBusy: sdk.busy, ratio: sdk.rate / benchmarkRate });
    }
    // The ratio is the median of each round's own ratio: the two runs of a round are back to back, so a
    // machine-wide slowdown that spans a round cancels out.
    const medianOf = (key) => median(rounds.map((r) => r[key]));
    const keys = ['benchmarkRate', 'sdkRate', 'sdkBusy', 'ratio'];
    return { rounds, median: Object.fromEntries(keys.map((key) => [key, medianOf(key)])) };
  } finally {
    redis.disconnect();
  }
}

async function measureRedisBenchmark(redis, { redisPort, prefix, events, pipeline, eventBytes }, topic) {
  const sha = await redis.script('LOAD', PUBLISH_SCRIPT);
  const keys = topicKeys(prefix, topic);
  const data = 'x'.repeat(eventBytes);
  // The SDK's call for an event without an idempotency key: 2 keys, then its ARGV (transports/redis.ts).
  const script = [
    ...['EVALSHA', sha, '2', keys.stream, keys.epoch],
    ...[keys.channel, HISTORY_MAX_LENGTH, 0, 'message', data, DEFAULT_IDEMPOTENCY_TTL_MS, PROTOCOL_VERSION],
  ];
  const options = ['-h', '127.0.0.1', '-p', redisPort, '-c', BENCHMARK_CLIENTS, '-n', events, '-P', pipeline, '-q'];
  const output = await run(0, 'redis-benchmark', [...options, ...script].map(String));
  const rates = [...output.matchAll(/([\d.]+) requests per second/g)];
  if (rates.length === 0) throw new Error(`no rate in redis-benchmark's output: ${output}`);
  // redis-benchmark reports error replies and carries on: count what the script really stored.
  await expectStored(redis, keys.stream, events, 'redis-benchmark');
  return Number(rates.at(-1)[1]);
}

async function measureSdk(redis, { redisUrl, prefix, events, batch, inFlight, eventBytes }, topic) {
  const script = fileURLToPath(new URL('sdk-publish.js', import.meta.url));
  const argv = [
    ...[script, '--redis', redisUrl, '--prefix', prefix, '--topic', topic, '--events', events],
    ...['--batch', batch, '--in-flight', inFlight, '--size', eventBytes, '--max-length', HISTORY_MAX_LENGTH],
  ];
  const output = await run(0, process.execPath, argv.map(String));
  const { ms, stored, busy } = JSON.parse(output.trim().split('\n').at(-1));
  await expectStored(redis, topicKeys(prefix, topic).stream, stored, 'the SDK');
  return { rate: (events / ms) * 1000, busy };
}

async function expectStored(redis, stream, expected, who) {
  const info = await redis.xinfo('STREAM', stream);
  const added = Number(info[info.indexOf('entries-added') + 1]);
  if (added !== expected) throw new Error(`${who} stored ${added} events, not ${expected}`);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}
