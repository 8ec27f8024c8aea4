/**
 * Verifies JWTs with jose: an HS256 secret, an RS256/ES256 public key (PEM), or a JWKS URL; issuer,
 * audience and clock skew checks. Turns a valid token into a Principal; never logs the token.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  importSPKI,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  type KeyObject,
} from 'jose';
import { compileGrants, type Grant } from './grants.js';

export interface Principal {
  /** The token's subject, when it has one. */
  readonly sub: string | undefined;
  readonly subscribe: readonly Grant[];
  readonly publish: readonly Grant[];
  /** `{"sse":{"admin":true}}`: may use the admin API. */
  readonly admin: boolean;
  /** Epoch milliseconds at which the token (or ticket) stops being valid; Infinity without `exp`. */
  readonly expiresAt: number;
  /** Where the credentials came from, for logs (never the token itself). */
  readonly source: 'bearer' | 'cookie' | 'ticket';
}

export interface TokenVerifierOptions {
  readonly secret?: string | undefined;
  readonly publicKeyPem?: string | undefined;
  readonly jwksUrl?: string | undefined;
  /** Inline JWKS JSON (tests, air-gapped deployments). */
  readonly jwksJson?: string | undefined;
  readonly issuer?: string | undefined;
  readonly audience?: string | undefined;
  readonly clockSkewS: number;
}

/** The claim holding the grants: `{ "sse": { "subscribe": [...], "publish": [...], "admin": true } }`. */
export const GRANTS_CLAIM = 'sse';

const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export class InvalidTokenError extends Error {
  override readonly name = 'InvalidTokenError';
}

export class TokenVerifier {
  readonly #options: TokenVerifierOptions;
  readonly #keys: Array<{ key: Uint8Array | KeyObject | JWTVerifyGetKey; algorithms: string[] }> = [];
  #ready: Promise<void> | undefined;

  constructor(options: TokenVerifierOptions) {
    this.#options = options;
  }

  /** True when at least one key source is configured: the gateway is then closed by default. */
  get configured(): boolean {
    const o = this.#options;
    return Boolean(o.secret || o.publicKeyPem || o.jwksUrl || o.jwksJson);
  }

  async verify(token: string, source: Principal['source']): Promise<Principal> {
    this.#ready ??= this.#loadKeys();
    await this.#ready;
    let lastError: unknown;
    for (const { key, algorithms } of this.#keys) {
      try {
        const { payload } = await jwtVerify(token, key as Uint8Array, {
          algorithms,
          issuer: this.#options.issuer,
          audience: this.#options.audience,
          clockTolerance: this.#options.clockSkewS,
        });
        return principalFromPayload(payload, source, this.#options.clockSkewS);
      } catch (error) {
        lastError = error;
      }
    }
    throw new InvalidTokenError(describe(lastError));
  }

  async #loadKeys(): Promise<void> {
    const o = this.#options;
    if (o.secret) this.#keys.push({ key: new TextEncoder().encode(o.secret), algorithms: HMAC_ALGORITHMS });
    if (o.publicKeyPem) {
      const pem = o.publicKeyPem.replaceAll('\\n', '\n');
      const algorithm = pem.includes('BEGIN PUBLIC KEY') ? await guessAlgorithm(pem) : 'RS256';
      this.#keys.push({ key: await importSPKI(pem, algorithm), algorithms: [algorithm] });
    }
    if (o.jwksJson)
      this.#keys.push({ key: createLocalJWKSet(JSON.parse(o.jwksJson)), algorithms: ASYMMETRIC_ALGORITHMS });
    if (o.jwksUrl) this.#keys.push({ key: createRemoteJWKSet(new URL(o.jwksUrl)), algorithms: ASYMMETRIC_ALGORITHMS });
  }
}

/** `clockSkewS` extends the expiry the same way it extends acceptance: a token accepted is not cut at once. */
export function principalFromPayload(payload: JWTPayload, source: Principal['source'], clockSkewS = 0): Principal {
  const claim = (payload[GRANTS_CLAIM] ?? {}) as { subscribe?: unknown; publish?: unknown; admin?: unknown };
  const sub = typeof payload.sub === 'string' ? payload.sub : undefined;
  const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : typeof value === 'string' ? [value] : []);
  return {
    sub,
    subscribe: compileGrants(list(claim.subscribe), { sub }),
    publish: compileGrants(list(claim.publish), { sub }),
    admin: claim.admin === true,
    expiresAt: typeof payload.exp === 'number' ? (payload.exp + clockSkewS) * 1000 : Number.POSITIVE_INFINITY,
    source,
  };
}

/** PEM SPKI keys do not name their algorithm: try the common ones. */
async function guessAlgorithm(pem: string): Promise<string> {
  for (const algorithm of ['RS256', 'ES256', 'ES384', 'ES512', 'EdDSA']) {
    try {
      await importSPKI(pem, algorithm);
      return algorithm;
    } catch {}
  }
  throw new Error('AUTH_JWT_PUBLIC_KEY is not an RSA, EC or Ed25519 public key in PEM (SPKI) form');
}

function describe(error: unknown): string {
  const code = (error as { code?: string } | undefined)?.code;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'the token has expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return `the token's ${(error as { claim?: string }).claim ?? 'claims'} claim is not accepted`;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'the token signature does not verify';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'the token algorithm is not accepted';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return 'the token is malformed';
    default:
      return 'the token is not valid';
  }
}
