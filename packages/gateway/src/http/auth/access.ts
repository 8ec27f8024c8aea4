/**
 * Who may read and write which topic. Credentials come from a ticket (`?ticket=`), an
 * `Authorization: Bearer` header or an HttpOnly cookie. With no key configured the gateway is open
 * (development); with any key, subscribing needs a grant unless the topic is public, and publishing
 * always needs a publish grant.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { GatewayError } from '../errors.js';
import type { RequestView } from '../request-view.js';
import { anyGrantMatches, compileGrants, type Grant } from './grants.js';
import { TicketError, type Tickets } from './tickets.js';
import { InvalidTokenError, type Principal, type TokenVerifier } from './token-verifier.js';

export interface AccessOptions {
  readonly verifier: TokenVerifier;
  readonly tickets: Tickets;
  /** Topic patterns anyone may subscribe to. */
  readonly publicTopics: readonly string[];
  readonly cookieName: string;
}

/** Longest credential accepted from a header, cookie or query, in characters. */
const MAX_TOKEN_LENGTH = 8192;

export class Access {
  readonly #verifier: TokenVerifier;
  readonly #tickets: Tickets;
  readonly #publicTopics: readonly Grant[];
  readonly #cookieName: string;

  constructor(options: AccessOptions) {
    this.#verifier = options.verifier;
    this.#tickets = options.tickets;
    this.#publicTopics = compileGrants(options.publicTopics);
    this.#cookieName = options.cookieName;
  }

  /** No key configured: anyone may subscribe and publish (development only). */
  get open(): boolean {
    return !this.#verifier.configured;
  }

