/**
 * Topic grants: patterns a token carries for subscribe and for publish. Segments are separated by `/`:
 *   `orders/42`        exactly that topic
 *   `orders/*`         one segment: orders/42, not orders/42/items
 *   `orders/**`        any depth below orders (`**` only as the last segment): orders/42, orders/42/items
 *   `**`               every topic
 *   `user/{sub}/*`     `{sub}` is the token's subject; a grant whose subject is missing or unusable in a
 *                      topic name grants nothing.
 * Pure functions, no regular expressions built from input.
 */
import { topicProblem } from '@sse-gateway/publisher-sdk/protocol';

export interface GrantContext {
  /** The token's `sub` claim, substituted for `{sub}`. */
  readonly sub?: string | undefined;
}

/** A compiled pattern: its segments, with `{sub}` already substituted. */
export type Grant = readonly string[];

/** Compiles patterns, dropping those that cannot grant anything (bad syntax, unusable subject). */
export function compileGrants(patterns: readonly unknown[], context: GrantContext = {}): Grant[] {
  const grants: Grant[] = [];
  for (const pattern of patterns) {
    const grant = compileGrant(pattern, context);
    if (grant) grants.push(grant);
  }
  return grants;
}

export function compileGrant(pattern: unknown, context: GrantContext = {}): Grant | undefined {
  if (typeof pattern !== 'string' || pattern.length === 0 || pattern.length > 1024) return undefined;
  let text = pattern;
  if (text.includes('{sub}')) {
    const sub = context.sub;
    // A subject that is empty, has a `/` or characters a topic cannot hold would widen or break the grant.
    if (!sub || sub.includes('/') || sub.includes('*') || topicProblem(sub)) return undefined;
    text = text.replaceAll('{sub}', sub);
  }
  if (text.includes('{') || text.includes('}')) return undefined;
  const segments = text.split('/');
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string;
    if (segment === '**' && i !== segments.length - 1) return undefined;
    if (segment.includes('*') && segment !== '*' && segment !== '**') return undefined;
  }
  return segments;
}

export function grantMatches(grant: Grant, topic: string): boolean {
  const segments = topic.split('/');
  for (let i = 0; i < grant.length; i++) {
    const want = grant[i] as string;
    if (want === '**') return segments.length > i;
    if (i >= segments.length) return false;
    if (want !== '*' && want !== segments[i]) return false;
  }
  return grant.length === segments.length;
}

export function anyGrantMatches(grants: readonly Grant[], topic: string): boolean {
  for (const grant of grants) if (grantMatches(grant, topic)) return true;
  return false;
}
