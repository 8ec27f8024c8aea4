/** POST /publish: validates, stores through the engine, answers with the assigned id(s). */
import { formatPosition } from '@sse-gateway/publisher-sdk/protocol';
import type { Context } from 'hono';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { type Engine, PublishOutcomeUnknownError, type PublishRequest } from '../engine/engine.js';
import type { GatewayMetrics } from '../metrics.js';
import { type Access, requireJsonBody } from './auth/access.js';
import { GatewayError } from './errors.js';
import { parsePublishBody } from './publish-request.js';
import { requestHeader } from './request-header.js';
import { viewOfContext } from './request-view.js';

export interface PublishRouteDeps {
  readonly config: Config;
  readonly engine: Engine;
  readonly metrics: GatewayMetrics;
  readonly access: Access;
  readonly logger: Logger;
}

export function createPublishRoute(deps: PublishRouteDeps) {
  const { config, engine, metrics, access } = deps;
  const log = deps.logger.child({ mod: 'publish' });
  return async (c: Context) => {
    const view = viewOfContext(c);
    // Credentials first, then the body: a caller without them learns nothing about what would pass.
    const principal = await access.authenticatePublisher(view);
    requireJsonBody(view);
    const parsed = parsePublishBody(await c.req.text(), config);
    access.authorizePublish(principal, [...new Set(parsed.events.map((event) => event.topic))]);
    const events = withIdempotencyKeys(parsed.events, parsed.batch, requestHeader(c, 'idempotency-key'));
    if (!engine.isReady()) {
      throw new GatewayError(503, 'engine_unavailable', 'the event store is unreachable; nothing was stored', {
        'Retry-After': '1',
      });
    }
    const stopTimer = metrics.publishSeconds.startTimer();
    let positions: Awaited<ReturnType<Engine['publish']>>;
    try {
      positions = await engine.publish(events);
    } catch (error) {
      log.warn({ err: error, events: events.length }, 'publish failed');
      if (error instanceof PublishOutcomeUnknownError) {
        throw new GatewayError(
          504,
          'outcome_unknown',
          'the event store did not answer: the event may or may not be stored; retry with the same Idempotency-Key',
          { 'Retry-After': '1' },
        );
      }
      throw new GatewayError(503, 'engine_unavailable', 'the event could not be stored; nothing was stored', {
        'Retry-After': '1',
      });
    } finally {
      stopTimer();
    }
    metrics.eventsPublished.inc(positions.length);
    const ids = positions.map(formatPosition);
    return c.json(parsed.batch ? { ids } : { id: ids[0], ids });
  };
}

/** Longest Idempotency-Key header: batch items add `:<index>`, and the stored key may hold 200 characters. */
export const MAX_IDEMPOTENCY_KEY_HEADER_LENGTH = 190;
const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]+$/;

/**
 * An `Idempotency-Key` makes a retried request store its events once: a single event uses the key as is,
 * the events of a batch use `<key>:<index>`, so a retried batch maps onto the same events.
 */
function withIdempotencyKeys(events: PublishRequest[], batch: boolean, key: string | undefined): PublishRequest[] {
  if (key === undefined) return events;
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_HEADER_LENGTH || !IDEMPOTENCY_KEY_PATTERN.test(key)) {
    throw new GatewayError(
      400,
      'invalid_idempotency_key',
      `Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY_HEADER_LENGTH} visible ASCII characters without spaces`,
    );
  }
  return events.map((event, index) => ({ ...event, idempotencyKey: batch ? `${key}:${index}` : key }));
}