  /**
   * Checks a subscribe request; returns the principal (undefined for anonymous access to public topics)
   * and `commit`, which spends a single-use ticket: call it once the stream was admitted by the limits.
   */
  async authorizeSubscribe(
    c: RequestView,
    topics: readonly string[],
  ): Promise<{ principal: Principal | undefined; commit: () => Promise<void> }> {
    const nothingToSpend = async () => {};
    if (this.open) return { principal: undefined, commit: nothingToSpend };
    const ticket = c.query('ticket');
    let principal: Principal | undefined;
    let commit = nothingToSpend;
    if (ticket !== undefined) {
      checkLength(ticket, 'ticket');
      const verified = await this.#ticketCall(() => this.#tickets.verify(ticket));
      principal = verified.principal;
      commit = () => this.#ticketCall(verified.spend);
    } else {
      principal = await this.#authenticate(c);
    }
    for (const topic of topics) {
      if (anyGrantMatches(this.#publicTopics, topic)) continue;
      if (!principal) {
        throw new GatewayError(401, 'unauthorized', `topic ${JSON.stringify(topic)} needs a token or a ticket`, {
          'WWW-Authenticate': 'Bearer',
        });
      }
      if (!anyGrantMatches(principal.subscribe, topic)) {
        throw new GatewayError(403, 'forbidden', `the token grants no subscription to ${JSON.stringify(topic)}`);
      }
    }
    return { principal, commit };
  }

  /**
   * Who publishes, checked before the body is read: an anonymous caller of a closed gateway learns nothing
   * about what it would have accepted. Undefined in open mode.
   */
  async authenticatePublisher(c: RequestView): Promise<Principal | undefined> {
    if (this.open) return undefined;
    const principal = await this.#authenticate(c);
    if (!principal) {
      throw new GatewayError(401, 'unauthorized', 'publishing needs a token with a publish grant', {
        'WWW-Authenticate': 'Bearer',
      });
    }
    return principal;
  }

  /** The publisher's grants must cover every topic of the request (open mode: anyone may publish). */
  authorizePublish(principal: Principal | undefined, topics: readonly string[]): void {
    if (this.open || !principal) return;
    for (const topic of topics) {
      if (!anyGrantMatches(principal.publish, topic)) {
        throw new GatewayError(403, 'forbidden', `the token grants no publishing to ${JSON.stringify(topic)}`);
      }
    }
  }

  /**
   * Who calls the admin API: the bearer `adminToken` (ADMIN_TOKEN), or a token (bearer or cookie) with
   * the admin grant. In open mode without an ADMIN_TOKEN anyone who reaches the admin listener may.
   * Returns who it is, for the log line every action writes.
   */
  async authenticateAdmin(c: RequestView, adminToken: string | undefined): Promise<string> {
    const authorization = c.header('authorization');
    if (adminToken && authorization !== undefined && sameSecret(authorization, `Bearer ${adminToken}`)) {
      return 'admin-token';
    }
    if (this.open && !adminToken) return 'anyone (open mode)';
    const principal = this.open ? undefined : await this.#authenticate(c).catch(() => undefined);
    if (principal?.admin) return principal.sub ? `token sub=${principal.sub}` : 'token without sub';
    throw new GatewayError(
      principal ? 403 : 401,
      principal ? 'forbidden' : 'unauthorized',
      principal
        ? 'the token has no admin grant ({"sse":{"admin":true}})'
        : 'the admin API needs ADMIN_TOKEN as a bearer token, or a token with the admin grant',
      principal ? {} : { 'WWW-Authenticate': 'Bearer' },
    );
  }

  /**
   * Requires a token (bearer or cookie) granting every topic `readTopics` reads from the request, and
   * mints a single-use subscribe ticket for exactly those topics.
   */
  async mintTicket(
    c: RequestView,
    readTopics: () => Promise<readonly string[]>,
  ): Promise<{ ticket: string; expiresAt: number }> {
    if (this.open) throw new GatewayError(404, 'tickets_disabled', 'tickets need auth keys; this gateway is open');
    // No CSRF check here: a forged mint cannot read the ticket it caused (no CORS for foreign origins).
    const principal = await this.#authenticate(c);
    if (!principal) {
      throw new GatewayError(401, 'unauthorized', 'minting a ticket needs a token', { 'WWW-Authenticate': 'Bearer' });
    }
    // The body only once the caller is known: an anonymous caller learns nothing from validation errors.
    const topics = await readTopics();
    for (const topic of topics) {
      if (!anyGrantMatches(principal.subscribe, topic)) {
        throw new GatewayError(403, 'forbidden', `the token grants no subscription to ${JSON.stringify(topic)}`);
      }
    }
    return this.#tickets.mint(principal, topics);
  }

  async #ticketCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof TicketError) throw new GatewayError(401, 'invalid_ticket', error.message);
      throw error;
    }
  }

  /** Bearer header first, then the cookie; undefined without credentials. */
  async #authenticate(c: RequestView): Promise<Principal | undefined> {
    const authorization = c.header('authorization');
    if (authorization !== undefined) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
      if (!match) throw new GatewayError(401, 'invalid_token', 'Authorization must be "Bearer <token>"');
      return this.#verify(match[1] as string, 'bearer');
    }
    const cookie = c.cookie(this.#cookieName);
    if (cookie) return this.#verify(cookie, 'cookie');
    return undefined;
  }

  async #verify(token: string, source: Principal['source']): Promise<Principal> {
    checkLength(token, 'token');
    try {
      return await this.#verifier.verify(token, source);
    } catch (error) {
      if (error instanceof InvalidTokenError) throw new GatewayError(401, 'invalid_token', error.message);
      throw error;
    }
  }
}

/**
 * A publish body is JSON and says so. This is also the CSRF protection: a browser attaches cookies to
 * cross-site form posts, but a cross-origin request with a JSON content type must pass a CORS preflight.
 */
export function requireJsonBody(c: RequestView): void {
  const type = c.header('content-type') ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new GatewayError(415, 'json_required', 'the request body must be JSON, with Content-Type: application/json');
  }
}

/** Compares in constant time (the lengths may differ: then they are not the same). */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function checkLength(value: string, what: string): void {
  if (value.length > MAX_TOKEN_LENGTH) {
    throw new GatewayError(401, `invalid_${what}`, `the ${what} is longer than ${MAX_TOKEN_LENGTH} characters`);
  }
}
