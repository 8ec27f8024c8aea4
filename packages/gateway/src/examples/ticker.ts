#!/usr/bin/env node
/**
 * The classic eventsource demo as a worker service: publishes a `tick` event to the `clock` topic every
 * TICK_MS (2 s) with the publisher SDK, straight to Redis when REDIS_URL is set, else over HTTP to
 * GATEWAY_URL. Used by docker compose; run it next to any gateway.
 */
import { createPublisher } from '@sse-gateway/publisher-sdk';

const intervalMs = Number(process.env.TICK_MS ?? 2000);
const topic = process.env.TICK_TOPIC ?? 'clock';
const publisher = process.env.REDIS_URL
  ? createPublisher({ redis: process.env.REDIS_URL, topic, prefix: process.env.REDIS_PREFIX })
  : createPublisher({ url: process.env.GATEWAY_URL ?? 'http://127.0.0.1:8080', topic });

let n = 0;
const timer = setInterval(() => {
  n++;
  publisher.send('tick', { n, at: new Date().toISOString() }).then(
    (id) => process.stdout.write(`tick ${n} -> ${id}\n`),
    (error: Error) => process.stderr.write(`tick ${n} failed: ${error.message}\n`),
  );
}, intervalMs);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    clearInterval(timer);
    publisher.close().finally(() => process.exit(0));
  });
}
