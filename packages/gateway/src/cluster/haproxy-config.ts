/** Renders deploy/haproxy.cfg.template: the one load-balancer config behind both compose and `pnpm cluster`. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface BackendServer {
  readonly name: string;
  readonly host: string;
  readonly port: number;
}

export interface HaproxyConfigOptions {
  /** `address:port` the balancer listens on (HTTP/1.1). */
  readonly bind: string;
  /** `address:port` of the HTTPS front end (h2 and HTTP/1.1 via ALPN). */
  readonly tlsBind: string;
  /** PEM file holding the front end's certificate chain and key. */
  readonly tlsCertPath: string;
  /** `address:port` of the stats/health frontend. */
  readonly statsBind: string;
  readonly servers: readonly BackendServer[];
  /** Concurrent connections HAProxy accepts; needs about twice as many open files. */
  readonly maxConnections: number;
  /** Extra words appended to every server line (compose adds `init-addr last,libc,none resolvers docker`). */
  readonly serverOptions?: string;
  /** Sections appended to the rendered config (compose adds Docker's DNS resolver). */
  readonly extraSections?: string;
}

/**
 * How long the template's health checks take to take a replica out once its /readyz answers 503: up to
 * `inter` (2 s) until the next check, then `fall - 1` more at `fastinter` (500 ms), plus slack for a
 * loaded machine. Gateways behind it run with this DRAIN_DELAY_MS, so no stream closes before.
 */
export const HAPROXY_TAKE_OUT_MS = 3500;

export const HAPROXY_TEMPLATE_PATH = fileURLToPath(new URL('../../../../deploy/haproxy.cfg.template', import.meta.url));

export function renderHaproxyConfig(
  options: HaproxyConfigOptions,
  template = readFileSync(HAPROXY_TEMPLATE_PATH, 'utf8'),
) {
  const servers = options.servers
    .map(
      (s) =>
        `    server ${s.name} ${s.host}:${s.port} check${options.serverOptions ? ` ${options.serverOptions}` : ''}`,
    )
    .join('\n');
  return template
    .replaceAll('{{BIND}}', options.bind)
    .replaceAll('{{TLS_BIND}}', options.tlsBind)
    .replaceAll('{{TLS_CERT}}', options.tlsCertPath)
    .replaceAll('{{STATS_BIND}}', options.statsBind)
    .replaceAll('{{MAXCONN}}', String(options.maxConnections))
    .replaceAll('{{SERVERS}}', servers)
    .concat(options.extraSections ? `\n${options.extraSections.trim()}\n` : '');
}

/** The compose variant: replicas found by Docker's DNS, re-resolved when a container restarts with a new address. */
export function renderComposeHaproxyConfig(template?: string): string {
  return renderHaproxyConfig(
    {
      bind: '*:8080',
      tlsBind: '*:8443',
      // Written by the compose service `certs` (a self-signed one unless a valid dev.pem is there already).
      tlsCertPath: '/usr/local/etc/haproxy/certs/dev.pem',
      maxConnections: 100_000,
      statsBind: '*:8404',
      servers: ['gateway1', 'gateway2', 'gateway3'].map((name) => ({ name, host: name, port: 8080 })),
      serverOptions: 'resolvers docker init-addr last,libc,none',
      extraSections: ['resolvers docker', '    nameserver dns 127.0.0.11:53', '    hold valid 5s'].join('\n'),
    },
    template,
  );
}
