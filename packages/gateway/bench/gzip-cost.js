// `node packages/gateway/bench/gzip-cost.js`: the CPU a gzip stream adds per delivered event. With GZIP=true
// every connection owns a zlib stream flushed after each event (Z_SYNC_FLUSH), so compression cannot be
// shared across connections: this measures exactly that per-connection step, against writing the
// pre-encoded frame as is, for typical event sizes. Bytes on the wire are reported too.
import { randomBytes } from 'node:crypto';
import { constants, createGzip } from 'node:zlib';

const CONNECTIONS = 1000;
const EVENTS = 200;

function frame(size, i, kind) {
  // 'random': base64 noise, the worst case for compression. 'json': repetitive text, the friendly case.
  const length = Math.max(0, size - 60);
  const pad = kind === 'random' ? randomBytes(size).toString('base64').slice(0, length) : 'ab,'.repeat(length / 3);
  const data = JSON.stringify({ n: i, price: 101.5 + (i % 7), symbol: 'ACME', pad });
  return Buffer.from(`id: 1rfxg0ayz0vt4:1795779302195-${i}\nevent: tick\ndata: ${data}\n\n`);
}

async function run(size, gzip, kind) {
  const streams = Array.from({ length: CONNECTIONS }, () =>
    gzip ? createGzip({ flush: constants.Z_SYNC_FLUSH }) : null,
  );
  let wire = 0;
  for (const stream of streams) stream?.on('data', (chunk) => (wire += chunk.length));
  const frames = Array.from({ length: EVENTS }, (_, i) => frame(size, i, kind));
  const start = process.cpuUsage();
  for (const bytes of frames) {
    for (const stream of streams) {
      if (stream) stream.write(bytes);
      else wire += bytes.length;
    }
    await new Promise((resolve) => setImmediate(resolve)); // let zlib's thread-pool work complete per event
  }
  await Promise.all(streams.map((s) => (s ? new Promise((resolve) => s.end(resolve)) : null)));
  const used = process.cpuUsage(start);
  const deliveries = CONNECTIONS * EVENTS;
  return { usPerDelivery: (used.user + used.system) / deliveries, bytesPerDelivery: wire / deliveries };
}

console.log(`gzip cost: ${CONNECTIONS} connections x ${EVENTS} events, node ${process.version}`);
console.log('| payload | event size | plain us/delivery | gzip us/delivery | plain bytes | gzip bytes |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const kind of ['json', 'random']) {
  for (const size of [100, 1000, 4000]) {
    const plain = await run(size, false, kind);
    const gz = await run(size, true, kind);
    console.log(
      `| ${kind} | ${size} B | ${plain.usPerDelivery.toFixed(2)} | ${gz.usPerDelivery.toFixed(2)} | ` +
        `${plain.bytesPerDelivery.toFixed(0)} | ${gz.bytesPerDelivery.toFixed(0)} |`,
    );
  }
}
