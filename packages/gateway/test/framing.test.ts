/// <reference types="node" />
/**
 * WIRE BYTES: encodeFrame/encodeBody/encodeRetry byte for byte, and property tests that whatever a
 * publisher sends comes out of a real WHATWG SSE parser (eventsource-parser) as it went in.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeBody, encodeFrame, encodeRetry, HEARTBEAT } from '../src/sse/frame.js';

/** Feeds `text` to a fresh parser and returns every dispatched event, retry and comment. */
function parse(text: string, chunkSize = text.length || 1) {
  const events: EventSourceMessage[] = [];
  const retries: number[] = [];
  const comments: string[] = [];
  const errors: Error[] = [];
  const parser = createParser({
    onEvent: (event) => events.push(event),
    onRetry: (retry) => retries.push(retry),
    onComment: (comment) => comments.push(comment),
    onError: (error) => errors.push(error),
  });
  for (let at = 0; at < text.length; at += chunkSize) parser.feed(text.slice(at, at + chunkSize));
  return { events, retries, comments, errors };
}

/** What any conforming EventSource turns a string into: CRLF and CR become LF. */
const normalised = (data: string) => data.replace(/\r\n|\r/g, '\n');

/** Strings rich in line breaks, spaces, colons and non-ASCII, plus fully arbitrary code points. */
const dataArbitrary = fc.oneof(
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme' }),
  fc.string({
    unit: fc.constantFrom(
      '\r',
      '\n',
      '\r\n',
      '\n\r',
      ' ',
      ':',
      'a',
      'é',
      '😀',
      '\u2028',
      '\0',
      'data: x',
      'id: 1',
      '\uFEFF',
    ),
    maxLength: 40,
  }),
);

/** Valid event names: 1..128 characters, no CR/LF/NUL, not under the reserved `gateway.` prefix. */
const eventArbitrary = fc
  .oneof(
    fc.string({ unit: 'binary', minLength: 1, maxLength: 128 }),
    fc.string({
      unit: fc.constantFrom('a', 'Z', '.', ':', ' ', '-', 'é', '😀', 'gateway'),
      minLength: 1,
      maxLength: 20,
    }),
    fc.constant('message'),
  )
  .filter((name) => name.length <= 128 && !/[\r\n\0]/.test(name) && !name.startsWith('gateway.'));

const idArbitrary = fc
  .record({
    epoch: fc.stringMatching(/^[0-9a-z]{0,16}$/),
    ms: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    seq: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  })
  .map(({ epoch, ms, seq }) => `${epoch}:${ms}-${seq}`);

describe('encodeFrame: exact bytes', () => {
  it('writes id, event and one data line per line of data', () => {
    expect(encodeFrame({ id: '7', event: 'tick', data: 'a\nb' })).toBe('id: 7\nevent: tick\ndata: a\ndata: b\n\n');
  });

  it('omits the event line for the default message type', () => {
    expect(encodeFrame({ id: '1', event: 'message', data: 'x' })).toBe('id: 1\ndata: x\n\n');
    expect(encodeFrame({ id: '1', data: 'x' })).toBe('id: 1\ndata: x\n\n');
  });

  it('writes an empty data line for empty data, so the event is still dispatched', () => {
    expect(encodeFrame({ id: '1', data: '' })).toBe('id: 1\ndata: \n\n');
    expect(parse(encodeFrame({ id: '1', data: '' })).events).toEqual([{ id: '1', event: undefined, data: '' }]);
  });

  it('omits the id line when there is no id', () => {
    expect(encodeFrame({ event: 'tick', data: 'x' })).toBe('event: tick\ndata: x\n\n');
  });

  it('splits on CRLF, CR and LF alike, keeping empty lines', () => {
    expect(encodeFrame({ id: '1', data: 'a\r\nb\rc\nd' })).toBe('id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n');
    expect(encodeFrame({ id: '1', data: '\n' })).toBe('id: 1\ndata: \ndata: \n\n');
    expect(encodeFrame({ id: '1', data: '\r\n\r\n' })).toBe('id: 1\ndata: \ndata: \ndata: \n\n');
    // LF then CR is two line breaks, not one.
    expect(encodeFrame({ id: '1', data: 'a\n\rb' })).toBe('id: 1\ndata: a\ndata: \ndata: b\n\n');
  });

  it('keeps leading spaces and colons of data (the one space after "data:" is the separator)', () => {
    expect(encodeFrame({ id: '1', data: ' lead: x' })).toBe('id: 1\ndata:  lead: x\n\n');
    expect(parse(encodeFrame({ id: '1', data: ' lead: x' })).events[0]?.data).toBe(' lead: x');
  });

  it('passes multi-byte text through untouched', () => {
    expect(encodeFrame({ id: 'e:1-0', event: 'prix', data: 'café 😀' })).toBe(
      'id: e:1-0\nevent: prix\ndata: café 😀\n\n',
    );
  });

  it('encodeBody is the frame without its id line', () => {
    expect(encodeBody('tick', 'a\nb')).toBe('event: tick\ndata: a\ndata: b\n\n');
    expect(encodeBody(undefined, 'x')).toBe('data: x\n\n');
    expect(encodeBody('message', '')).toBe('data: \n\n');
  });
});

