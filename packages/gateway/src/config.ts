/**
 * The only reader of process.env: every setting, its env var, default and documentation in one table,
 * parsed into a frozen Config. Every invalid setting is reported together at boot.
 */
import { createPublicKey } from 'node:crypto';
import { availableParallelism, hostname } from 'node:os';
import { DEFAULT_KEY_PREFIX } from '@sse-gateway/publisher-sdk/protocol';
import { parseRedisUrl, type RedisTarget } from '@sse-gateway/publisher-sdk/redis-target';
import { loadTlsFiles, TlsFilesError } from './server/tls-files.js';

export interface Config {
  /** TCP port. Default 8080. */
  readonly port: number;
  /** Interface to bind. Default 127.0.0.1 (set 0.0.0.0 in containers). */
  readonly host: string;
  /**
   * Redis URL: `redis://`, `rediss://`, `redis+sentinel://h:p,h:p/<name>`, `redis+cluster://h:p,h:p` (and the
   * `rediss+` TLS forms). Unset, with no REDIS_SENTINELS or REDIS_CLUSTER_NODES = the embedded engine (one node).
   */
  readonly redisUrl: string | undefined;
  /** Sentinels `host:port,...` (with REDIS_SENTINEL_NAME), instead of a redis+sentinel:// URL. */
  readonly redisSentinels: string | undefined;
  /** Master group name known to the sentinels. */
  readonly redisSentinelName: string | undefined;
  /** Password of the sentinels themselves, when they require one. */
  readonly redisSentinelPassword: string | undefined;
  /** Cluster startup nodes `host:port,...`, instead of a redis+cluster:// URL. */
  readonly redisClusterNodes: string | undefined;
  /** ACL user for REDIS_SENTINELS / REDIS_CLUSTER_NODES, and for a URL that names none. */
  readonly redisUsername: string | undefined;
  /** Password for REDIS_SENTINELS / REDIS_CLUSTER_NODES, and for a URL that names none. */
  readonly redisPassword: string | undefined;
  /** TLS to the nodes named by REDIS_SENTINELS / REDIS_CLUSTER_NODES (a URL says it with rediss). Default false. */
  readonly redisTls: boolean;
  /** Prefix of every Redis key and channel. Default `sse:`. */
  readonly redisPrefix: string;
  /** A Redis connection whose PING goes unanswered this long makes the node unready and is reconnected. Default 2000. */
  readonly redisHealthTimeoutMs: number;
  /** A topic's Redis keys expire after this long without a publish; 0 = never. Default 0. Publishers must match. */
  readonly topicIdleTtlMs: number;
  /** A publish answers 200 only once this many replicas have it (Redis WAIT); 0 = do not wait. Default 0. */
  readonly publishMinReplicas: number;
  /** Longest wait for PUBLISH_MIN_REPLICAS; past it the publish answers 504 outcome_unknown. Default 1000. */
  readonly publishReplicaTimeoutMs: number;
  /** pino level. Default info. */
  readonly logLevel: string;
  /** Reconnect delay hinted to clients with `retry:`. Default 3000. */
  readonly retryMs: number;
  /** Extra random share of retryMs added per connection (0.5 = up to +50%), so reconnects spread out. */
  readonly retryJitter: number;
  /** Interval of the comment heartbeat. Default 15000. */
  readonly heartbeatMs: number;
  /** A write that makes no progress for this long is a timeout. Default 2000. */
  readonly writeTimeoutMs: number;
  /** Whether a write timeout closes the connection (the client resumes from history). Default true. */
  readonly closeOnWriteTimeout: boolean;
  /** Close a connection that received no event for this long; 0 = never. Default 30 min. */
  readonly idleTimeoutMs: number;
  /** Close connections older than this (minus up to 10% jitter) so clients rebalance; 0 = never. */
  readonly maxConnectionAgeMs: number;
  /** Unsent bytes a connection may hold before it is cut off as a slow consumer. Default 1 MiB. */
  readonly maxBufferedBytes: number;
  /** Events kept per topic (trimmed exactly on publish); 0 = no length limit. Default 1000. */
  readonly historyMaxLength: number;
  /** Age after which events leave history; 0 = no age limit. Default 24 h. */
  readonly historyMaxAgeMs: number;
  /** Extra headers on every SSE response. */
  readonly responseHeaders: Readonly<Record<string, string>>;
  /** Origins allowed by CORS (exact match); empty = no CORS headers. `*` allows any origin without credentials. */
  readonly corsOrigins: readonly string[];
  /** Time over which connections are closed on shutdown. Default 10000. */
  readonly drainMs: number;
  /**
   * On shutdown, time the node keeps serving (streams flowing, new ones accepted) with /readyz at 503
   * before it stops accepting and closes streams, so the load balancer has taken it out by then. Default 0.
   */
  readonly drainDelayMs: number;
  /** gzip the stream for clients that accept it. Default false. */
  readonly gzip: boolean;
  /** Topics one connection may follow. Default 32. */
  readonly maxTopicsPerConnection: number;
  /** Largest `data` of one event, in bytes. Default 64 KiB. */
  readonly maxPayloadBytes: number;
  /** Serve the demo page at /demo. Default: on in open mode, off once any auth key is configured. */
  readonly demoPage: boolean;
  /** Most events in one publish batch. Default 100. */
  readonly maxBatchSize: number;
  /** Largest publish request body, in bytes. Default 1 MiB. */
  readonly maxBodyBytes: number;
  /** HS256/384/512 secret for JWTs (at least 32 characters). Any auth key closes the gateway by default. */
  readonly authJwtSecret: string | undefined;
  /** PEM public key (RSA, EC or Ed25519) for JWTs. */
  readonly authJwtPublicKey: string | undefined;
  /** JWKS URL for JWTs. */
  readonly authJwksUrl: string | undefined;
  /** Required `iss` of tokens, when set. */
  readonly authIssuer: string | undefined;
  /** Required `aud` of tokens, when set. */
  readonly authAudience: string | undefined;
  /** Clock skew tolerated on exp/nbf, in seconds. Default 30. */
  readonly authClockSkewS: number;
  /** Cookie holding the token for browsers. Default `sse_token`. */
  readonly authCookieName: string;
  /** Secret signing subscribe tickets; defaults to one derived from AUTH_JWT_SECRET. */
  readonly authTicketSecret: string | undefined;
  /** Lifetime of a subscribe ticket. Default 30 s. */
  readonly ticketTtlMs: number;
  /** Topic patterns anyone may subscribe to without a token. */
  readonly publicTopics: readonly string[];
  /** Connections this node holds at most. Default 10 000. */
  readonly maxConnections: number;
  /** Connections one client (token subject, else IP address) may hold on this node. Default 1000 (NATs share addresses). */
  readonly maxConnectionsPerClient: number;
  /** New streams accepted per second on this node (burst of the same size), beyond which 503 + Retry-After. Default 10 000. */
  readonly maxNewConnectionsPerSecond: number;
  /** Take the client address from the last X-Forwarded-For entry (behind a load balancer). Default false. */
  readonly trustProxy: boolean;
  /** Time a client has to send its request headers (slowloris). Default 10 s. */
  readonly headersTimeoutMs: number;
  /** Time a client has to send its whole request, body included (not the response). Default 30 s. */
  readonly requestTimeoutMs: number;
  /** PEM certificate (chain) file; with TLS_KEY the port speaks HTTPS with HTTP/2 and HTTP/1.1. Reloaded on SIGHUP. */
  readonly tlsCert: string | undefined;
  /** PEM private key file of TLS_CERT. */
  readonly tlsKey: string | undefined;
  /** Cleartext HTTP/2 (prior knowledge) next to HTTP/1.1 on a plain port, for proxies. Default false. */
  readonly h2c: boolean;
  /** Streams one HTTP/2 connection may hold open; more are refused (RST_STREAM). Default 128. */
  readonly h2MaxConcurrentStreams: number;
  /**
   * HTTP/2 flow-control window the gateway grants per stream for request bodies (publishes over h2), bytes.
   * What the gateway may send is bounded by the client's window instead. Default 65535.
   */
  readonly h2InitialWindowSize: number;
  /** Gateway processes sharing PORT (node:cluster), each a full node; `auto` = one per CPU. Needs Redis. Default 1. */
  readonly workers: number;
  /**
   * Port of the private admin listener (/metrics, /stats, the dashboard, the admin API). `public` serves
   * them on PORT instead (the behaviour before there was an admin port); `off` serves them nowhere.
   * With WORKERS=N, worker k (0 to N-1) listens on ADMIN_PORT + k. Default 8081.
   */
  readonly adminPort: number | 'public' | 'off';
  /** Interface of the admin listener. Default 127.0.0.1: reachable from this machine only. */
  readonly adminHost: string;
  /** Bearer token for the admin API (at least 24 characters); a JWT with `{"sse":{"admin":true}}` works too. */
  readonly adminToken: string | undefined;
  /** This node's name in cluster-wide stats. Default `<hostname>-<pid>`. */
  readonly nodeId: string;
  /** How often a node reports its counts to the cluster view; a dead node leaves it after 3 of these. Default 2000. */
  readonly nodeReportMs: number;
}

