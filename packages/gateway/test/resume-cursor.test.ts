/** The resume-cursor rule both engines call, case by case. */
import { ORIGIN, type Position } from '@sse-gateway/publisher-sdk/protocol';
import { describe, expect, it } from 'vitest';
import { type CursorVerdict, type HistoryBounds, judgeCursor } from '../src/engine/resume-cursor.js';

const at = (epoch: string, ms: number, seq = 0): Position => ({ epoch, ms, seq });
const history = (last: Position, removedThrough?: Position): HistoryBounds => ({
  epoch: last.epoch,
  last,
  removedThrough,
});
const serve: CursorVerdict = { kind: 'serve' };
const reset = (reason: string, position: Position) => ({ kind: 'reset', reason, position });

const cases: Array<[string, Position, HistoryBounds | undefined, unknown]> = [
  ['a client that saw nothing, no history', ORIGIN, undefined, serve],
  ['a cursor into a history that is gone', at('e1', 5), undefined, reset('stream-lost', ORIGIN)],
  ['a client that saw nothing, untrimmed history', ORIGIN, history(at('e1', 9)), serve],
  [
    'a client that saw nothing, trimmed history',
    ORIGIN,
    history(at('e1', 9), at('e1', 3)),
    reset('trimmed', at('e1', 3)),
  ],
  ['a cursor at the head', at('e1', 9), history(at('e1', 9)), serve],
  ['a cursor inside history', at('e1', 4), history(at('e1', 9), at('e1', 3)), serve],
  [
    'a cursor at the newest removed entry (nothing after it is missing)',
    at('e1', 3),
    history(at('e1', 9), at('e1', 3)),
    serve,
  ],
  [
    'a cursor before the newest removed entry',
    at('e1', 2),
    history(at('e1', 9), at('e1', 3)),
    reset('trimmed', at('e1', 3)),
  ],
  [
    'same millisecond, earlier sequence than the removed entry',
    at('e1', 3, 0),
    history(at('e1', 9), at('e1', 3, 1)),
    reset('trimmed', at('e1', 3, 1)),
  ],
  ['a cursor ahead of the head', at('e1', 10), history(at('e1', 9)), reset('ahead', at('e1', 9))],
  ['ahead by sequence only', at('e1', 9, 2), history(at('e1', 9, 1)), reset('ahead', at('e1', 9, 1))],
  ['another epoch, nothing removed', at('old', 4), history(at('e1', 9)), reset('stream-lost', at('e1', 0))],
  ['another epoch, some removed', at('old', 4), history(at('e1', 9), at('e1', 3)), reset('stream-lost', at('e1', 3))],
  [
    'another epoch even when its numbers are ahead',
    at('old', 99),
    history(at('e1', 9)),
    reset('stream-lost', at('e1', 0)),
  ],
];

describe('judgeCursor', () => {
  it.each(cases)('%s', (_name, after, bounds, expected) => {
    expect(judgeCursor(after, bounds)).toEqual(expected);
  });
});
