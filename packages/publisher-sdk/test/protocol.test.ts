/** The live message encoding, v1 (what older publishers send) and v2 (with the predecessor). */
import { describe, expect, it } from 'vitest';
import { decodeLiveMessage, encodeLiveMessage } from '../src/protocol.js';

describe('live message', () => {
  it('round-trips v2 with its predecessor, data holding newlines', () => {
    const message = { epoch: 'e1', ms: 5, seq: 2, prev: { ms: 5, seq: 1 }, event: 'tick', data: 'a\nb\n' };
    const text = encodeLiveMessage(message);
    expect(text).toBe('2\ne1\n5-2\n5-1\ntick\na\nb\n');
    expect(decodeLiveMessage(text)).toEqual(message);
  });

  it('reads v1 messages of older publishers, without a predecessor', () => {
    expect(decodeLiveMessage('1\ne1\n7-0\ntick\n{"n":1}')).toEqual({
      epoch: 'e1',
      ms: 7,
      seq: 0,
      prev: undefined,
      event: 'tick',
      data: '{"n":1}',
    });
    expect(encodeLiveMessage({ epoch: 'e1', ms: 7, seq: 0, event: 'tick', data: 'x' })).toBe('1\ne1\n7-0\ntick\nx');
  });

  it.each([
    ['an unknown version', '3\ne1\n1-0\n0-0\ntick\nx'],
    ['a v2 message without its predecessor line', '2\ne1\n1-0\ntick'],
    ['a v2 predecessor that is not a stream id', '2\ne1\n1-0\nnope\ntick\nx'],
    ['a bad id', '1\ne1\n1x0\ntick\nx'],
    ['too few lines', '1\ne1\n1-0'],
  ])('refuses %s', (_name, text) => {
    expect(decodeLiveMessage(text)).toBeUndefined();
  });
});