interface Setting<K extends keyof Config> {
  readonly env: string;
  readonly default: string | undefined;
  readonly doc: string;
  readonly parse: (raw: string) => Config[K];
}

/** One row per Config field: a field without a row is a compile error, not a silent `undefined`. */
type SettingsTable = { readonly [K in keyof Config]: Setting<K> };

class SettingError extends Error {}

const integer =
  (min: number, max = Number.MAX_SAFE_INTEGER) =>
  (raw: string): number => {
    if (!/^\d+$/.test(raw.trim())) throw new SettingError(`must be a whole number, got "${raw}"`);
    const value = Number(raw.trim());
    if (value < min || value > max) throw new SettingError(`must be between ${min} and ${max}, got ${value}`);
    return value;
  };

const fraction = (raw: string): number => {
  const value = Number(raw.trim());
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || value > 1)
    throw new SettingError(`must be a number from 0 to 1, got "${raw}"`);
  return value;
};

const boolean = (raw: string): boolean => {
  const value = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new SettingError(`must be true or false, got "${raw}"`);
};

const text = (raw: string): string => raw;
const optionalText = (raw: string): string | undefined => (raw.trim() === '' ? undefined : raw.trim());

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const logLevel = (raw: string): string => {
  const value = raw.trim().toLowerCase();
  if (!LOG_LEVELS.includes(value)) throw new SettingError(`must be one of ${LOG_LEVELS.join(', ')}`);
  return value;
};

