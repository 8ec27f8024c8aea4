// The baseline the gateway is measured against: the least a Redis-backed SSE fan-out can do. One
// node:http server, one Redis subscriber, each message encoded once and res.write to every response.
// No validation, no history, no timeouts: a floor for cost, not a product.
import http from 'node:http';
import { decodeLiveMessage, topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';

const port = Number(process.env.PORT);
const prefix = process.env.REDIS_PREFIX ?? 'sse:';
const subscriber = new Redis(process.env.REDIS_URL, { protocol: 2 });
const channels = new Map(); // channel -> Set<ServerResponse>

subscriber.on('message', (channel, text) => {
  const clients = channels.get(channel);
  const message = decodeLiveMessage(text);
  if (!clients || !message) return;
  let frame = `id: ${message.epoch}:${message.ms}-${message.seq}\n`;
  if (message.event !== 'message') frame += `event: ${message.event}\n`;
  for (const line of message.data.split(/\r\n|\r|\n/)) frame += `data: ${line}\n`;
  const bytes = Buffer.from(`${frame}\n`);
  for (const res of clients) res.write(bytes);
});

http
  .createServer((req, res) => {
    const topic = new URL(req.url, 'http://x').searchParams.get('topic') ?? 'bench';
    const channel = topicKeys(prefix, topic).channel;
    let clients = channels.get(channel);
    if (!clients) {
      clients = new Set();
      channels.set(channel, clients);
      subscriber.subscribe(channel);
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.write('retry: 3000\n\n');
    clients.add(res);
    res.on('close', () => clients.delete(res));
  })
  .listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
