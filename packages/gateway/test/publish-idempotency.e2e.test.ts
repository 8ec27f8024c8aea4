/** POST /publish with an Idempotency-Key: a retried request stores its events once and answers the same ids. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closeAllCollectors,
  collect,
  eventsUrl,
  publish,
  startTestGateway,
  type TestGateway,
} from './support/gateway.js';
import { waitFor } from './support/wait.js';

let node: TestGateway;

beforeAll(async () => {
  node = await startTestGateway();
});

afterAll(async () => {
  closeAllCollectors();
  await node?.close();
});

describe('Idempotency-Key on POST /publish', () => {
  it('stores a retried single event once and answers the first id', async () => {
    const client = collect(eventsUrl(node.url, ['idem/single']));
    await waitFor(() => client.opens > 0, { what: 'the stream to open' });
    const headers = { 'idempotency-key': 'order-42-created' };
    const first = await publish(node.url, { topic: 'idem/single', data: 'created' }, headers);
    const retry = await publish(node.url, { topic: 'idem/single', data: 'created' }, headers);
    const other = await publish(node.url, { topic: 'idem/single', data: 'next' });
    expect([first.status, retry.status, other.status]).toEqual([200, 200, 200]);
    expect(retry.body.id).toBe(first.body.id);
    await waitFor(() => client.events.length >= 2, { what: 'two events' });
    expect(client.events.map((event) => event.data)).toEqual(['created', 'next']);
  });

  it('maps a retried batch onto the same events, one key per position in the batch', async () => {
    const batch = [
      { topic: 'idem/batch', data: 'a' },
      { topic: 'idem/batch', data: 'b' },
    ];
    const headers = { 'idempotency-key': 'import-7' };
    const first = await publish(node.url, batch, headers);
    const retry = await publish(node.url, batch, headers);
    expect(retry.body.ids).toEqual(first.body.ids);
    expect(new Set(first.body.ids).size).toBe(2);
  });

  it.each([
    ['an empty key', ''],
    ['a key with a space', 'a b'],
    ['a key that is too long', 'k'.repeat(191)],
  ])('refuses %s with a JSON 400 and stores nothing', async (_name, key) => {
    const topic = `idem/bad/${key.length}-${key.includes(' ')}`;
    const refused = await publish(node.url, { topic, data: 'x' }, { 'idempotency-key': key });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: { code: 'invalid_idempotency_key' } });
    expect((await publish(node.url, { topic, data: 'probe' })).status).toBe(200);
    // Replayed from the origin: history holds the probe alone.
    const client = collect(eventsUrl(node.url, [topic]), { lastEventId: ':0-0', lastEventIdVia: 'query' });
    await waitFor(() => client.events.length >= 1, { what: 'the replayed probe' });
    expect(client.events.map((event) => event.data)).toEqual(['probe']);
  });
});
