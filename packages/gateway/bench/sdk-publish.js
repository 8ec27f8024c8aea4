// Child process of the publish phases (bench/publish-rate.js, bench/cluster.js): publishes --events events
// with the SDK's sendMany, --batch events per call and --in-flight calls outstanding, then prints the time
// taken and the number of events stored (warm-up included) and its CPU use as JSON. With --topics N > 1 the
// events of each batch go round-robin to topics `<topic>/0` ... `<topic>/N-1` (on a cluster: many slots).
// A process of its own so it can be pinned to a CPU, like redis-benchmark.
import { parseArgs } from 'node:util';
import { createPublisher } from '@sse-gateway/publisher-sdk';

const { values: args } = parseArgs({
  options: {
    redis: { type: 'string' },
    prefix: { type: 'string' },
    topic: { type: 'string' },
    topics: { type: 'string', default: '1' },
    events: { type: 'string' },
    batch: { type: 'string' },
    'in-flight': { type: 'string' },
    size: { type: 'string' },
    'max-length': { type: 'string' },
  },
});
const events = Number(args.events);
const batchSize = Number(args.batch);
const publisher = createPublisher({
  redis: args.redis,
  prefix: args.prefix,
  topic: args.topic,
  maxLength: Number(args['max-length']),
  maxAgeMs: 0,
});
const topics = Number(args.topics);
const data = 'x'.repeat(Number(args.size));
const batch = Array.from({ length: batchSize }, (_, i) =>
  topics > 1 ? { topic: `${args.topic}/${i % topics}`, data } : { data },
);

// Warm-up: the connection is up and the script cached in Redis before the clock starts, as for redis-benchmark.
let stored = (await publisher.sendMany(batch)).length;

let remaining = events;
/** One of the --in-flight loops: each keeps one sendMany outstanding. */
async function sendLoop() {
  while (remaining > 0) {
    const n = Math.min(batchSize, remaining);
    remaining -= n;
    const ids = await publisher.sendMany(n === batchSize ? batch : batch.slice(0, n));
    stored += ids.length; // after the await: `stored += await ...` would add to a value read before it
  }
}

const startedAt = performance.now();
const cpuBefore = process.cpuUsage();
await Promise.all(Array.from({ length: Number(args['in-flight']) }, sendLoop));
const ms = performance.now() - startedAt;
const cpu = process.cpuUsage(cpuBefore);
await publisher.close();
// Busy share of one CPU: near 1, the publisher sets the rate; well below, it waited (on Redis, or for a CPU
// another process held).
console.log(JSON.stringify({ ms, stored, busy: (cpu.user + cpu.system) / 1000 / ms }));
