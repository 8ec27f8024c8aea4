/**
 * Where Redis is: one server, a Sentinel-managed primary or a Cluster, read from a URL
 * (`redis://`, `redis+sentinel://`, `redis+cluster://` and their TLS `rediss` forms), and the one factory
 * that turns such a target into an ioredis client. The SDK's transport and the gateway both build their
 * clients here, so the two agree on protocol, TLS, failover and retry settings.
 */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { ValidationError } from './errors.js';

export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

export type RedisTarget =
  /** `redis://` or `rediss://`: auth, db and TLS stay in the URL, as ioredis reads it. */
  | { readonly kind: 'single'; readonly url: string }
  | {
      readonly kind: 'sentinel';
      readonly sentinels: readonly RedisAddress[];
      /** The master group name Sentinel knows the primary by. */
      readonly name: string;
      /** ACL user and password of the primary (not of the sentinels). */
      readonly username?: string;
      readonly password?: string;
      /** Password of the sentinels themselves, when they require one. */
      readonly sentinelPassword?: string;
      /** TLS to the primary and to the sentinels. */
      readonly tls: boolean;
      readonly db: number;
    }
  | {
      readonly kind: 'cluster';
      /** Startup nodes: any reachable subset of the cluster; the rest is discovered with CLUSTER SLOTS. */
      readonly nodes: readonly RedisAddress[];
      readonly username?: string;
      readonly password?: string;
      readonly tls: boolean;
    };

/** Port of a sentinel when its URL names none. */
export const DEFAULT_SENTINEL_PORT = 26379;
/** Port of a Redis server or cluster node when its URL names none. */
export const DEFAULT_REDIS_PORT = 6379;

