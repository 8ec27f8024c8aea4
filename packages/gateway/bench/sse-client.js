// The fan-out phases' SSE clients (bench/fanout.js, bench/cluster.js): one raw HTTP/1.1 socket, or one HTTP/2
// stream, that counts frames and, when sampled, reads each event's sequence number (and records
// publish->receive latency while measuring).
import net from 'node:net';

/**
 * Resolves with the client once the stream is open (HTTP 200). Events carry `seq,padding` as data; `stats`
 * holds `sentAt` (seq -> publish time), `latencies` and `measuring`.
 */
export function connect(port, topic, sampled, stats) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const client = { socket, frames: 0, lastSeq: -1, close: () => socket.destroy() };
    let headersDone = false;
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(
        `GET /events?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`,
      );
    });
    socket.on('data', (chunk) => {
      if (!headersDone) {
        if (chunk.indexOf('\r\n\r\n') < 0) return;
        headersDone = true;
        if (!chunk.toString('latin1', 0, 12).startsWith('HTTP/1.1 200')) {
          reject(new Error(`stream refused: ${chunk.toString('utf8', 0, 300)}`));
          return;
        }
        resolve(client);
      }
      countFrames(client, chunk, sampled, stats);
    });
  });
}

const MARK = Buffer.from('data: ');

/**
 * Counts frames in one chunk of an event stream and, when sampled, reads sequence numbers (see connect).
 * A `data: ` split between two chunks (TCP segments, HTTP/2 DATA frames) is counted once, from the few
 * bytes kept of the previous chunk.
 */
function countFrames(client, chunk, sampled, stats) {
  const tail = client.tail;
  if (tail && tail.length > 0) {
    const seam = Buffer.concat([tail, chunk.subarray(0, MARK.length - 1)]);
    const at = seam.indexOf(MARK);
    if (at >= 0 && at < tail.length) client.frames++;
  }
  client.tail = chunk.subarray(Math.max(0, chunk.length - (MARK.length - 1)));
  let at = chunk.indexOf(MARK);
  while (at >= 0) {
    client.frames++;
    if (sampled) {
      const end = chunk.indexOf(44, at); // ','; a number cut by the chunk's end is read at the next event
      if (end > 0) {
        const seq = Number(chunk.toString('latin1', at + 6, end));
        const sentAt = stats.sentAt.get(seq);
        if (sentAt !== undefined && stats.measuring) stats.latencies.push(performance.now() - sentAt);
        client.lastSeq = seq;
      }
    }
    at = chunk.indexOf(MARK, at + MARK.length);
  }
}

/** Chrome's windows (6 MiB per stream, 15 MiB per connection): a browser never throttles a fan-out. */
const H2_STREAM_WINDOW = 6 * 1024 * 1024;
const H2_SESSION_WINDOW = 15 * 1024 * 1024;

/** An HTTP/2 session (cleartext, prior knowledge, or TLS without verification) with a browser's windows. */
export async function openH2Session(http2, origin) {
  const session = http2.connect(origin, {
    rejectUnauthorized: false,
    settings: { initialWindowSize: H2_STREAM_WINDOW },
  });
  session.on('error', () => {});
  await new Promise((resolve, reject) => {
    session.once('connect', resolve);
    session.once('error', reject);
  });
  session.setLocalWindowSize(H2_SESSION_WINDOW);
  return session;
}

/** One SSE stream on an HTTP/2 session; resolves with a client like connect's once the answer is 200. */
export function connectH2(session, topic, sampled, stats) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':path': `/events?topic=${encodeURIComponent(topic)}`,
      accept: 'text/event-stream',
    });
    const client = { frames: 0, lastSeq: -1, close: () => stream.close() };
    stream.once('error', reject);
    stream.once('response', (headers) => {
      if (headers[':status'] !== 200) reject(new Error(`stream refused: ${headers[':status']}`));
      else resolve(client);
    });
    stream.on('data', (chunk) => countFrames(client, chunk, sampled, stats));
  });
}
