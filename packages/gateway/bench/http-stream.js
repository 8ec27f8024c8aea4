// Decodes an HTTP/1.1 streaming response read from a raw socket: the status, then the body with the
// chunked transfer encoding removed. The bench's raw-socket SSE clients used to leave the chunk framing
// in the byte stream, which is only safe when the gateway's own whole-frame chunks reach the client
// untouched; a proxy (HAProxy) re-chunks at its buffer boundaries, so a chunk-size line can land inside
// an `id:` line and turn one received event into a "gap" plus an "unexpected id".

const CRLF_CRLF = Buffer.from('\r\n\r\n');
const CR = 13;
const LF = 10;

/**
 * Returns `push(chunk)`, to be called with every chunk read from the socket. `onHead(status, head)` runs
 * once the head is complete (`head` as latin1 text); `onBody(bytes)` runs with each piece of the decoded
 * body, in order (pieces may be views into the socket's chunks: copy what you keep).
 */
export function httpStreamDecoder(onHead, onBody) {
  let state = 'head';
  let pending; // bytes of the head, or of a chunk-size line, not complete yet
  let remaining = 0; // bytes left in the current chunk
  let crlfLeft = 0; // bytes of the CRLF that ends the current chunk, not seen yet

  return function push(chunk) {
    let data = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = undefined;
    if (state === 'head') {
      const end = data.indexOf(CRLF_CRLF);
      if (end < 0) {
        pending = data;
        return;
      }
      const head = data.toString('latin1', 0, end);
      state = /\r\ntransfer-encoding:[^\r]*chunked/i.test(head) ? 'size' : 'identity';
      onHead(Number(head.slice(9, 12)), head);
      data = data.subarray(end + CRLF_CRLF.length);
    }
    if (state === 'identity') {
      if (data.length > 0) onBody(data);
      return;
    }
    let at = 0;
    while (at < data.length && state !== 'done') {
      if (crlfLeft > 0) {
        const skip = Math.min(crlfLeft, data.length - at);
        crlfLeft -= skip;
        at += skip;
      } else if (remaining > 0) {
        const take = Math.min(remaining, data.length - at);
        onBody(data.subarray(at, at + take));
        remaining -= take;
        at += take;
        if (remaining === 0) crlfLeft = 2;
      } else {
        const lineEnd = data.indexOf(LF, at);
        if (lineEnd < 0) {
          pending = Buffer.from(data.subarray(at));
          return;
        }
        const sizeEnd = data[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
        // Chunk extensions (after ';') are allowed by the grammar and ignored.
        const size = Number.parseInt(data.toString('latin1', at, sizeEnd).split(';')[0], 16);
        at = lineEnd + 1;
        if (!(size > 0))
          state = 'done'; // the last chunk (or a malformed size): the body is over
        else remaining = size;
      }
    }
  };
}

/**
 * Returns `push(bytes)` for decoded body pieces that calls `onLine(line)` with every complete line
 * (latin1 text, without its LF or CR), keeping a line cut by a piece's end for the next piece.
 */
export function lineSplitter(onLine) {
  let partial = '';
  return function push(bytes) {
    const text = partial + bytes.toString('latin1');
    const lastLf = text.lastIndexOf('\n');
    partial = text.slice(lastLf + 1);
    if (lastLf < 0) return;
    for (const line of text.slice(0, lastLf).split('\n')) onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  };
}

/**
 * Returns `push(chunk)` for a raw socket carrying one SSE response: `onHead(status)` once the head is
 * in, then `onLine(line)` for every line of the body, only when the status was 200.
 */
export function eventStreamLines(onHead, onLine) {
  let streaming = false;
  const lines = lineSplitter(onLine);
  return httpStreamDecoder(
    (status, head) => {
      streaming = status === 200;
      onHead(status, head);
    },
    (piece) => streaming && lines(piece),
  );
}