const SINGLE_SCHEMES = new Set(['redis:', 'rediss:']);
const SCHEMES = 'redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://';
/** Host names and IPv4 addresses; IPv6 addresses come in brackets and are checked apart. */
const HOST_PATTERN = /^[A-Za-z0-9._-]+$/;
const IPV6_PATTERN = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9._~-]+)?$/;
const MAX_PORT = 65535;
/** The host part of a one-host URL (after the user info): a comma list there is a mistake worth naming. */
const SINGLE_HOSTS_PATTERN = /^[a-z]+:\/\/(?:[^/?#]*@)?([^/?#]*)/i;
/** The port of a one-host URL (after user info, host or [IPv6 address]), to name it when URL refuses it. */
const SINGLE_PORT_PATTERN = /^[a-z]+:\/\/(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*):([^/?#]*)/i;
/** Shown instead of a password in logs. */
const MASK = '***';

/**
 * Parses `redis://`, `rediss://`, `redis+sentinel://[user:pass@]h:p[,h:p...]/<name>[/<db>][?sentinelPassword=...]`,
 * `rediss+sentinel://...`, `redis+cluster://[user:pass@]h:p[,h:p...]` and `rediss+cluster://...`.
 * Sentinels default to port 26379, everything else to 6379; user, password, master name and
 * sentinelPassword are percent-decoded. Throws ValidationError saying exactly what is wrong.
 */
export function parseRedisUrl(url: string): RedisTarget {
  if (typeof url !== 'string' || url.trim() === '') throw new ValidationError('Redis URL is empty');
  const schemeEnd = url.indexOf('://');
  if (schemeEnd < 0) throw new ValidationError(`Redis URL ${quote(url)} has no scheme: expected ${SCHEMES}`);
  const scheme = url.slice(0, schemeEnd + 1).toLowerCase();
  if (SINGLE_SCHEMES.has(scheme)) return parseSingle(url, scheme);
  const match = /^(rediss?)\+(sentinel|cluster):$/.exec(scheme);
  if (!match) throw new ValidationError(`unknown Redis URL scheme ${scheme}//: expected ${SCHEMES}`);
  const tls = match[1] === 'rediss';
  const kind = match[2] as 'sentinel' | 'cluster';
  const parts = splitUrl(url.slice(schemeEnd + 3), `${scheme}//`);
  const auth = parseUserInfo(parts.userInfo, `${scheme}//`);
  const defaultPort = kind === 'sentinel' ? DEFAULT_SENTINEL_PORT : DEFAULT_REDIS_PORT;
  const addresses = parseHostList(parts.hosts, defaultPort, `${scheme}//`);
  const query = parseQuery(parts.query, `${scheme}//`);

  if (kind === 'cluster') {
    if (parts.path !== '' && parts.path !== '/') {
      throw new ValidationError(
        `${scheme}// URL has a path (${quote(parts.path)}); a Redis Cluster has only database 0, so leave it out`,
      );
    }
    const unknown = [...query.keys()];
    if (unknown.length > 0)
      throw new ValidationError(`${scheme}// URL takes no query parameters, got ${unknown.join(', ')}`);
    return { kind: 'cluster', nodes: addresses, ...auth, tls };
  }

  const segments = parts.path === '' ? [] : parts.path.slice(1).split('/');
  if (segments.at(-1) === '') segments.pop(); // a trailing slash
  const [rawName, rawDb, ...extra] = segments;
  if (rawName === undefined || rawName === '') {
    throw new ValidationError(
      `${scheme}// URL has no master name: put it in the path, as in ${scheme}//127.0.0.1:26379/mymaster`,
    );
  }
  const name = decode(rawName, 'master name', `${scheme}//`);
  if (extra.length > 0) {
    throw new ValidationError(`${scheme}// URL path must be /<master name>[/<db>], got ${quote(parts.path)}`);
  }
  let db = 0;
  if (rawDb !== undefined) {
    if (!/^\d{1,5}$/.test(rawDb)) {
      throw new ValidationError(`${scheme}// URL has a bad database number ${quote(rawDb)}: expected 0, 1, 2...`);
    }
    db = Number(rawDb);
  }
  let sentinelPassword: string | undefined;
  for (const [key, value] of query) {
    if (key !== 'sentinelPassword') {
      throw new ValidationError(`${scheme}// URL has an unknown query parameter ${quote(key)}: only sentinelPassword`);
    }
    sentinelPassword = value;
  }
  return {
    kind: 'sentinel',
    sentinels: addresses,
    name,
    ...auth,
    ...(sentinelPassword === undefined ? {} : { sentinelPassword }),
    tls,
    db,
  };
}

/** The same target for logs, with every password replaced by `***`. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.kind === 'single') return maskSingleUrl(target.url);
  const scheme = `${target.tls ? 'rediss' : 'redis'}+${target.kind}://`;
  const user = target.username === undefined ? '' : encodeURIComponent(target.username);
  const userInfo = target.password !== undefined ? `${user}:${MASK}@` : user !== '' ? `${user}@` : '';
  const addresses = target.kind === 'sentinel' ? target.sentinels : target.nodes;
  const hosts = addresses.map(formatAddress).join(',');
  if (target.kind === 'cluster') return `${scheme}${userInfo}${hosts}`;
  const query = target.sentinelPassword === undefined ? '' : `?sentinelPassword=${MASK}`;
  return `${scheme}${userInfo}${hosts}/${encodeURIComponent(target.name)}/${target.db}${query}`;
}

export interface RedisClientOptions {
  /** CLIENT SETNAME of every connection (on a Cluster, of every node connection). */
  readonly connectionName: string;
  /**
   * ioredis options for each connection (for a Cluster they go into `redisOptions`), merged over the
   * factory's defaults (see {@link createRedisClient}). The target decides addresses, db and whether to
   * use TLS, and its user and password win over ones given here; a `tls` object here configures TLS (CA,
   * servername...) when the target asks for it. For a Cluster, `retryStrategy`, `enableOfflineQueue`,
   * `readOnly` and addresses are ignored: the Cluster sets them per node.
   */
  readonly redisOptions?: RedisOptions;
  /** Extra Cluster options (cluster targets only), merged over the factory's Cluster defaults. */
  readonly clusterOptions?: ClusterOptions;
}

/** Longest pause between two reconnect attempts, in ms. */
export const MAX_RECONNECT_DELAY_MS = 2000;
/** First reconnect delay, in ms; it doubles per attempt up to MAX_RECONNECT_DELAY_MS. */
const BASE_RECONNECT_DELAY_MS = 50;
/** Random extra per reconnect attempt, in ms, so many clients do not reconnect in lockstep. */
const RECONNECT_JITTER_MS = 50;
/**
 * How often a Cluster client re-reads the slot map, in ms. ioredis 6 documents 5000 as the default but
 * ships none, so without this a client only learns of a resharding or failover from MOVED replies.
 */
export const SLOTS_REFRESH_INTERVAL_MS = 5000;

/** Exponential backoff with jitter, capped: keeps reconnecting for the client's lifetime. */
export function reconnectDelay(attempt: number): number {
  return (
    Math.min(BASE_RECONNECT_DELAY_MS * 2 ** Math.min(attempt, 6), MAX_RECONNECT_DELAY_MS) +
    Math.random() * RECONNECT_JITTER_MS
  );
}

/**
 * One Redis, a Sentinel-managed primary or a Cluster, always on RESP2 (ioredis 6 defaults to RESP3, which
 * is untested here) and with TLS when the target says so.
 *
 * Defaults, which `redisOptions` may override, suit a publisher that queues while disconnected itself:
 * `enableOfflineQueue: false`, `autoResendUnfulfilledCommands: false` (a re-sent publish would be stored
 * twice), `maxRetriesPerRequest: null`, and a reconnect backoff of 50 ms doubling up to 2 s, forever.
 *
 * Sentinel: always role `master` with `failoverDetector: true`: without the detector a client learns of a
 * failover only when the old primary drops it, and keeps writing to a demoted master (whose writes the
 * next resync discards) for seconds. A READONLY reply also makes it reconnect and ask Sentinel again.
 *
 * Cluster: `retryDelayOnFailover: 0` (a command whose node connection dropped may have run; re-sending it
 * would store it twice), the offline queue on (commands to a node that is still connecting wait for it
 * instead of failing), slots re-read every 5 s, the same backoff for reconnecting the whole cluster.
 */
export function createRedisClient(target: RedisTarget, options: RedisClientOptions): Redis | Cluster {
  const connectionName = options.connectionName;
  const defaults: RedisOptions = {
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: null,
    retryStrategy: reconnectDelay,
  };
  // Whether to use TLS is the target's to say: TLS settings given here only shape it.
  const { tls, sentinelTLS, enableTLSForSentinelMode, ...given } = options.redisOptions ?? {};
  switch (target.kind) {
    case 'single': {
      // The URL goes first: ioredis lets URL settings win over the options object, as the URL is the target.
      const secure = target.url.startsWith('rediss:');
      return new Redis(target.url, {
        ...defaults,
        ...given,
        ...(secure ? { tls: tls ?? {} } : {}),
        connectionName,
        protocol: 2,
      });
    }
    case 'sentinel':
      return new Redis({
        ...defaults,
        reconnectOnError: reconnectOnReadOnly,
        ...given,
        sentinels: target.sentinels.map(({ host, port }) => ({ host, port })),
        name: target.name,
        role: 'master',
        failoverDetector: true,
        username: target.username ?? given.username,
        password: target.password ?? given.password,
        sentinelPassword: target.sentinelPassword ?? given.sentinelPassword,
        db: target.db,
        ...(target.tls
          ? {
              // enableTLSForSentinelMode: without it ioredis talks TLS to the sentinels only, and plain TCP
              // to the primary they name.
              tls: tls ?? {},
              sentinelTLS: sentinelTLS ?? tls ?? {},
              enableTLSForSentinelMode: true,
            }
          : {}),
        connectionName,
        protocol: 2,
      });
    case 'cluster': {
      // The Cluster sets these per node connection (no reconnect: it follows MOVED instead), and the slot
      // map decides the addresses.
      const { retryStrategy, enableOfflineQueue, readOnly, host, port, path, sentinels, himportFieldsets, ...perNode } =
        given;
      const { tls: clusterTls, ...extraPerNode } = options.clusterOptions?.redisOptions ?? {};
      const extra = options.clusterOptions ?? {};
      return new Cluster(
        target.nodes.map(({ host, port }) => ({ host, port })),
        {
          clusterRetryStrategy: reconnectDelay,
          enableOfflineQueue: true,
          retryDelayOnFailover: 0,
          slotsRefreshInterval: SLOTS_REFRESH_INTERVAL_MS,
          ...extra,
          redisOptions: {
            autoResendUnfulfilledCommands: false,
            ...perNode,
            ...extraPerNode,
            username: target.username ?? extraPerNode.username ?? perNode.username,
            password: target.password ?? extraPerNode.password ?? perNode.password,
            ...(target.tls ? { tls: clusterTls ?? tls ?? {} } : {}),
            connectionName,
            protocol: 2,
          },
        },
      );
    }
    default:
      throw new ValidationError(`unknown Redis target kind ${quote(String((target as { kind?: unknown }).kind))}`);
  }
}

/** Whether an ioredis client is a Cluster (whose live messages go out with SPUBLISH). */
export function isRedisCluster(client: Redis | Cluster): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

/** Whether `value` looks like a RedisTarget (rather than a URL or an ioredis client). */
export function isRedisTarget(value: unknown): value is RedisTarget {
  if (!value || typeof value !== 'object' || 'defineCommand' in value) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === 'single' || kind === 'sentinel' || kind === 'cluster';
}

// ---------------------------------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------------------------------

/** A demoted master answers writes with READONLY: reconnect (through Sentinel), and reject the command. */
function reconnectOnReadOnly(error: Error): boolean {
  return error.message.startsWith('READONLY');
}

function parseSingle(original: string, scheme: string): RedisTarget {
  // ioredis turns TLS on for a literal `rediss://` only: REDISS:// would silently go out in plain text.
  const url = scheme + original.slice(scheme.length);
  const hosts = SINGLE_HOSTS_PATTERN.exec(url)?.[1] ?? '';
  if (hosts.includes(',')) {
    throw new ValidationError(
      `${scheme}// takes one host; for several use redis+sentinel:// or redis+cluster://, got ${quote(hosts)}`,
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    const port = SINGLE_PORT_PATTERN.exec(url)?.[1];
    if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) <= MAX_PORT)) {
      throw new ValidationError(`${scheme}// URL has a bad port ${quote(port)}: expected 1-65535`, { cause });
    }
    throw new ValidationError(`Redis URL ${quote(mask(url))} is not a valid URL`, { cause });
  }
  if (parsed.port === '0') throw new ValidationError(`${scheme}// URL has a bad port "0": expected 1-65535`);
  const path = parsed.pathname;
  if (path !== '' && path !== '/' && !/^\/\d{1,5}$/.test(path)) {
    throw new ValidationError(`${scheme}// URL path must be a database number (/0, /1...), got ${quote(path)}`);
  }
  // The factory pins RESP2; a URL parameter would silently win over it (ioredis prefers URL settings).
  if (parsed.searchParams.has('protocol')) {
    throw new ValidationError('Redis URL must not set protocol: the SDK always speaks RESP2');
  }
  return { kind: 'single', url };
}

interface UrlParts {
  readonly userInfo: string | undefined;
  readonly hosts: string;
  readonly path: string;
  readonly query: string;
}

/** `[userinfo@]hosts[/path][?query]`: the authority ends at the first `/`, `?` or `#`, as in RFC 3986. */
function splitUrl(rest: string, scheme: string): UrlParts {
  if (rest.includes('#')) throw new ValidationError(`${scheme} URL has a #fragment (percent-encode # in passwords)`);
  const authorityEnd = rest.search(/[/?]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  const queryStart = tail.indexOf('?');
  const path = queryStart < 0 ? tail : tail.slice(0, queryStart);
  const query = queryStart < 0 ? '' : tail.slice(queryStart + 1);
  // The last @: a raw @ in a password is a common mistake, and the host part never contains one.
  const at = authority.lastIndexOf('@');
  return {
    userInfo: at < 0 ? undefined : authority.slice(0, at),
    hosts: at < 0 ? authority : authority.slice(at + 1),
    path,
    query,
  };
}

function parseUserInfo(userInfo: string | undefined, scheme: string): { username?: string; password?: string } {
  if (userInfo === undefined) return {};
  const colon = userInfo.indexOf(':');
  const rawUser = colon < 0 ? userInfo : userInfo.slice(0, colon);
  const rawPassword = colon < 0 ? undefined : userInfo.slice(colon + 1);
  const auth: { username?: string; password?: string } = {};
  if (rawUser !== '') auth.username = decode(rawUser, 'user name', scheme);
  if (rawPassword !== undefined && rawPassword !== '') auth.password = decode(rawPassword, 'password', scheme);
  return auth;
}

function parseHostList(hosts: string, defaultPort: number, scheme: string): RedisAddress[] {
  if (hosts === '') throw new ValidationError(`${scheme} URL has no hosts: expected host:port[,host:port...]`);
  return hosts.split(',').map((entry, index) => {
    if (entry === '') {
      throw new ValidationError(`${scheme} URL has an empty host list entry (number ${index + 1} in ${quote(hosts)})`);
    }
    return parseAddress(entry, defaultPort, scheme);
  });
}

function parseAddress(entry: string, defaultPort: number, scheme: string): RedisAddress {
  let host: string;
  let portText: string | undefined;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    host = close < 0 ? '' : entry.slice(1, close);
    const after = close < 0 ? '' : entry.slice(close + 1);
    if (close < 0 || !IPV6_PATTERN.test(host) || (after !== '' && !after.startsWith(':'))) {
      throw new ValidationError(`${scheme} URL has a bad IPv6 address ${quote(entry)}: expected [addr]:port`);
    }
    portText = after === '' ? undefined : after.slice(1);
  } else {
    const colon = entry.lastIndexOf(':');
    host = colon < 0 ? entry : entry.slice(0, colon);
    portText = colon < 0 ? undefined : entry.slice(colon + 1);
    if (host === '') throw new ValidationError(`${scheme} URL has an empty host in ${quote(entry)}`);
    if (!HOST_PATTERN.test(host)) throw new ValidationError(`${scheme} URL has a bad host ${quote(host)}`);
  }
  if (portText === undefined) return { host, port: defaultPort };
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= 1 && port <= MAX_PORT)) {
    throw new ValidationError(`${scheme} URL has a bad port ${quote(portText)} in ${quote(entry)}: expected 1-65535`);
  }
  return { host, port };
}

