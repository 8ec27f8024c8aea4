/**
 * Topic grants: `orders/42` exact, `orders/*` one segment, `orders/**` any depth below, `{sub}` the token's
 * subject. Unit examples pin the documented cases; fast-check properties check them against simple
 * oracles (string prefixes, segment counts) over random topics.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { anyGrantMatches, compileGrant, compileGrants, type Grant, grantMatches } from '../src/http/auth/grants.js';
import { principalFromPayload } from '../src/http/auth/token-verifier.js';

/** Compiles `pattern` and fails the test when it is dropped. */
function grant(pattern: string, sub?: string): Grant {
  const compiled = compileGrant(pattern, { sub });
  if (!compiled) throw new Error(`${JSON.stringify(pattern)} did not compile`);
  return compiled;
}

const matches = (pattern: string, topic: string, sub?: string) => grantMatches(grant(pattern, sub), topic);

// Topic characters other than `/` (see topicProblem): a segment of a valid topic.
const SEGMENT_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~:@=+';
const segmentArb = fc.string({ unit: fc.constantFrom(...SEGMENT_CHARS), minLength: 1, maxLength: 6 });
/** A segment that may also be empty (`a//b` is a valid topic with an empty middle segment). */
const anySegmentArb = fc.oneof({ weight: 9, arbitrary: segmentArb }, { weight: 1, arbitrary: fc.constant('') });
const segmentsArb = fc
  .array(anySegmentArb, { minLength: 1, maxLength: 6 })
  .filter((segments) => segments.join('/').length > 0);
/** Topics of few distinct segments, so random pairs often share prefixes. */
const smallSegmentArb = fc.constantFrom('a', 'b', 'c', 'orders', '42', '');
const smallTopicArb = fc
  .array(smallSegmentArb, { minLength: 1, maxLength: 5 })
  .map((s) => s.join('/'))
  .filter((topic) => topic.length > 0);
const topicArb = fc.oneof(
  segmentsArb.map((s) => s.join('/')),
  smallTopicArb,
);

