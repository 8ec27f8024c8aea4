// The fan-out phases' SSE client (bench/fanout.js, bench/cluster.js): one raw socket that counts frames and,
// when sampled, reads each event's sequence number (and records publish->receive latency while measuring).
import net from 'node:net';

/**
 * Resolves with the client once the stream is open (HTTP 200). Events carry `seq,padding` as data; `stats`
 * holds `sentAt` (seq -> publish time), `latencies` and `measuring`.
 */
export function connect(port, topic, sampled, stats) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const client = { socket, frames: 0, lastSeq: -1 };
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
      let at = chunk.indexOf('data: ');
      while (at >= 0) {
        client.frames++;
        if (sampled) {
          const end = chunk.indexOf(44, at); // ','
          const seq = Number(chunk.toString('latin1', at + 6, end));
          const sentAt = stats.sentAt.get(seq);
          if (sentAt !== undefined && stats.measuring) stats.latencies.push(performance.now() - sentAt);
          client.lastSeq = seq;
        }
        at = chunk.indexOf('data: ', at + 6);
      }
    });
  });
}
