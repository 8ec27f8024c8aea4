/** Builds the access policy from config: token verifier, ticket secret, public topics. */
import { createHmac, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, redisTargetOf } from '../../config.js';
import type { ClaimStore } from '../../engine/claim-store.js';
import { Access } from './access.js';
import { Tickets } from './tickets.js';
import { TokenVerifier } from './token-verifier.js';

export function createAccess(config: Config, claims: ClaimStore, logger: Logger): Access {
  const log = logger.child({ mod: 'auth' });
  const verifier = new TokenVerifier({
    secret: config.authJwtSecret,
    publicKeyPem: config.authJwtPublicKey,
    jwksUrl: config.authJwksUrl,
    issuer: config.authIssuer,
    audience: config.authAudience,
    clockSkewS: config.authClockSkewS,
  });
  let ticketSecret = config.authTicketSecret;
  if (!ticketSecret && config.authJwtSecret) {
    // Derived, not reused: a ticket must never verify as a token, nor a token as a ticket.
    ticketSecret = createHmac('sha256', config.authJwtSecret).update('sse-gateway subscribe tickets').digest('hex');
  }
  if (!ticketSecret) {
    ticketSecret = randomBytes(32).toString('hex');
    if (verifier.configured && redisTargetOf(config)) {
      log.warn('AUTH_TICKET_SECRET is not set: tickets minted on this node are only accepted by this node');
    }
  }
  const access = new Access({
    verifier,
    tickets: new Tickets(ticketSecret, config.ticketTtlMs, (key, ttlMs) => claims.claimOnce(key, ttlMs)),
    publicTopics: config.publicTopics,
    cookieName: config.authCookieName,
  });
  if (access.open) {
    log.warn(
      { host: config.host },
      'NO AUTH KEYS CONFIGURED: anyone who can reach this gateway may subscribe to and publish on any topic. ' +
        'Set AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY or AUTH_JWKS_URL before exposing it (see docs/security.md).',
    );
  }
  return access;
}