describe('exact patterns', () => {
  it('match only the topic itself', () => {
    expect(matches('orders/42', 'orders/42')).toBe(true);
    expect(matches('orders/42', 'orders/43')).toBe(false);
    expect(matches('orders/42', 'orders/42/items')).toBe(false);
    expect(matches('orders/42', 'orders')).toBe(false);
    expect(matches('orders/42', 'orders/42/')).toBe(false);
    expect(matches('orders/42', 'x/orders/42')).toBe(false);
    expect(matches('orders', 'orders')).toBe(true);
    expect(matches('orders', 'Orders')).toBe(false);
  });

  it('property: a wildcard-free pattern matches a topic if and only if it is that topic', () => {
    fc.assert(
      fc.property(topicArb, topicArb, (pattern, topic) => {
        expect(grantMatches(grant(pattern), topic)).toBe(pattern === topic);
        expect(grantMatches(grant(pattern), pattern)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe('`*`', () => {
  it('matches exactly one segment', () => {
    expect(matches('orders/*', 'orders/42')).toBe(true);
    expect(matches('orders/*', 'orders/43')).toBe(true);
    expect(matches('orders/*', 'orders')).toBe(false);
    expect(matches('orders/*', 'orders/42/items')).toBe(false);
    expect(matches('orders/*', 'invoices/42')).toBe(false);
    expect(matches('*/items', 'orders/items')).toBe(true);
    expect(matches('*/items', 'orders/42/items')).toBe(false);
    expect(matches('orders/*/items', 'orders/42/items')).toBe(true);
    expect(matches('orders/*/items', 'orders/42/lines')).toBe(false);
    expect(matches('*', 'orders')).toBe(true);
    expect(matches('*', 'orders/42')).toBe(false);
    expect(matches('*/*', 'orders/42')).toBe(true);
  });

  it('property: prefix/* matches every one-segment child of prefix and nothing deeper or shallower', () => {
    fc.assert(
      fc.property(segmentsArb, anySegmentArb, topicArb, (prefix, child, other) => {
        const pattern = grant([...prefix, '*'].join('/'));
        expect(grantMatches(pattern, [...prefix, child].join('/'))).toBe(true);
        expect(grantMatches(pattern, prefix.join('/'))).toBe(false);
        expect(grantMatches(pattern, [...prefix, child, 'deeper'].join('/'))).toBe(false);
        // Oracle for an arbitrary topic: same segment count, equal on every non-wildcard segment.
        const segments = other.split('/');
        const expected = segments.length === prefix.length + 1 && prefix.every((s, i) => segments[i] === s);
        expect(grantMatches(pattern, other)).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });
});

describe('`**`', () => {
  it('matches any depth below its prefix, and not the prefix itself', () => {
    expect(matches('orders/**', 'orders/42')).toBe(true);
    expect(matches('orders/**', 'orders/42/items')).toBe(true);
    expect(matches('orders/**', 'orders/42/items/7/lines')).toBe(true);
    expect(matches('orders/**', 'orders')).toBe(false);
    expect(matches('orders/**', 'ordersX/42')).toBe(false);
    expect(matches('orders/**', 'invoices/42')).toBe(false);
    expect(matches('orders/**', 'x/orders/42')).toBe(false);
    expect(matches('user/*/inbox/**', 'user/alice/inbox/1')).toBe(true);
    expect(matches('user/*/inbox/**', 'user/alice/outbox/1')).toBe(false);
  });

  it('alone matches every topic', () => {
    fc.assert(
      fc.property(topicArb, (topic) => {
        expect(matches('**', topic)).toBe(true);
      }),
    );
  });

  it('property: prefix/** matches exactly the topics that start with "prefix/"', () => {
    fc.assert(
      fc.property(
        segmentsArb,
        topicArb,
        fc.array(anySegmentArb, { minLength: 1, maxLength: 4 }),
        (prefix, other, rest) => {
          const pattern = grant([...prefix, '**'].join('/'));
          const below = [...prefix, ...rest].join('/');
          expect(grantMatches(pattern, below)).toBe(true);
          expect(grantMatches(pattern, prefix.join('/'))).toBe(false);
          expect(grantMatches(pattern, other)).toBe(other.startsWith(`${prefix.join('/')}/`));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('is only allowed as the last segment; partial wildcards are not patterns', () => {
    for (const bad of [
      '**/orders',
      'orders/**/items',
      'a/**/**',
      'orders/4*',
      'orders/*2',
      'or*ders',
      '***',
      'a/**b',
    ]) {
      expect(compileGrant(bad), bad).toBeUndefined();
    }
  });
});

describe('`{sub}`', () => {
  it('is replaced by the token subject', () => {
    expect(compileGrant('user/{sub}/*', { sub: 'alice' })).toEqual(['user', 'alice', '*']);
    expect(matches('user/{sub}/inbox', 'user/alice/inbox', 'alice')).toBe(true);
    expect(matches('user/{sub}/inbox', 'user/bob/inbox', 'alice')).toBe(false);
    expect(matches('user/{sub}/**', 'user/alice/inbox/1', 'alice')).toBe(true);
    expect(matches('user/{sub}/**', 'user/bob/inbox/1', 'alice')).toBe(false);
    // Several occurrences, and inside a segment.
    expect(compileGrant('{sub}/x/{sub}', { sub: 'a1' })).toEqual(['a1', 'x', 'a1']);
    expect(compileGrant('team-{sub}/news', { sub: 'a1' })).toEqual(['team-a1', 'news']);
    // Subjects with topic characters that are not wildcards are fine.
    expect(compileGrant('user/{sub}', { sub: 'auth0|x' })).toBeUndefined(); // `|` is no topic character
    expect(compileGrant('user/{sub}', { sub: 'a.b@example.com' })).toEqual(['user', 'a.b@example.com']);
  });

  it('drops the grant when the subject is missing or unusable', () => {
    const unusable = [
      undefined,
      '',
      'a/b',
      '/',
      '*',
      '**',
      'a*',
      '{sub}',
      '{',
      '}',
      'a b',
      'a,b',
      'x'.repeat(201),
      'é',
    ];
    for (const sub of unusable) {
      expect(compileGrant('user/{sub}/inbox', { sub }), `sub ${JSON.stringify(sub)}`).toBeUndefined();
    }
    // A pattern without {sub} does not care about the subject.
    expect(compileGrant('orders/*', { sub: 'a/b' })).toEqual(['orders', '*']);
  });

  it('other braces are not patterns', () => {
    for (const bad of ['user/{id}', 'user/{', 'user/}', 'user/{sub', 'user/sub}', '{}']) {
      expect(compileGrant(bad, { sub: 'alice' }), bad).toBeUndefined();
    }
  });

  it('property: never widens a grant, whatever the subject', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), segmentArb), topicArb, (sub, topic) => {
        const compiled = compileGrant('user/{sub}/inbox', { sub });
        if (compiled === undefined) return;
        expect(compiled).toEqual(['user', sub, 'inbox']);
        expect(grantMatches(compiled, topic)).toBe(topic === `user/${sub}/inbox`);
      }),
      { numRuns: 1000 },
    );
  });

  it('property: a subject made of topic characters without `/` is always usable', () => {
    fc.assert(
      fc.property(segmentArb, (sub) => {
        expect(matches('user/{sub}/inbox', `user/${sub}/inbox`, sub)).toBe(true);
      }),
    );
  });
});

describe('grants built from a topic', () => {
  /** The topic's segments, each replaced by `*` at random, optionally cut at some point by a trailing `**`. */
  const derivedArb = segmentsArb.chain((segments) =>
    fc.record({
      segments: fc.constant(segments),
      stars: fc.array(fc.boolean(), { minLength: segments.length, maxLength: segments.length }),
      // Index at which `**` replaces the rest (it must leave at least one segment to match), or none.
      globAt: fc.option(fc.integer({ min: 0, max: segments.length - 1 }), { nil: undefined }),
    }),
  );
  const patternOf = ({ segments, stars, globAt }: { segments: string[]; stars: boolean[]; globAt?: number }) => {
    const parts = segments.map((segment, i) => (stars[i] ? '*' : segment));
    return globAt === undefined ? parts : [...parts.slice(0, globAt), '**'];
  };

  it('property: always match the topic they were built from', () => {
    fc.assert(
      fc.property(derivedArb, (derived) => {
        const pattern = patternOf(derived).join('/');
        expect(grantMatches(grant(pattern), derived.segments.join('/')), pattern).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('property: never match a topic with another segment count, unless they end in `**`', () => {
    fc.assert(
      fc.property(derivedArb, topicArb, (derived, other) => {
        const parts = patternOf(derived);
        const compiled = grant(parts.join('/'));
        const count = other.split('/').length;
        if (derived.globAt === undefined) {
          if (count !== derived.segments.length) expect(grantMatches(compiled, other)).toBe(false);
        } else if (count <= derived.globAt) {
          // `**` needs at least one segment below its prefix.
          expect(grantMatches(compiled, other)).toBe(false);
        }
        // Whatever the count: the oracle over segments.
        const segments = other.split('/');
        const fixed = parts.filter((p) => p !== '**');
        const countOk =
          derived.globAt === undefined ? segments.length === fixed.length : segments.length > fixed.length;
        const expected = countOk && fixed.every((p, i) => p === '*' || p === segments[i]);
        expect(grantMatches(compiled, other)).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('compileGrants and anyGrantMatches', () => {
  it('drop what cannot grant anything and keep the rest in order', () => {
    const grants = compileGrants(
      ['orders/*', 42, null, '', 'a/**/b', { topic: 'x' }, 'user/{sub}', 'x'.repeat(1025), 'news'],
      {
        sub: 'alice',
      },
    );
    expect(grants).toEqual([['orders', '*'], ['user', 'alice'], ['news']]);
    expect(compileGrants(['user/{sub}'])).toEqual([]);
  });

  it('no grant matches nothing', () => {
    expect(anyGrantMatches([], 'orders/42')).toBe(false);
  });

  it('property: anyGrantMatches is "some grant matches"', () => {
    const patternArb = fc.oneof(
      topicArb,
      smallTopicArb.map((t) => `${t}/*`),
      smallTopicArb.map((t) => `${t}/**`),
      fc.constant('**'),
      fc.constant('*'),
    );
    fc.assert(
      fc.property(fc.array(patternArb, { maxLength: 5 }), topicArb, (patterns, topic) => {
        const grants = compileGrants(patterns);
        expect(grants).toHaveLength(patterns.length);
        expect(anyGrantMatches(grants, topic)).toBe(grants.some((g) => grantMatches(g, topic)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('the `sse` claim', () => {
  it('reads subscribe and publish lists (or single strings) and substitutes the subject', () => {
    const principal = principalFromPayload(
      { sub: 'alice', exp: 2_000_000_000, sse: { subscribe: ['orders/*', 'user/{sub}/**'], publish: 'orders/{sub}' } },
      'bearer',
    );
    expect(principal.sub).toBe('alice');
    expect(principal.subscribe).toEqual([
      ['orders', '*'],
      ['user', 'alice', '**'],
    ]);
    expect(principal.publish).toEqual([['orders', 'alice']]);
    expect(principal.expiresAt).toBe(2_000_000_000_000);
    expect(principal.source).toBe('bearer');
  });

  it('grants nothing without the claim, with a malformed claim, and never expires without exp', () => {
    for (const payload of [
      {},
      { sse: 'orders/*' },
      { sse: { subscribe: 42 } },
      { sse: null },
      { sub: 7, sse: { subscribe: ['user/{sub}'] } },
    ]) {
      const principal = principalFromPayload(payload as Record<string, unknown>, 'cookie');
      expect(principal.subscribe, JSON.stringify(payload)).toEqual([]);
      expect(principal.publish).toEqual([]);
      expect(principal.expiresAt).toBe(Number.POSITIVE_INFINITY);
    }
  });
});
