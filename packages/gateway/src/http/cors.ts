/**
 * CORS for explicit origins. Browsers' EventSource sends cookies cross-origin only with credentials,
 * which CORS allows only for an exact origin, never `*`: so `*` means "any origin, no credentials".
 */
import type { Config } from '../config.js';

const ALLOWED_METHODS = 'GET, POST, OPTIONS';
const ALLOWED_HEADERS = ['authorization', 'content-type', 'last-event-id', 'cache-control', 'idempotency-key'];
const PREFLIGHT_MAX_AGE_S = '600';

export class Cors {
  readonly #origins: ReadonlySet<string>;
  readonly #any: boolean;

  constructor(config: Pick<Config, 'corsOrigins'>) {
    this.#origins = new Set(config.corsOrigins.filter((origin) => origin !== '*'));
    this.#any = config.corsOrigins.includes('*');
  }

  get enabled(): boolean {
    return this.#any || this.#origins.size > 0;
  }

  isAllowed(origin: string): boolean {
    return this.#any || this.#origins.has(origin);
  }

  /** Headers for an actual (non-preflight) response; empty when the origin is not allowed. */
  responseHeaders(origin: string | undefined): Record<string, string> {
    if (!origin || !this.enabled) return {};
    if (this.#origins.has(origin)) {
      return { 'Access-Control-Allow-Origin': origin, 'Access-Control-Allow-Credentials': 'true', Vary: 'Origin' };
    }
    if (this.#any) return { 'Access-Control-Allow-Origin': '*' };
    return {};
  }

  preflightHeaders(origin: string, requestedHeaders: string | undefined): Record<string, string> {
    const allowed = (requestedHeaders ?? '')
      .split(',')
      .map((header) => header.trim().toLowerCase())
      .filter((header) => ALLOWED_HEADERS.includes(header));
    return {
      ...this.responseHeaders(origin),
      'Access-Control-Allow-Methods': ALLOWED_METHODS,
      'Access-Control-Allow-Headers': (allowed.length > 0 ? allowed : ALLOWED_HEADERS).join(', '),
      'Access-Control-Max-Age': PREFLIGHT_MAX_AGE_S,
    };
  }
}