/** Query parameters, percent-decoded exactly (no `+` for space: passwords keep their plus signs). */
function parseQuery(query: string, scheme: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query === '') return params;
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    const key = decode(equals < 0 ? pair : pair.slice(0, equals), 'query parameter', scheme);
    const value = equals < 0 ? '' : decode(pair.slice(equals + 1), `query parameter ${key}`, scheme);
    params.set(key, value);
  }
  return params;
}

function decode(text: string, what: string, scheme: string): string {
  try {
    return decodeURIComponent(text);
  } catch (cause) {
    throw new ValidationError(`${scheme} URL has a ${what} that is not valid percent-encoding`, { cause });
  }
}

function formatAddress({ host, port }: RedisAddress): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A single-server URL with its password (in the user info or a `password` parameter) masked. */
function maskSingleUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return mask(url);
  }
  if (parsed.password !== '') parsed.password = MASK;
  for (const key of [...parsed.searchParams.keys()]) {
    if (/pass/i.test(key)) parsed.searchParams.set(key, MASK);
  }
  // URLSearchParams re-encodes * as %2A; the mask is meant to be read.
  return parsed.href.replaceAll('%2A%2A%2A', MASK);
}

/** Best effort for a URL that does not parse: hide whatever sits between `:` and `@` of the user info. */
function mask(url: string): string {
  return url.replace(/^([a-z+]+:\/\/[^:/@]*:)[^@/]*@/i, `$1${MASK}@`);
}

function quote(text: string): string {
  return JSON.stringify(text);
}
