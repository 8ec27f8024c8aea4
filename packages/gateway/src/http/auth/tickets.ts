/**
 * Subscribe tickets: short-lived, single-use credentials for a URL, because browsers' EventSource cannot
 * send headers and long-lived tokens must not sit in URLs and logs. A ticket is an HS256 JWT signed with
 * the ticket secret (so any node can check it) whose `jti` is claimed once through the engine (so it is
 * single-use across the cluster).
 */
import { randomBytes } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import { compileGrants } from './grants.js';
import type { Principal } from './token-verifier.js';

/** Records that a ticket id was used; false when it already was. Backed by the engine (Redis SET NX). */
export type ClaimOnce = (key: string, ttlMs: number) => Promise<boolean>;

const TICKET_TYPE = 'sse-ticket';

export class TicketError extends Error {
  override readonly name = 'TicketError';
}

export class Tickets {
  readonly #secret: Uint8Array;

  constructor(
    secret: string,
    private readonly ttlMs: number,
    private readonly claimOnce: ClaimOnce,
  ) {
    this.#secret = new TextEncoder().encode(secret);
  }

  /**
   * Mints a ticket for exactly `topics` (the caller checked the principal may read them), with the
   * expiry of the token behind it: it opens one EventSource URL of those topics, nothing else.
   */
  async mint(
    principal: Principal,
    topics: readonly string[],
    now = Date.now(),
  ): Promise<{ ticket: string; expiresAt: number }> {
    const expiresAt = Math.min(now + this.ttlMs, principal.expiresAt);
    const ticket = await new SignJWT({
      typ: TICKET_TYPE,
      sub: principal.sub,
      topics: [...topics],
      tokenExp: Number.isFinite(principal.expiresAt) ? principal.expiresAt : undefined,
    })
      .setProtectedHeader({ alg: 'HS256' })
      .setJti(randomBytes(16).toString('base64url'))
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.ceil(expiresAt / 1000))
      .sign(this.#secret);
    return { ticket, expiresAt };
  }

  /**
   * Verifies a ticket without spending it: the caller spends it with `spend` once the stream is admitted,
   * so a stream refused by a limit (503, retried elsewhere by the balancer) does not burn its ticket.
   */
  async verify(ticket: string): Promise<{ principal: Principal; spend: () => Promise<void> }> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(ticket, this.#secret, { algorithms: ['HS256'] }));
    } catch {
      throw new TicketError('the ticket is invalid or expired');
    }
    if (payload.typ !== TICKET_TYPE || typeof payload.jti !== 'string') throw new TicketError('not a subscribe ticket');
    const jti = payload.jti;
    const topics = Array.isArray(payload.topics) ? payload.topics.filter((t) => typeof t === 'string') : [];
    const principal: Principal = {
      sub: typeof payload.sub === 'string' ? payload.sub : undefined,
      // Exact topics, never patterns: a topic name holds no wildcard segment.
      subscribe: compileGrants(topics),
      publish: [],
      admin: false,
      expiresAt: typeof payload.tokenExp === 'number' ? payload.tokenExp : Number.POSITIVE_INFINITY,
      source: 'ticket',
    };
    const spend = async () => {
      if (!(await this.claimOnce(`ticket:${jti}`, this.ttlMs + 60_000))) {
        throw new TicketError('the ticket was already used');
      }
    };
    return { principal, spend };
  }
}
