/**
 * The bench's raw-socket response decoder: whatever the chunk boundaries (a proxy re-chunks anywhere,
 * even inside an `id:` line), the decoded body is exactly the bytes the server framed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- plain JavaScript bench module without declarations
import { httpStreamDecoder, lineSplitter } from '../bench/http-stream.js';

function chunked(body: string, pieceSizes: number[]): string {
  let out = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
  let at = 0;
  for (let i = 0; at < body.length; i++) {
    const size = Math.max(1, pieceSizes[i % pieceSizes.length] ?? 1);
    const piece = body.slice(at, at + size);
    out += `${Buffer.byteLength(piece, 'latin1').toString(16)}\r\n${piece}\r\n`;
    at += size;
  }
  return `${out}0\r\n\r\n`;
}

function decode(wire: string, readSizes: number[]) {
  const statuses: number[] = [];
  const body: Buffer[] = [];
  const push = httpStreamDecoder(
    (status: number) => statuses.push(status),
    (piece: Buffer) => body.push(Buffer.from(piece)),
  );
  const bytes = Buffer.from(wire, 'latin1');
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const size = Math.max(1, readSizes[i % readSizes.length] ?? 1);
    push(bytes.subarray(at, at + size));
    at += size;
  }
  return { statuses, body: Buffer.concat(body).toString('latin1') };
}

describe('bench http-stream decoder', () => {
  it('removes the chunked framing whatever the chunk and read boundaries', () => {
    const sizes = fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 });
    const frame = fc.stringMatching(/^[a-z0-9-]{1,12}$/).map((id) => `id: ${id}\ndata: x\n\n`);
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 20 }), sizes, sizes, (frames, chunks, reads) => {
        const body = frames.join('');
        const decoded = decode(chunked(body, chunks), reads);
        expect(decoded.statuses).toEqual([200]);
        expect(decoded.body).toBe(body);
      }),
    );
  });

  it('passes an identity body through and reports a refusal status', () => {
    const wire = 'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 13\r\n\r\n{"error":"x"}';
    expect(decode(wire, [7])).toEqual({ statuses: [503], body: '{"error":"x"}' });
  });

  it('splits lines across pieces', () => {
    const lines: string[] = [];
    const push = lineSplitter((line: string) => lines.push(line));
    for (const piece of ['id: 1', '2\nda', 'ta: x\r\n', '\n']) push(Buffer.from(piece));
    expect(lines).toEqual(['id: 12', 'data: x', '']);
  });
});
