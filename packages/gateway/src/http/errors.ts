/** The one error type of the edge: a status and a stable code, rendered as `{ "error": { code, message } }`. */
import type { ContentfulStatusCode } from 'hono/utils/http-status';

export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    /** Extra response headers, e.g. Retry-After or Allow. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

export function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}
