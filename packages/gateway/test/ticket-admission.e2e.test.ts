/**
 * A single-use ticket is spent only when its stream is admitted: a stream refused by a limit (which the
 * load balancer retries elsewhere) must not burn the ticket the browser's EventSource URL carries.
 */
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsUrl, startTestGateway, type TestGateway } from './support/gateway.js';

const SECRET = 'a-test-secret-of-at-least-32-characters!!';

describe('tickets and admission limits', () => {
  let gateway: TestGateway;
  let token: string;

  beforeAll(async () => {
    gateway = await startTestGateway({ authJwtSecret: SECRET, maxConnectionsPerClient: 1 });
    token = await new SignJWT({ sse: { subscribe: ['t/*'] } })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
  });

  afterAll(async () => {
    await gateway?.close();
  });

  it('keeps a ticket usable when its stream was refused by a limit', async () => {
    const first = await fetch(eventsUrl(gateway.url, 't/1'), { headers: { Authorization: `Bearer ${token}` } });
    expect(first.status).toBe(200);
    const minted = await fetch(`${gateway.url}/tickets`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ topics: ['t/1'] }),
    });
    const { ticket } = (await minted.json()) as { ticket: string };

    const refused = await fetch(eventsUrl(gateway.url, 't/1', { ticket }));
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('too_many_connections');

    await first.body?.cancel();
    let admitted: Response | undefined;
    for (let attempt = 0; attempt < 200 && admitted?.status !== 200; attempt++) {
      // The first stream's slot is released when its socket closes: retry until it has.
      await admitted?.body?.cancel();
      admitted = await fetch(eventsUrl(gateway.url, 't/1', { ticket }));
      if (admitted.status !== 200) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(admitted?.status).toBe(200);
    await admitted?.body?.cancel();

    // Spent now: once the admitted stream's slot is free again (429 until its socket closed), a reuse is 401.
    let reused: Response | undefined;
    for (let attempt = 0; attempt < 200 && (reused === undefined || reused.status === 429); attempt++) {
      await reused?.body?.cancel();
      if (reused) await new Promise((resolve) => setTimeout(resolve, 25));
      reused = await fetch(eventsUrl(gateway.url, 't/1', { ticket }));
    }
    expect(reused?.status).toBe(401);
    await reused?.body?.cancel();
  });
});