const redisUrl = (raw: string): string | undefined => {
  const value = raw.trim();
  if (value === '') return undefined;
  parseRedis(value);
  return value;
};

/** A `host:port,...` list, checked by parsing it as the URL it stands for. */
const redisNodes =
  (scheme: 'sentinel' | 'cluster') =>
  (raw: string): string | undefined => {
    const value = raw.trim();
    if (value === '') return undefined;
    if (/[/@?#]/.test(value)) throw new SettingError('must be a list of host:port, separated by commas');
    parseRedis(scheme === 'sentinel' ? `redis+sentinel://${value}/name` : `redis+cluster://${value}`);
    return value;
  };

function parseRedis(url: string): RedisTarget {
  try {
    return parseRedisUrl(url);
  } catch (error) {
    throw new SettingError((error as Error).message);
  }
}

/**
 * Where this node's Redis is, from REDIS_URL or REDIS_SENTINELS / REDIS_CLUSTER_NODES and the credential
 * settings; undefined for the embedded engine. loadConfig has checked that the settings fit together.
 */
export function redisTargetOf(config: Config): RedisTarget | undefined {
  const auth = {
    ...(config.redisUsername ? { username: config.redisUsername } : {}),
    ...(config.redisPassword ? { password: config.redisPassword } : {}),
  };
  const tls = config.redisTls ? 'rediss' : 'redis';
  if (config.redisUrl) {
    const target = parseRedisUrl(config.redisUrl);
    if (target.kind === 'single') {
      if (!auth.password) return target;
      // The URL's own credentials win; the settings fill what it leaves out.
      const url = new URL(target.url);
      if (!url.password) {
        url.username = url.username || encodeURIComponent(auth.username ?? '');
        url.password = encodeURIComponent(auth.password);
      }
      return { kind: 'single', url: url.href };
    }
    if (target.kind === 'sentinel') {
      const sentinelPassword = target.sentinelPassword ?? config.redisSentinelPassword;
      return { ...auth, ...target, ...(sentinelPassword ? { sentinelPassword } : {}) };
    }
    return { ...auth, ...target };
  }
  if (config.redisSentinels) {
    const name = encodeURIComponent(config.redisSentinelName ?? '');
    const target = parseRedisUrl(`${tls}+sentinel://${config.redisSentinels}/${name}`);
    if (target.kind !== 'sentinel') return undefined;
    return {
      ...target,
      ...auth,
      ...(config.redisSentinelPassword ? { sentinelPassword: config.redisSentinelPassword } : {}),
    };
  }
  if (config.redisClusterNodes) {
    const target = parseRedisUrl(`${tls}+cluster://${config.redisClusterNodes}`);
    return target.kind === 'cluster' ? { ...target, ...auth } : undefined;
  }
  return undefined;
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FORBIDDEN_HEADERS = [
  'connection',
  'transfer-encoding',
  'content-length',
  'content-type',
  'keep-alive',
  'upgrade',
];
const headers = (raw: string): Record<string, string> => {
  if (raw.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new SettingError('must be a JSON object such as {"X-Frame-Options":"DENY"}');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new SettingError('must be a JSON object of header names to string values');
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(parsed)) {
    if (!HEADER_NAME.test(name)) throw new SettingError(`"${name}" is not a valid header name`);
    if (FORBIDDEN_HEADERS.includes(name.toLowerCase()))
      throw new SettingError(`"${name}" is managed by the gateway and cannot be set`);
    if (typeof value !== 'string' || /[\r\n\0]/.test(value))
      throw new SettingError(`the value of "${name}" must be a string without CR, LF or NUL`);
    result[name] = value;
  }
  return result;
};

const origins = (raw: string): string[] => {
  const list = raw
    .split(',')
    .map((origin) => origin.trim())
    .filter(Boolean);
  for (const origin of list) {
    if (origin === '*') continue;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      throw new SettingError(`"${origin}" is not an origin such as https://app.example.com`);
    }
    if (url.origin !== origin) throw new SettingError(`"${origin}" is not an origin; did you mean "${url.origin}"?`);
  }
  return list;
};

const MIB = 1024 * 1024;

const GENERAL_SETTINGS = {
  port: { env: 'PORT', default: '8080', doc: 'TCP port', parse: integer(0, 65535) },
  host: { env: 'HOST', default: '127.0.0.1', doc: 'interface to bind (0.0.0.0 in containers)', parse: text },
  redisUrl: {
    env: 'REDIS_URL',
    default: undefined,
    doc: 'redis://, rediss://, redis+sentinel://h:p,h:p/name or redis+cluster://h:p,h:p; unset = embedded engine',
    parse: redisUrl,
  },
  redisSentinels: {
    env: 'REDIS_SENTINELS',
    default: '',
    doc: 'sentinels host:port,... (with REDIS_SENTINEL_NAME) instead of REDIS_URL',
    parse: redisNodes('sentinel'),
  },
  redisSentinelName: {
    env: 'REDIS_SENTINEL_NAME',
    default: '',
    doc: 'master group name known to the sentinels',
    parse: optionalText,
  },
  redisSentinelPassword: {
    env: 'REDIS_SENTINEL_PASSWORD',
    default: '',
    doc: 'password of the sentinels themselves',
    parse: optionalText,
  },
  redisClusterNodes: {
    env: 'REDIS_CLUSTER_NODES',
    default: '',
    doc: 'Redis Cluster startup nodes host:port,... instead of REDIS_URL',
    parse: redisNodes('cluster'),
  },
  redisUsername: {
    env: 'REDIS_USERNAME',
    default: '',
    doc: 'Redis ACL user (for a URL without one too)',
    parse: optionalText,
  },
  redisPassword: {
    env: 'REDIS_PASSWORD',
    default: '',
    doc: 'Redis password (for a URL without one too)',
    parse: optionalText,
  },
  redisTls: {
    env: 'REDIS_TLS',
    default: 'false',
    doc: 'TLS to REDIS_SENTINELS / REDIS_CLUSTER_NODES (URLs use rediss)',
    parse: boolean,
  },
  redisPrefix: { env: 'REDIS_PREFIX', default: DEFAULT_KEY_PREFIX, doc: 'prefix of Redis keys', parse: text },
  topicIdleTtlMs: {
    env: 'TOPIC_IDLE_TTL_MS',
    default: '0',
    doc: "Redis keys of a topic without a publish for this long expire (0 = never; the SDK's topicIdleTtlMs must match)",
    parse: integer(0),
  },
  publishMinReplicas: {
    env: 'PUBLISH_MIN_REPLICAS',
    default: '0',
    doc: 'answer a publish only once this many replicas have it (WAIT; not on Cluster; 0 = off)',
    parse: integer(0, 16),
  },
  publishReplicaTimeoutMs: {
    env: 'PUBLISH_REPLICA_TIMEOUT_MS',
    default: '1000',
    doc: 'longest wait for PUBLISH_MIN_REPLICAS (then 504 outcome_unknown)',
    parse: integer(1, 60_000),
  },
  redisHealthTimeoutMs: {
    env: 'REDIS_HEALTH_TIMEOUT_MS',
    default: '2000',
    doc: 'a Redis PING unanswered this long makes the node unready and reconnects',
    parse: integer(100, 60_000),
  },
  logLevel: { env: 'LOG_LEVEL', default: 'info', doc: LOG_LEVELS.join('|'), parse: logLevel },
  retryMs: { env: 'RETRY_MS', default: '3000', doc: 'reconnect delay hinted to clients', parse: integer(0) },
  retryJitter: {
    env: 'RETRY_JITTER',
    default: '0.5',
    doc: 'random extra share of RETRY_MS per connection (0..1)',
    parse: fraction,
  },
  heartbeatMs: { env: 'HEARTBEAT_MS', default: '15000', doc: 'comment heartbeat interval', parse: integer(50) },
  writeTimeoutMs: {
    env: 'WRITE_TIMEOUT_MS',
    default: '2000',
    doc: 'a write with no progress for this long times out',
    parse: integer(10),
  },
  closeOnWriteTimeout: {
    env: 'CLOSE_ON_WRITE_TIMEOUT',
    default: 'true',
    doc: 'close a connection whose write timed out',
    parse: boolean,
  },
  idleTimeoutMs: {
    env: 'IDLE_TIMEOUT_MS',
    default: String(30 * 60_000),
    doc: 'close a connection with no event for this long (0 = never)',
    parse: integer(0),
  },
  maxConnectionAgeMs: {
    env: 'MAX_CONNECTION_AGE_MS',
    default: '0',
    doc: 'close connections older than this, minus up to 10% jitter (0 = never)',
    parse: integer(0),
  },
  maxBufferedBytes: {
    env: 'MAX_BUFFERED_BYTES',
    default: String(MIB),
    doc: 'unsent bytes per connection before it is cut off as a slow consumer',
    parse: integer(1024),
  },
  historyMaxLength: {
    env: 'HISTORY_MAX_LENGTH',
    default: '1000',
    doc: 'events kept per topic (0 = no length limit)',
    parse: integer(0),
  },
  historyMaxAgeMs: {
    env: 'HISTORY_MAX_AGE_MS',
    default: String(24 * 3_600_000),
    doc: 'age after which events leave history (0 = no age limit)',
    parse: integer(0),
  },
  responseHeaders: {
    env: 'RESPONSE_HEADERS',
    default: '',
    doc: 'JSON object of extra headers on SSE responses',
    parse: headers,
  },
  corsOrigins: {
    env: 'CORS_ORIGINS',
    default: '',
    doc: 'comma-separated origins allowed by CORS ("*" = any, without credentials)',
    parse: origins,
  },
  drainMs: { env: 'DRAIN_MS', default: '10000', doc: 'time over which streams close on shutdown', parse: integer(0) },
  drainDelayMs: {
    env: 'DRAIN_DELAY_MS',
    default: '0',
    doc: 'on shutdown, time readiness is off while the node still serves, before streams close (the balancer takes it out first)',
    parse: integer(0),
  },
  gzip: { env: 'GZIP', default: 'false', doc: 'gzip streams for clients that accept it', parse: boolean },
  maxTopicsPerConnection: {
    env: 'MAX_TOPICS_PER_CONNECTION',
    default: '32',
    doc: 'topics one connection may follow',
    parse: integer(1, 256),
  },
  maxPayloadBytes: {
    env: 'MAX_PAYLOAD_BYTES',
    default: String(64 * 1024),
    doc: 'largest data of one event, in bytes',
    parse: integer(1),
  },
  demoPage: {
    env: 'DEMO_PAGE',
    default: undefined,
    doc: 'serve the demo page at /demo [default: on in open mode, off with auth keys]',
    parse: boolean,
  },
  maxBatchSize: { env: 'MAX_BATCH_SIZE', default: '100', doc: 'most events per publish', parse: integer(1) },
  maxBodyBytes: {
    env: 'MAX_BODY_BYTES',
    default: String(MIB),
    doc: 'largest publish request body, in bytes',
    parse: integer(64),
  },
} satisfies Partial<SettingsTable>;

const secret = (raw: string): string | undefined => {
  const value = raw.trim();
  if (value === '') return undefined;
  if (value.length < 32) throw new SettingError('must be at least 32 characters (use `openssl rand -base64 32`)');
  return value;
};

const url = (raw: string): string | undefined => {
  const value = raw.trim();
  if (value === '') return undefined;
  try {
    new URL(value);
  } catch {
    throw new SettingError('is not a valid URL');
  }
  return value;
};

const pem = (raw: string): string | undefined => {
  const value = raw.trim();
  if (value === '') return undefined;
  if (!value.includes('-----BEGIN PUBLIC KEY-----'))
    throw new SettingError('must be a PEM public key (-----BEGIN PUBLIC KEY-----)');
  let key: ReturnType<typeof createPublicKey>;
  try {
    key = createPublicKey(value.replaceAll('\\n', '\n'));
  } catch {
    throw new SettingError('is not a readable PEM public key');
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const usable =
    key.asymmetricKeyType === 'rsa' ||
    key.asymmetricKeyType === 'ed25519' ||
    (key.asymmetricKeyType === 'ec' && ['prime256v1', 'secp384r1', 'secp521r1'].includes(curve ?? ''));
  if (!usable)
    throw new SettingError(`is a ${key.asymmetricKeyType} ${curve ?? ''} key; use RSA, EC P-256/384/521 or Ed25519`);
  return value;
};

const topicPatterns = (raw: string): string[] =>
  raw
    .split(',')
    .map((pattern) => pattern.trim())
    .filter(Boolean);

const ACCESS_AND_LIMIT_SETTINGS = {
  authJwtSecret: { env: 'AUTH_JWT_SECRET', default: '', doc: 'HMAC secret for JWTs (>= 32 chars)', parse: secret },
  authJwtPublicKey: {
    env: 'AUTH_JWT_PUBLIC_KEY',
    default: '',
    doc: 'PEM public key for JWTs (RS/ES/EdDSA)',
    parse: pem,
  },
  authJwksUrl: { env: 'AUTH_JWKS_URL', default: '', doc: 'JWKS URL for JWTs', parse: url },
  authIssuer: { env: 'AUTH_ISSUER', default: '', doc: 'required iss claim', parse: optionalText },
  authAudience: { env: 'AUTH_AUDIENCE', default: '', doc: 'required aud claim', parse: optionalText },
  authClockSkewS: {
    env: 'AUTH_CLOCK_SKEW_S',
    default: '30',
    doc: 'tolerated clock skew, seconds',
    parse: integer(0, 3600),
  },
  authCookieName: { env: 'AUTH_COOKIE_NAME', default: 'sse_token', doc: 'cookie holding the token', parse: text },
  authTicketSecret: {
    env: 'AUTH_TICKET_SECRET',
    default: '',
    doc: 'secret signing subscribe tickets (default: derived from AUTH_JWT_SECRET)',
    parse: secret,
  },
  ticketTtlMs: { env: 'TICKET_TTL_MS', default: '30000', doc: 'subscribe ticket lifetime', parse: integer(1000) },
  publicTopics: {
    env: 'PUBLIC_TOPICS',
    default: '',
    doc: 'topic patterns readable without a token',
    parse: topicPatterns,
  },
  maxConnections: { env: 'MAX_CONNECTIONS', default: '10000', doc: 'streams per node', parse: integer(1) },
  maxConnectionsPerClient: {
    env: 'MAX_CONNECTIONS_PER_CLIENT',
    default: '1000',
    doc: 'streams per client (token subject, else IP) per node',
    parse: integer(1),
  },
  maxNewConnectionsPerSecond: {
    env: 'MAX_NEW_CONNECTIONS_PER_SECOND',
    default: '10000',
    doc: 'new streams per second per node; beyond, 503 + Retry-After',
    parse: integer(1),
  },
  trustProxy: {
    env: 'TRUST_PROXY',
    default: 'false',
    doc: 'client address = last X-Forwarded-For entry (behind a load balancer)',
    parse: boolean,
  },
  headersTimeoutMs: {
    env: 'HEADERS_TIMEOUT_MS',
    default: '10000',
    doc: 'time to send request headers',
    parse: integer(100),
  },
  requestTimeoutMs: {
    env: 'REQUEST_TIMEOUT_MS',
    default: '30000',
    doc: 'time to send a whole request (not the stream)',
    parse: integer(100),
  },
} satisfies Partial<SettingsTable>;

const workerCount = (raw: string): number => {
  if (raw.trim().toLowerCase() === 'auto') return availableParallelism();
  return integer(1, 256)(raw);
};

const SERVER_SETTINGS = {
  workers: {
    env: 'WORKERS',
    default: '1',
    doc: 'gateway processes sharing PORT (auto = one per CPU); more than 1 needs Redis',
    parse: workerCount,
  },
  tlsCert: {
    env: 'TLS_CERT',
    default: '',
    doc: 'PEM certificate file: HTTPS with HTTP/2 + HTTP/1.1 on PORT (reloaded on SIGHUP)',
    parse: optionalText,
  },
  tlsKey: { env: 'TLS_KEY', default: '', doc: 'PEM private key file of TLS_CERT', parse: optionalText },
  h2c: {
    env: 'H2C',
    default: 'false',
    doc: 'also accept cleartext HTTP/2 (prior knowledge) on a plain port, for proxies',
    parse: boolean,
  },
  h2MaxConcurrentStreams: {
    env: 'H2_MAX_CONCURRENT_STREAMS',
    default: '128',
    doc: 'streams per HTTP/2 connection; more are refused',
    parse: integer(1, 10_000),
  },
  h2InitialWindowSize: {
    env: 'H2_INITIAL_WINDOW_SIZE',
    default: '65535',
    doc: 'HTTP/2 window granted per stream for request bodies (publishes), bytes',
    parse: integer(16_384, 2 ** 31 - 1),
  },
} satisfies Partial<SettingsTable>;

const adminPort = (raw: string): Config['adminPort'] => {
  const value = raw.trim().toLowerCase();
  if (value === 'public' || value === 'off') return value;
  if (!/^\d+$/.test(value)) throw new SettingError(`must be a port number, "public" or "off", got "${raw}"`);
  return integer(0, 65535)(value);
};

const adminToken = (raw: string): string | undefined => {
  const value = raw.trim();
  if (value === '') return undefined;
  if (value.length < 24) throw new SettingError('must be at least 24 characters (use: openssl rand -hex 24)');
  return value;
};

const nodeId = (raw: string): string => {
  const value = raw.trim();
  // The id sits inside a Redis hash tag and in log lines: no braces, spaces or control characters.
  if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(value))
    throw new SettingError('may only hold letters, digits and _ . : - (at most 100 characters)');
  return value;
};

const ADMIN_SETTINGS = {
  adminPort: {
    env: 'ADMIN_PORT',
    default: '8081',
    doc: 'private port for /metrics, /stats, the dashboard and the admin API (public = on PORT, off = none)',
    parse: adminPort,
  },
  adminHost: {
    env: 'ADMIN_HOST',
    default: '127.0.0.1',
    doc: 'interface of the admin listener (keep it private)',
    parse: text,
  },
  adminToken: {
    env: 'ADMIN_TOKEN',
    default: '',
    doc: 'bearer token for the admin API (or a JWT granting {"sse":{"admin":true}})',
    parse: adminToken,
  },
  nodeId: {
    env: 'NODE_ID',
    default: `${hostname()
      .replace(/[^A-Za-z0-9_.:-]/g, '-')
      .slice(0, 80)}-${process.pid}`,
    doc: "this node's name in cluster-wide stats",
    parse: nodeId,
  },
  nodeReportMs: {
    env: 'NODE_REPORT_MS',
    default: '2000',
    doc: 'how often a node reports its counts to the cluster view (a dead node leaves after 3)',
    parse: integer(100, 60_000),
  },
} satisfies Partial<SettingsTable>;

const SETTINGS: SettingsTable = {
  ...GENERAL_SETTINGS,
  ...ACCESS_AND_LIMIT_SETTINGS,
  ...SERVER_SETTINGS,
  ...ADMIN_SETTINGS,
};
const SETTING_ROWS = Object.entries(SETTINGS) as Array<[keyof Config, Setting<keyof Config>]>;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Reads every setting from `env` (process.env by default); throws one ConfigError listing every problem. */
export function loadConfig(env: Readonly<Record<string, string | undefined>> = process.env): Config {
  const problems: string[] = [];
  const config: Record<string, unknown> = {};
  for (const [key, setting] of SETTING_ROWS) {
    const raw = env[setting.env] ?? setting.default;
    if (raw === undefined) {
      config[key] = undefined;
      continue;
    }
    try {
      config[key] = setting.parse(raw);
    } catch (error) {
      if (!(error instanceof SettingError)) throw error;
      problems.push(`${setting.env} ${error.message}`);
    }
  }
  if (typeof config.requestTimeoutMs === 'number' && typeof config.headersTimeoutMs === 'number') {
    if (config.headersTimeoutMs > config.requestTimeoutMs)
      problems.push('HEADERS_TIMEOUT_MS must not be larger than REQUEST_TIMEOUT_MS');
  }
  const redisSources = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'].filter((name) => env[name]?.trim());
  if (redisSources.length > 1) problems.push(`set only one of ${redisSources.join(', ')}`);
  const clusterConfigured =
    Boolean(config.redisClusterNodes) || /^rediss?\+cluster:/i.test(String(config.redisUrl ?? ''));
  if (typeof config.publishMinReplicas === 'number' && config.publishMinReplicas > 0 && clusterConfigured)
    problems.push('PUBLISH_MIN_REPLICAS is not supported on Redis Cluster');
  if (config.redisSentinels && !config.redisSentinelName)
    problems.push('REDIS_SENTINELS needs REDIS_SENTINEL_NAME (the master group name)');
  problems.push(...tlsProblems(config));
  // A page that publishes from the browser is a development aid: on by default only while nothing is closed.
  config.demoPage ??= !(config.authJwtSecret || config.authJwtPublicKey || config.authJwksUrl);
  const redisConfigured = Boolean(config.redisUrl || config.redisSentinels || config.redisClusterNodes);
  if (typeof config.workers === 'number' && config.workers > 1 && !redisConfigured)
    problems.push(
      `WORKERS=${env.WORKERS} needs Redis (REDIS_URL): the embedded engine keeps history in one process, so workers would not share it`,
    );
  if (typeof config.adminPort === 'number' && config.adminPort !== 0 && config.adminPort === config.port)
    problems.push('ADMIN_PORT must differ from PORT (ADMIN_PORT=public serves the admin routes on PORT)');
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config) as unknown as Config;
}

/** TLS_CERT and TLS_KEY come together, and must be a usable, currently valid pair. */
function tlsProblems(config: Record<string, unknown>): string[] {
  const cert = config.tlsCert as string | undefined;
  const key = config.tlsKey as string | undefined;
  if (!cert && !key) return [];
  if (!cert || !key) return [`${cert ? 'TLS_CERT' : 'TLS_KEY'} needs ${cert ? 'TLS_KEY' : 'TLS_CERT'} too`];
  const problems: string[] = [];
  if (config.h2c) problems.push('H2C is for plain ports; with TLS_CERT the port speaks HTTP/2 already');
  try {
    loadTlsFiles(cert, key);
  } catch (error) {
    if (!(error instanceof TlsFilesError)) throw error;
    problems.push(error.message);
  }
  return problems;
}

/** Builds a Config from defaults plus overrides, for tests and embedding. */
export function configWith(overrides: Partial<Config> = {}): Config {
  return Object.freeze({ ...loadConfig({}), ...overrides });
}

export function helpText(): string {
  const width = Math.max(...SETTING_ROWS.map(([, s]) => s.env.length));
  const lines = SETTING_ROWS.map(([, s]) => s).map(
    (s) => `  ${s.env.padEnd(width)}  ${s.doc}${s.default ? ` [${s.default}]` : ''}`,
  );
  return [
    'sse-gateway: Server-Sent Events gateway',
    '',
    'Usage: sse-gateway [--help]',
    '',
    'Configuration is read from environment variables:',
    ...lines,
    '',
  ].join('\n');
}
