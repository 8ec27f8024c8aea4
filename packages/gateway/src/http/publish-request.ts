/** Validates a publish body: one event object or an array of them. Pure; errors are GatewayErrors. */
import { DEFAULT_EVENT, dataToText, eventNameProblem, topicProblem } from '@sse-gateway/publisher-sdk/protocol';
import type { PublishRequest } from '../engine/engine.js';
import { GatewayError } from './errors.js';

const KNOWN_FIELDS = new Set(['topic', 'event', 'data']);

export interface PublishLimits {
  readonly maxBatchSize: number;
  readonly maxPayloadBytes: number;
}

export interface ParsedPublish {
  readonly batch: boolean;
  readonly events: PublishRequest[];
}

export function parsePublishBody(text: string, limits: PublishLimits): ParsedPublish {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new GatewayError(400, 'invalid_json', `the body is not valid JSON: ${(error as Error).message}`);
  }
  const batch = Array.isArray(body);
  const items: unknown[] = batch ? (body as unknown[]) : [body];
  if (items.length === 0) throw new GatewayError(400, 'empty_batch', 'the batch holds no events');
  if (items.length > limits.maxBatchSize) {
    throw new GatewayError(413, 'batch_too_large', `a batch may hold at most ${limits.maxBatchSize} events`);
  }
  return { batch, events: items.map((item, index) => parseItem(item, batch ? `[${index}]` : '', limits)) };
}

function parseItem(item: unknown, where: string, limits: PublishLimits): PublishRequest {
  const at = where ? ` at ${where}` : '';
  if (!item || typeof item !== 'object' || Array.isArray(item)) {
    throw new GatewayError(400, 'invalid_body', `expected an object {"topic", "event", "data"}${at}`);
  }
  const fields = item as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!KNOWN_FIELDS.has(key)) {
      throw new GatewayError(
        400,
        'unknown_field',
        `unknown field ${JSON.stringify(key)}${at}; expected topic, event, data`,
      );
    }
  }
  const topicError = topicProblem(fields.topic);
  if (topicError) throw new GatewayError(400, 'invalid_topic', `${topicError}${at}`);
  const event = fields.event ?? DEFAULT_EVENT;
  const eventError = eventNameProblem(event);
  if (eventError) throw new GatewayError(400, 'invalid_event', `${eventError}${at}`);
  const data = dataToText(fields.data);
  if (Buffer.byteLength(data) > limits.maxPayloadBytes) {
    throw new GatewayError(413, 'payload_too_large', `data is larger than ${limits.maxPayloadBytes} bytes${at}`);
  }
  return { topic: fields.topic as string, event: event as string, data };
}
