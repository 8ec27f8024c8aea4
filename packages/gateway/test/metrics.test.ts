/** Metric names and types as exported: what dashboards and alerts rely on. */
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../src/metrics.js';

async function exported() {
  const metrics = createMetrics();
  let refills = 3;
  metrics.observe({
    connections: () => 2,
    topics: () => 1,
    eventsDelivered: () => 7,
    eventsReceived: () => 5,
    engineReady: () => true,
    engineStats: () => ({ refills, roundTrips: 10 }),
  });
  const text = async () => metrics.registry.metrics();
  return { text, bump: () => refills++ };
}

describe('metrics', () => {
  it("names Node's process metrics with one prefix, not sse_gateway_process_process_*", async () => {
    const { text } = await exported();
    const body = await text();
    expect(body).toContain('sse_gateway_process_cpu_seconds_total');
    expect(body).toContain('sse_gateway_nodejs_heap_size_used_bytes');
    expect(body).not.toContain('process_process');
  });

  it('exports the events written to clients as a counter', async () => {
    const { text } = await exported();
    const body = await text();
    expect(body).toContain('# TYPE sse_gateway_events_delivered_total counter');
    expect(body).toContain('sse_gateway_events_delivered_total 7');
    expect(body).toContain('# TYPE sse_gateway_events_received_total counter');
    expect(body).toContain('sse_gateway_events_received_total 5');
  });

  it('exports stream lifetimes by reason and replay lengths by source as histograms', async () => {
    const metrics = createMetrics();
    metrics.connectionSeconds.observe({ reason: 'client-closed' }, 42);
    metrics.replayLength.observe({ source: 'tail' }, 100);
    const body = await metrics.registry.metrics();
    expect(body).toContain('# TYPE sse_gateway_connection_duration_seconds histogram');
    expect(body).toContain('sse_gateway_connection_duration_seconds_bucket{le="60",reason="client-closed"} 1');
    expect(body).toContain('# TYPE sse_gateway_replay_events histogram');
    expect(body).toContain('sse_gateway_replay_events_bucket{le="100",source="tail"} 1');
  });

  it('exports the engine counters as a counter, current at each scrape', async () => {
    const { text, bump } = await exported();
    const first = await text();
    expect(first).toContain('# TYPE sse_gateway_engine_events_total counter');
    expect(first).toContain('sse_gateway_engine_events_total{counter="refills"} 3');
    bump();
    expect(await text()).toContain('sse_gateway_engine_events_total{counter="refills"} 4');
  });
});
