/** POST /publish: validates, stores through the engine, answers with the assigned id(s). */
import { formatPosition } from '@sse-gateway/publisher-sdk/protocol';
import type { Context } from 'hono';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { GatewayMetrics } from '../metrics.js';
import type { Access } from './auth/access.js';
import { GatewayError } from './errors.js';
import { parsePublishBody } from './publish-request.js';

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
    const parsed = parsePublishBody(await c.req.text(), config);
    await access.authorizePublish(c, [...new Set(parsed.events.map((event) => event.topic))]);
    if (!engine.isReady()) {
      throw new GatewayError(503, 'engine_unavailable', 'the event store is unreachable; retry shortly', {
        'Retry-After': '1',
      });
    }
    const stopTimer = metrics.publishSeconds.startTimer();
    let positions: Awaited<ReturnType<Engine['publish']>>;
    try {
      positions = await engine.publish(parsed.events);
    } catch (error) {
      log.warn({ err: error, events: parsed.events.length }, 'publish failed');
      throw new GatewayError(503, 'engine_unavailable', 'the event could not be stored; retry shortly', {
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
