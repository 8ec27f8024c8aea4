#!/usr/bin/env node
/**
 * `pnpm cluster`: redis-server + 3 gateways + HAProxy on loopback, and the ticker worker publishing `tick`
 * to `clock` every 2 s (TICKER=0 leaves it out), like docker compose; Ctrl-C stops all.
 * `pnpm cluster:redis-cluster` (REDIS_TOPOLOGY=cluster) runs a 3+3 Redis Cluster instead of one redis-server.
 * HAProxy also serves HTTPS with HTTP/2 on LB_TLS_PORT (8443) with TLS_PEM (chain + key) or a generated
 * self-signed development certificate. Each gateway's admin listener (metrics, stats, dashboard) is on
 * ADMIN_BASE_PORT + k (9181, 9182, 9183).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startLocalCluster } from './local-cluster.js';

const gateways = Number(process.env.GATEWAYS ?? 3);
const port = Number(process.env.LB_PORT ?? 8080);
const tlsPort = Number(process.env.LB_TLS_PORT ?? 8443);
const adminBasePort = Number(process.env.ADMIN_BASE_PORT ?? 9181);

const cluster = await startLocalCluster({
  gateways,
  port,
  tlsPort,
  adminBasePort,
  ...(process.env.TLS_PEM ? { tlsPemPath: process.env.TLS_PEM } : {}),
  output: 'inherit',
  ...(process.env.REDIS_URL ? { redisUrl: process.env.REDIS_URL } : {}),
  redisTopology: process.env.REDIS_TOPOLOGY === 'cluster' ? 'cluster' : 'single',
  env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
}).catch((error: unknown) => {
  process.stderr.write(`could not start the cluster: ${(error as Error).message}\n`);
  process.exit(1);
});

let ticker: ChildProcess | undefined;
if (process.env.TICKER !== '0') {
  ticker = spawn(process.execPath, [fileURLToPath(new URL('../examples/ticker.js', import.meta.url))], {
    env: { ...process.env, REDIS_URL: cluster.redisUrl, TICK_MS: process.env.TICK_MS ?? '2000' },
    stdio: 'ignore',
  });
}

process.stdout.write(
  [
    '',
    `load balancer  ${cluster.url}   (HAProxy, health checks on /readyz)`,
    `               ${cluster.tlsUrl}  (HTTPS, HTTP/2 for browsers${process.env.TLS_PEM ? '' : '; self-signed development certificate'})`,
    ...cluster.nodes.map(
      (node) => `${node.name.padEnd(14)} ${node.url}   admin ${node.adminUrl}/dashboard   pid ${node.pid}`,
    ),
    `redis          ${cluster.redisUrl}`,
    ...(ticker ? [`ticker         publishes "tick" to topic "clock" every ${process.env.TICK_MS ?? 2000} ms`] : []),
    '',
    `try: curl -N '${cluster.url}/events?topic=clock'`,
    `     curl -X POST ${cluster.url}/publish -H 'content-type: application/json' -d '{"topic":"clock","event":"tick","data":"hi"}'`,
    `     open ${cluster.url}/demo`,
    `     open ${cluster.nodes[0]?.adminUrl}/dashboard   (the cluster at a glance)`,
    `scrape: the admin ports above serve /metrics (deploy/prometheus.yml lists them for pnpm cluster)`,
    'Ctrl-C stops everything.',
    '',
  ].join('\n'),
);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    process.stdout.write('\nstopping the cluster...\n');
    ticker?.kill('SIGTERM');
    cluster.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
