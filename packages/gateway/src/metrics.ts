/** Prometheus metrics of one node; the hub and routes count in bulk, never per delivered socket write. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface GatewayMetrics {
  readonly registry: Registry;
  readonly eventsPublished: Counter;
  readonly replays: Counter;
  readonly replayedEvents: Counter;
  readonly resets: Counter<'reason'>;
  readonly disconnects: Counter<'reason'>;
  readonly writeTimeouts: Counter;
  readonly rejectedRequests: Counter<'code'>;
  readonly publishSeconds: Histogram;
  /** How long streams lasted, by why they ended. */
  readonly connectionSeconds: Histogram<'reason'>;
  /** Events replayed per resumed topic of a stream, by where they came from (the node's tail or history). */
  readonly replayLength: Histogram<'source'>;
  /** Registers gauges read at scrape time. */
  observe(read: {
    connections: () => number;
    topics: () => number;
    eventsDelivered: () => number;
    eventsReceived: () => number;
    engineReady: () => boolean;
    engineStats: () => Readonly<Record<string, number>>;
  }): void;
}

export function createMetrics(): GatewayMetrics {
  const registry = new Registry();
  // Node's own metrics keep their names after the prefix: sse_gateway_process_cpu_seconds_total, sse_gateway_nodejs_*.
  collectDefaultMetrics({ register: registry, prefix: 'sse_gateway_' });
  const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name: `sse_gateway_${name}`, help, labelNames, registers: [registry] });
  return {
    registry,
    eventsPublished: counter('events_published_total', 'Events stored through this node'),
    replays: counter('replays_total', 'Connections that resumed from history'),
    replayedEvents: counter('replayed_events_total', 'Events written from history to resuming clients'),
    resets: counter('resets_total', 'Reset events sent because history could not serve a resume point', ['reason']),
    disconnects: counter('disconnects_total', 'Closed client connections by reason', ['reason']),
    writeTimeouts: counter('write_timeouts_total', 'Writes that made no progress within the write timeout'),
    rejectedRequests: counter('rejected_requests_total', 'Requests answered with a 4xx/503 error', ['code']),
    publishSeconds: new Histogram({
      name: 'sse_gateway_publish_duration_seconds',
      help: 'Time to store a publish request in history',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    connectionSeconds: new Histogram({
      name: 'sse_gateway_connection_duration_seconds',
      help: 'Lifetime of client streams, by why they closed',
      labelNames: ['reason'],
      buckets: [1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600],
      registers: [registry],
    }),
    replayLength: new Histogram({
      name: 'sse_gateway_replay_events',
      help: "Events replayed per resumed topic, from the node's recent tail or from history",
      labelNames: ['source'],
      buckets: [0, 1, 10, 50, 100, 500, 1000, 5000, 10000],
      registers: [registry],
    }),
    observe(read) {
      const gauge = (name: string, help: string, collect: (g: Gauge) => void) =>
        new Gauge({
          name: `sse_gateway_${name}`,
          help,
          registers: [registry],
          collect() {
            collect(this);
          },
        });
      gauge('connections', 'Open client connections', (g) => g.set(read.connections()));
      gauge('topics', 'Topics with at least one local connection', (g) => g.set(read.topics()));
      new Counter({
        name: 'sse_gateway_events_delivered_total',
        help: 'Event frames written to clients, live or replayed (not those queued, skipped or cut off)',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read.eventsDelivered());
        },
      });
      new Counter({
        name: 'sse_gateway_events_received_total',
        help: 'Publications this node received from the engine for topics it has consumers of (its fan-out input)',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read.eventsReceived());
        },
      });
      gauge('engine_ready', '1 when the engine (Redis) is reachable', (g) => g.set(read.engineReady() ? 1 : 0));
      // A counter (so rate() applies), copied from the engine's own monotonic counts at scrape time.
      new Counter({
        name: 'sse_gateway_engine_events_total',
        help: 'Engine counters since start: refills, resets, redisErrors, roundTrips, gapsDetected (Redis engine)',
        labelNames: ['counter'],
        registers: [registry],
        collect() {
          this.reset();
          for (const [name, value] of Object.entries(read.engineStats())) this.inc({ counter: name }, value);
        },
      });
    },
  };
}