describe('encodeRetry and the heartbeat', () => {
  it('writes a whole, non-negative number of milliseconds', () => {
    expect(encodeRetry(3000)).toBe('retry: 3000\n\n');
    expect(encodeRetry(1234.6)).toBe('retry: 1235\n\n');
    expect(encodeRetry(-5)).toBe('retry: 0\n\n');
    expect(parse(encodeRetry(4321)).retries).toEqual([4321]);
  });

  it('the heartbeat is a comment that dispatches nothing', () => {
    expect(HEARTBEAT.toString()).toBe(':\n\n');
    const parsed = parse(HEARTBEAT.toString());
    expect(parsed.events).toEqual([]);
    expect(parsed.comments).toEqual(['']);
  });
});

describe('round trip through a WHATWG parser (property tests)', () => {
  it('any string data comes back with CR and CRLF normalised to LF', () => {
    fc.assert(
      fc.property(dataArbitrary, (data) => {
        const { events, errors } = parse(encodeFrame({ id: '1', data }));
        expect(errors).toEqual([]);
        expect(events).toHaveLength(1);
        expect(events[0]?.data).toBe(normalised(data));
        expect(events[0]?.event).toBeUndefined();
      }),
      { numRuns: 500 },
    );
  });

  it('any valid event name and id come back as they went in', () => {
    fc.assert(
      fc.property(idArbitrary, eventArbitrary, dataArbitrary, (id, event, data) => {
        const { events, errors } = parse(encodeFrame({ id, event, data }));
        expect(errors).toEqual([]);
        expect(events).toHaveLength(1);
        expect(events[0]?.id).toBe(id);
        // The default type is sent without an `event:` line; a parser reports it as undefined.
        expect(events[0]?.event ?? 'message').toBe(event);
        expect(events[0]?.data).toBe(normalised(data));
      }),
      { numRuns: 500 },
    );
  });

  it('a stream of frames parses back to the same events whatever the chunking', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ id: idArbitrary, event: eventArbitrary, data: dataArbitrary }), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.integer({ min: 1, max: 16 }),
        (frames, chunkSize) => {
          const wire = encodeRetry(1000) + frames.map((frame) => encodeFrame(frame)).join(HEARTBEAT.toString());
          const { events, errors, retries } = parse(wire, chunkSize);
          expect(errors).toEqual([]);
          expect(retries).toEqual([1000]);
          expect(events.map((e) => ({ id: e.id, event: e.event ?? 'message', data: e.data }))).toEqual(
            frames.map((f) => ({ id: f.id, event: f.event, data: normalised(f.data) })),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('JSON data round-trips to the same value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const json = JSON.stringify(value);
        const { events } = parse(encodeFrame({ id: '1', event: 'json', data: json }));
        expect(events).toHaveLength(1);
        // JSON itself maps -0 to 0: compare with what JSON gives back, not the original object.
        expect(JSON.parse(events[0]?.data ?? 'null')).toEqual(JSON.parse(json));
        expect(events[0]?.data).toBe(json);
      }),
      { numRuns: 500 },
    );
  });

  it('bytes decoded as UTF-8 in arbitrary slices give the same events (multi-byte characters split)', () => {
    fc.assert(
      fc.property(dataArbitrary, fc.integer({ min: 1, max: 7 }), (data, sliceBytes) => {
        const bytes = Buffer.from(encodeFrame({ id: '1', event: 'tick', data }));
        const decoder = new TextDecoder();
        const events: EventSourceMessage[] = [];
        const parser = createParser({ onEvent: (event) => events.push(event) });
        for (let at = 0; at < bytes.length; at += sliceBytes) {
          parser.feed(decoder.decode(bytes.subarray(at, at + sliceBytes), { stream: true }));
        }
        parser.feed(decoder.decode());
        expect(events.map((e) => e.data)).toEqual([normalised(data)]);
      }),
      { numRuns: 300 },
    );
  });
});
