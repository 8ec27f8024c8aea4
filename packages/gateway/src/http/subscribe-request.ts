/** Validates what a subscriber asks for: its topics and its resume point. Pure; errors are GatewayErrors. */
import {
  MAX_TOPIC_ID_LENGTH,
  MULTI_TOPIC_SEPARATOR,
  type Position,
  parsePosition,
  topicProblem,
} from '@sse-gateway/publisher-sdk/protocol';
import { GatewayError } from './errors.js';

/** Sorted and de-duplicated, so a multi-topic id lines up with the same topics on every reconnect. */
export function parseTopics(values: readonly string[] | undefined, maxTopics: number): string[] {
  if (!values || values.length === 0) {
    throw new GatewayError(400, 'missing_topic', 'add at least one topic: /events?topic=orders/42');
  }
  const topics = [...new Set(values)].sort();
  if (topics.length > maxTopics) {
    throw new GatewayError(400, 'too_many_topics', `a connection may follow at most ${maxTopics} topics`);
  }
  for (const topic of topics) {
    const problem = topicProblem(topic);
    if (problem) throw new GatewayError(400, 'invalid_topic', `${problem}: ${JSON.stringify(topic.slice(0, 60))}`);
  }
  return topics;
}

/**
 * Parses a Last-Event-ID into one position per topic. An id the gateway could never have issued for
 * these topics is a 400; a well-formed one that history cannot serve is the hub's business (reset event).
 */
export function parseLastEventId(text: string | undefined, topics: readonly string[]): Position[] | undefined {
  if (text === undefined || text === '') return undefined;
  if (text.length > topics.length * (MAX_TOPIC_ID_LENGTH + 1)) {
    throw new GatewayError(400, 'invalid_last_event_id', 'Last-Event-ID is longer than any id this gateway issues');
  }
  const parts = text.split(MULTI_TOPIC_SEPARATOR);
  if (parts.length !== topics.length) {
    throw new GatewayError(
      400,
      'invalid_last_event_id',
      `Last-Event-ID holds ${parts.length} position(s) but the request follows ${topics.length} topic(s)`,
    );
  }
  return parts.map((part) => {
    const position = parsePosition(part);
    if (!position) {
      throw new GatewayError(400, 'invalid_last_event_id', 'Last-Event-ID is not an id issued by this gateway');
    }
    return position;
  });
}

/**
 * The body of POST /tickets: `{"topics": [...]}`, the topics of the one EventSource URL the ticket will
 * open (validated like /events topics).
 */
export function parseTicketTopics(body: string, maxTopics: number): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new GatewayError(400, 'invalid_json', 'the body must be JSON: {"topics": ["orders/42"]}');
  }
  const topics = (parsed as { topics?: unknown } | null)?.topics;
  if (!Array.isArray(topics) || topics.some((topic) => typeof topic !== 'string')) {
    throw new GatewayError(400, 'invalid_body', 'expected {"topics": [...]}: the topics the ticket is for');
  }
  return parseTopics(topics as string[], maxTopics);
}
