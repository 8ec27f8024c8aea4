/**
 * Harness of the multi-process suites (multinode.e2e.test.ts, redis-faults.e2e.test.ts): real gateway
 * processes (`node dist/main.js`) on their own loopback ports for any REDIS_URL (`redis://`,
 * `redis+sentinel://`, `redis+cluster://`), SDK Redis publishers that log what they stored, real
 * `eventsource` clients that record what they receive across the streams they open, and the checks that
 * compare the two.
 *
 * The reference of every check is what the SDK said it stored: per topic, the events whose `send` resolved,
 * ordered by their ids (which strictly increase within a topic and are the publish order). There is no
 * load balancer: every client picks its node, and when it has to move it closes its stream and opens one on
 * another node with its last event id, as a browser behind a balancer would.
 *
 * Typical use:
 *
 *   const nodes = await startGateways(3, redisUrl, { prefix });
 *   const clients = [new Client(nodes, 'a@0', ['t/a'], 0), new Client(nodes, 'ab@1', ['t/a', 't/b'], 1)];
 *   await waitForOpen(clients);
 *   const publishers = newPublishers(redisUrl, 2, { prefix });
 *   const run = runPublishers({ publishers, topics: ['t/a', 't/b'], tag: 'p' });
 *   ... fault ...
 *   await run.stop();
 *   await closePublishers(publishers);
 *   await waitForDelivery(clients, run.log);
 *   expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
 *   // afterAll: closeAllCollectors(); await closeAllPublishers(); await stopGateways(nodes);
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { comparePositions, type Position, parsePosition } from '@sse-gateway/publisher-sdk/protocol';
import { type Collector, collect, eventsUrl } from './gateway.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/** The built gateway: `tsc -b` (part of `pnpm test`) writes it. */
export const MAIN_PATH = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
/** Default deadline of every wait on a condition (generous: a loaded 2-core CI machine). */
export const WAIT_MS = 30_000;
/** Deadline of a gateway process to answer 200 on /readyz after it was spawned. */
export const READY_MS = 30_000;
/** Default pause between publish rounds of the open-ended publishers: pacing the load, not synchronisation. */
export const PACE_MS = 10;
/** Default history length of the gateways and publishers: large, so nothing is trimmed unless a test wants it. */
export const HISTORY_MAX_LENGTH = 100_000;

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Throws with the command to run when the gateway has not been built. */
export function assertBuilt(): void {
  if (!existsSync(MAIN_PATH)) throw new Error(`${MAIN_PATH} is missing: build first (npx tsc -b)`);
}

// ---------------------------------------------------------------------------------------------------
// Gateway processes
// ---------------------------------------------------------------------------------------------------

/** Every child process spawned here, SIGKILLed if the worker exits without stopping them. */
const children = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
}

/** One gateway process on its own port; `start` it again after a kill and it comes back on the same port. */
export class GatewayProcess {
  #child: ChildProcess | undefined;
  #log = '';

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: Readonly<Record<string, string>>,
    /** Its admin listener's port (/stats, /metrics, the admin API), the same across restarts. */
    readonly adminPort: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get adminUrl(): string {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    const child = this.#child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** The tail of the process' output (20 000 characters), for failure messages. */
  log(): string {
    return this.#log;
  }

  /** Spawns the process on this node's port; resolves once /readyz answers 200. */
  async start(readyMs = READY_MS): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    installExitHook();
    const child = spawn(process.execPath, [MAIN_PATH], {
      // A clean environment: nothing of the test runner's (auth secrets, REDIS_PREFIX...) leaks in.
      env: { PATH: process.env.PATH ?? '', ...this.env, PORT: String(this.port), ADMIN_PORT: String(this.adminPort) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#child = child;
    children.add(child);
    child.once('exit', () => children.delete(child));
    const append = (chunk: Buffer | string) => {
      this.#log = (this.#log + chunk.toString()).slice(-20_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    child.on('error', (error) => append(`\nspawn error: ${error.message}\n`));
    const deadline = Date.now() + readyMs;
    for (;;) {
      if (!this.running) {
        throw new Error(
          `${this.name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${this.#log}`,
        );
      }
      if (await isReady(this.url)) return;
      if (Date.now() > deadline) throw new Error(`${this.name} not ready within ${readyMs} ms:\n${this.#log}`);
      await delay(50);
    }
  }

  /** Signals this node's process (by its pid) and resolves once it exited. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    await exited;
  }
}

/** Status of GET /readyz (undefined when the node did not answer within 5 s). */
export async function readyStatus(url: string): Promise<number | undefined> {
  return fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5000) }).then(
    async (response) => {
      await response.body?.cancel();
      return response.status;
    },
    () => undefined,
  );
}

/** Whether GET /readyz answers 200. */
export async function isReady(url: string): Promise<boolean> {
  return (await readyStatus(url)) === 200;
}

export interface GatewayOptions {
  /** REDIS_PREFIX of the gateways (and of this suite's publishers): one per suite. */
  readonly prefix: string;
  /** HISTORY_MAX_LENGTH. Default HISTORY_MAX_LENGTH (nothing trimmed). */
  readonly historyMaxLength?: number;
  /** More environment variables (they win over the defaults), e.g. REDIS_HEALTH_TIMEOUT_MS. */
  readonly env?: Readonly<Record<string, string>>;
}

/** The environment of a test gateway: loopback, warnings only, short retry hints, no drain. */
export function gatewayEnv(redisUrl: string, options: GatewayOptions): Record<string, string> {
  return {
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    REDIS_PREFIX: options.prefix,
    LOG_LEVEL: 'warn',
    HISTORY_MAX_LENGTH: String(options.historyMaxLength ?? HISTORY_MAX_LENGTH),
    RETRY_MS: '200',
    RETRY_JITTER: '0',
    DRAIN_MS: '0',
    // The test process reads every stream; a busy CI box must not turn that into write timeouts.
    WRITE_TIMEOUT_MS: '15000',
    ...options.env,
  };
}

/** Starts gateway `node<index>` on a free port (another one if that was taken meanwhile); resolves once ready. */
export async function startGateway(index: number, redisUrl: string, options: GatewayOptions): Promise<GatewayProcess> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const node = new GatewayProcess(`node${index}`, await freePort(), gatewayEnv(redisUrl, options), await freePort());
    try {
      await node.start();
      return node;
    } catch (error) {
      lastError = error;
      await node.kill();
      if (!/EADDRINUSE/.test(String((error as Error).message))) break;
    }
  }
  throw lastError;
}

/** Starts `count` gateways in parallel; when one fails, stops those that started and throws. */
export async function startGateways(
  count: number,
  redisUrl: string,
  options: GatewayOptions,
): Promise<GatewayProcess[]> {
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, index) => startGateway(index, redisUrl, options)),
  );
  const nodes = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) {
    await stopGateways(nodes);
    throw failed.reason;
  }
  return nodes;
}

/** SIGKILLs every node (by pid) and waits for the exits. */
export async function stopGateways(nodes: readonly GatewayProcess[]): Promise<void> {
  await Promise.allSettled(nodes.map((node) => node.kill('SIGKILL')));
}

/** The last `chars` of every node's log, for a failed test's output. */
export function logTails(nodes: readonly GatewayProcess[], chars = 4000): string {
  return nodes.map((node) => `--- ${node.name} (port ${node.port}) log tail:\n${node.log().slice(-chars)}`).join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Publishing: what the SDK says it stored
// ---------------------------------------------------------------------------------------------------

/** An event whose `send` resolved, with the id the SDK returned. */
export interface Sent {
  readonly topic: string;
  readonly data: string;
  readonly id: string;
  readonly position: Position;
  readonly publisher: string;
  readonly n: number;
  /** Date.now() when the send was made. */
  readonly sentAt: number;
}

export interface PublishLog {
  /** Per topic, in the order the sends resolved. */
  readonly resolved: Map<string, Sent[]>;
  /** Data of events whose send rejected (they may or may not have been stored). */
  readonly rejected: Set<string>;
}

export interface PublishRun {
  readonly log: PublishLog;
  /** Resolves once every publisher finished (its rounds, or `stop`) and every send settled. */
  readonly done: Promise<void>;
  /** Resolved sends so far, over all topics. */
  resolvedCount(): number;
  /** Stops after the current rounds; resolves when every send settled. */
  stop(): Promise<void>;
  /** Holds every publisher before its next round; resolves once all are held with nothing in flight. */
  pause(): Promise<void>;
  resume(): void;
}

export interface PublisherOptions {
  /** The gateways' REDIS_PREFIX. */
  readonly prefix: string;
  /** Retention applied on publish. Default HISTORY_MAX_LENGTH. */
  readonly maxLength?: number;
  /** A send waiting for Redis fails within this. Default 10 s, so a run cannot hang on one. */
  readonly maxRetryTimeMs?: number;
}

const openPublishers = new Set<Publisher>();

/** `count` SDK publishers straight to Redis at `redisUrl` (any scheme the SDK accepts). */
export function newPublishers(redisUrl: string, count: number, options: PublisherOptions): Publisher[] {
  return Array.from({ length: count }, () => {
    const publisher = createPublisher({
      redis: redisUrl,
      prefix: options.prefix,
      maxLength: options.maxLength ?? HISTORY_MAX_LENGTH,
      maxRetryTimeMs: options.maxRetryTimeMs ?? 10_000,
    });
    openPublishers.add(publisher);
    return publisher;
  });
}

export async function closePublishers(publishers: readonly Publisher[]): Promise<void> {
  await Promise.allSettled(publishers.map((publisher) => publisher.close()));
  for (const publisher of publishers) openPublishers.delete(publisher);
}

/** Closes every publisher newPublishers made and nobody closed (for afterAll). */
export async function closeAllPublishers(): Promise<void> {
  await closePublishers([...openPublishers]);
}

/**
 * Each publisher `p` publishes rounds n = 0, 1, ...: one event per topic, data `topic|tag<p>|n`, up to
 * `window` rounds in flight (pipelined on its connection), `paceMs` between rounds, until `rounds` or `stop()`.
 */
export function runPublishers(options: {
  readonly publishers: readonly Publisher[];
  readonly topics: readonly string[];
  readonly tag: string;
  readonly rounds?: number;
  readonly window?: number;
  readonly paceMs?: number;
}): PublishRun {
  const { publishers, topics, tag } = options;
  const rounds = options.rounds ?? 100_000;
  const window = options.window ?? 1;
  const paceMs = options.paceMs ?? PACE_MS;
  const log: PublishLog = { resolved: new Map(topics.map((topic) => [topic, []])), rejected: new Set() };
  let stopped = false;
  let resolvedCount = 0;
  let gate: { promise: Promise<void>; open: () => void } | undefined;
  let held = 0;
  let finished = 0;

  const loop = async (publisher: Publisher, index: number) => {
    const name = `${tag}${index}`;
    const inFlight: Promise<void>[] = [];
    for (let n = 0; n < rounds && !stopped; n++) {
      if (gate) {
        await Promise.all(inFlight.splice(0));
        held++;
        await gate.promise;
        held--;
        if (stopped) break;
      }
      const sentAt = Date.now();
      const round = Promise.all(
        topics.map((topic) => {
          const data = `${topic}|${name}|${n}`;
          return publisher.send('message', data, { topic }).then(
            (id) => {
              const position = parsePosition(id);
              if (!position) throw new Error(`the SDK returned an id that does not parse: ${id}`);
              log.resolved.get(topic)?.push({ topic, data, id, position, publisher: name, n, sentAt });
              resolvedCount++;
            },
            () => {
              log.rejected.add(data);
            },
          );
        }),
      ).then(() => {});
      inFlight.push(round);
      if (inFlight.length >= window) await inFlight.shift();
      if (paceMs > 0) await delay(paceMs);
    }
    await Promise.all(inFlight);
  };
  const done = Promise.all(publishers.map((publisher, index) => loop(publisher, index))).then(() => {
    finished = publishers.length;
  });
  return {
    log,
    done,
    resolvedCount: () => resolvedCount,
    async stop() {
      stopped = true;
      gate?.open();
      await done;
    },
    async pause() {
      let open = () => {};
      const promise = new Promise<void>((resolve) => {
        open = resolve;
      });
      gate = { promise, open };
      await waitFor(() => held === publishers.length || finished === publishers.length, {
        timeoutMs: WAIT_MS,
        what: 'every publisher to pause with nothing in flight',
      });
    },
    resume() {
      const current = gate;
      gate = undefined;
      current?.open();
    },
  };
}

/** A topic's resolved events in id order (= publish order). Ids of different epochs do not compare. */
export function inIdOrder(sent: readonly Sent[]): Sent[] {
  return [...sent].sort((a, b) => comparePositions(a.position, b.position));
}

/** The epochs of `sent`, in the order they first appear (consecutive repeats folded). */
export function epochsOf(sent: readonly Sent[]): string[] {
  const epochs: string[] = [];
  for (const event of sent) if (epochs.at(-1) !== event.position.epoch) epochs.push(event.position.epoch);
  return epochs;
}

/** What the SDK answered must already be consistent: distinct ids, increasing per publisher in publish order. */
export function publishProblems(log: PublishLog, options: { readonly singleEpoch: boolean }): string[] {
  const problems: string[] = [];
  for (const [topic, sent] of log.resolved) {
    if (new Set(sent.map((event) => event.id)).size !== sent.length)
      problems.push(`${topic}: the SDK returned an id twice`);
    const epochs = epochsOf(sent);
    if (options.singleEpoch && epochs.length > 1) problems.push(`${topic}: ids span epochs ${epochs.join(', ')}`);
    if (new Set(epochs).size !== epochs.length) problems.push(`${topic}: epochs interleave (${epochs.join(', ')})`);
    const byPublisher = new Map<string, Sent[]>();
    for (const event of sent) {
      const events = byPublisher.get(event.publisher) ?? [];
      events.push(event);
      byPublisher.set(event.publisher, events);
    }
    for (const [publisher, events] of byPublisher) {
      const inPublishOrder = [...events].sort((a, b) => a.n - b.n);
      for (let i = 1; i < inPublishOrder.length; i++) {
        const previous = inPublishOrder[i - 1] as Sent;
        const current = inPublishOrder[i] as Sent;
        if (
          previous.position.epoch === current.position.epoch &&
          comparePositions(previous.position, current.position) >= 0
        ) {
          problems.push(
            `${topic}/${publisher}: #${current.n} got id ${current.id}, not after #${previous.n}'s ${previous.id}`,
          );
          break;
        }
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------
// Clients: one logical subscriber across the streams it opened (on one node or several)
// ---------------------------------------------------------------------------------------------------

/** One thing a client received for a topic: a data event, or a `gateway.reset`. */
export type Item =
  | { readonly kind: 'event'; readonly id: string; readonly data: string; readonly stream: number }
  | { readonly kind: 'reset'; readonly id: string; readonly reason: string; readonly stream: number };

/**
 * An `eventsource` subscriber of `topics` on one of `nodes` (by index), that can drop its stream and resume
 * on another node. `nodes` is read when a stream opens, so a node restarted in place stays usable.
 */
export class Client {
  readonly topics: readonly string[];
  readonly streams: Collector[] = [];
  node = -1;
  /** The node of each stream, in order. */
  readonly visited: number[] = [];
  readonly #items = new Map<string, Item[]>();
  readonly #seen = new Map<string, Set<string>>();
  /** Data events received per stream. */
  readonly #perStream: number[] = [];
  readonly #cursor: number[] = [];
  readonly problems: string[] = [];

  constructor(
    private readonly nodes: readonly GatewayProcess[],
    readonly name: string,
    topics: readonly string[],
    node: number,
  ) {
    // The gateway sorts a connection's topics; a multi-topic id lists one position per topic in that order.
    this.topics = [...new Set(topics)].sort();
    for (const topic of this.topics) {
      this.#items.set(topic, []);
      this.#seen.set(topic, new Set());
    }
    this.open(node);
  }

  get current(): Collector {
    return this.streams.at(-1) as Collector;
  }

  /** Opens a stream on `node`, resuming after `lastEventId` when given. */
  open(node: number, lastEventId?: string, via: 'header' | 'query' = 'header'): void {
    const gateway = this.nodes[node];
    if (!gateway) throw new Error(`no node ${node}`);
    this.node = node;
    this.visited.push(node);
    this.streams.push(collect(eventsUrl(gateway.url, this.topics), { lastEventId, lastEventIdVia: via }));
    this.#perStream.push(0);
    this.#cursor.push(0);
  }

  /** Closes the current stream; returns the id to resume from. */
  drop(): string {
    this.sync();
    const last = this.current.lastEventId;
    if (last === undefined) throw new Error(`${this.name} has no event id to resume from`);
    this.current.close();
    return last;
  }

  /** Drops the current stream and resumes on `node`, as a client behind a load balancer would. */
  moveTo(node: number, via: 'header' | 'query' = 'header'): void {
    this.open(node, this.drop(), via);
  }

  /** Everything received for `topic`, in order, over all streams. */
  items(topic: string): Item[] {
    this.sync();
    return this.#items.get(topic) ?? [];
  }

  /** Data events received on the current stream. */
  receivedOnCurrent(): number {
    this.sync();
    return this.#perStream.at(-1) ?? 0;
  }

  hasData(topic: string, data: string): boolean {
    this.sync();
    return this.#seen.get(topic)?.has(data) ?? false;
  }

  /** Data events received for `topic`. */
  count(topic: string): number {
    this.sync();
    return this.#seen.get(topic)?.size ?? 0;
  }

  describe(): string {
    const counts = this.topics.map((topic) => `${topic}=${this.count(topic)}`).join(' ');
    const stream = this.current;
    return (
      `${this.name} on node${this.node}: ${counts}, streams ${this.streams.length}, readyState ${stream.source.readyState}, ` +
      `opens ${stream.opens}, errors ${stream.errors} [${stream.errorCodes.join(',')}]`
    );
  }

  /** Parses events received since the last call (incrementally: waits poll this often). */
  sync(): void {
    this.streams.forEach((stream, index) => {
      const events = stream.events;
      for (let at = this.#cursor[index] ?? 0; at < events.length; at++) {
        const received = events[at];
        if (received) this.#add(received.event, received.id, received.data, index);
      }
      this.#cursor[index] = events.length;
    });
  }

  #add(event: string, id: string, data: string, stream: number): void {
    const parts = id.split(',');
    if (parts.length !== this.topics.length) {
      this.problems.push(`${this.name}: id ${id} does not hold one position per topic`);
      return;
    }
    const idOf = (topic: string) => parts[this.topics.indexOf(topic)] as string;
    if (event === 'gateway.reset') {
      let body: { topic?: unknown; reason?: unknown } = {};
      try {
        body = JSON.parse(data);
      } catch {
        // reported below
      }
      const topic = String(body.topic);
      if (!this.topics.includes(topic)) {
        this.problems.push(`${this.name}: gateway.reset with unexpected data ${data}`);
        return;
      }
      this.#items.get(topic)?.push({ kind: 'reset', id: idOf(topic), reason: String(body.reason), stream });
      return;
    }
    const topic = data.slice(0, data.indexOf('|'));
    if (event !== 'message' || !this.topics.includes(topic)) {
      this.problems.push(`${this.name}: unexpected ${event} event ${JSON.stringify(data)}`);
      return;
    }
    this.#items.get(topic)?.push({ kind: 'event', id: idOf(topic), data, stream });
    this.#seen.get(topic)?.add(data);
    this.#perStream[stream] = (this.#perStream[stream] ?? 0) + 1;
  }
}

/** Waits until every client's current stream opened. */
export async function waitForOpen(clients: readonly Client[], timeoutMs = WAIT_MS): Promise<void> {
  await waitFor(() => clients.every((client) => client.current.opens >= 1), {
    timeoutMs,
    what: `${clients.length} streams to open`,
  }).catch((error: Error) => {
    const closed = clients.filter((client) => client.current.opens < 1).map((client) => client.describe());
    throw new Error(`${error.message}: ${closed.join('; ')}`);
  });
}

/** Waits until every client got at least `count` data events per topic (counting over all its streams). */
export async function waitForEach(
  clients: readonly Client[],
  count: (client: Client, topic: string) => number,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<void> {
  await waitFor(
    () => clients.every((client) => client.topics.every((topic) => client.count(topic) >= count(client, topic))),
    { timeoutMs, what },
  ).catch((error: Error) => {
    throw new Error(`${error.message}: ${clients.map((client) => client.describe()).join('; ')}`);
  });
}

/** Waits until every client received the newest stored event of each of its topics (by id, in the last epoch). */
export async function waitForDelivery(clients: readonly Client[], log: PublishLog, timeoutMs = WAIT_MS): Promise<void> {
  const newest = new Map<string, Sent>();
  for (const [topic, sent] of log.resolved) {
    const lastEpoch = sent.at(-1)?.position.epoch;
    const last = inIdOrder(sent.filter((event) => event.position.epoch === lastEpoch)).at(-1);
    if (last) newest.set(topic, last);
  }
  const behind = () =>
    clients.filter((client) =>
      client.topics.some((topic) => {
        const last = newest.get(topic);
        return last !== undefined && !client.hasData(topic, last.data);
      }),
    );
  await waitFor(() => behind().length === 0, { timeoutMs, what: 'every client to get the last event' }).catch(
    (error: Error) => {
      const expected = [...log.resolved].map(([topic, sent]) => `${topic}=${sent.length}`).join(' ');
      const stuck = behind().map((client) => client.describe());
      throw new Error(`${error.message}; resolved ${expected}; behind: ${stuck.join('; ')}`);
    },
  );
}

/**
 * Waits until every client received, on each of its topics, an event whose send was made at or after
 * `since` (so everything before it has arrived, in order, or been covered by a reset); returns how long
 * after `since` the last client got there.
 */
export async function waitForCaughtUp(
  clients: readonly Client[],
  log: PublishLog,
  since: number,
  timeoutMs = WAIT_MS,
): Promise<number> {
  const pending = new Set(clients.flatMap((client) => client.topics.map((topic) => ({ client, topic }))));
  const byData = new Map<string, Sent>();
  const indexed = new Map<string, number>();
  let reachedAt = since;
  await waitFor(
    () => {
      for (const [topic, sent] of log.resolved) {
        for (let at = indexed.get(topic) ?? 0; at < sent.length; at++) {
          const event = sent[at] as Sent;
          byData.set(event.data, event);
        }
        indexed.set(topic, sent.length);
      }
      for (const entry of pending) {
        const items = entry.client.items(entry.topic);
        // Newest first: the tail is where post-`since` events land.
        for (let at = items.length - 1; at >= 0; at--) {
          const item = items[at] as Item;
          if (item.kind !== 'event') continue;
          const sent = byData.get(item.data);
          if (sent === undefined) continue;
          if (sent.sentAt >= since) {
            pending.delete(entry);
            reachedAt = Date.now();
          }
          break;
        }
      }
      return pending.size === 0;
    },
    { timeoutMs, what: 'every client to get an event sent after the fault began, on each of its topics' },
  ).catch((error: Error) => {
    const stuck = [...pending].map(({ client, topic }) => `${client.name} ${topic}: ${client.describe()}`);
    throw new Error(`${error.message}; behind: ${stuck.slice(0, 10).join('; ')}`);
  });
  return reachedAt - since;
}

/** A reset a client must get at a given point. */
export interface ExpectedReset {
  readonly kind: 'reset';
  readonly reason: string;
  readonly id: string;
}

/** The first difference between what a client got and what it should have got, with counts. */
export function compareEvents(got: readonly Item[], expected: readonly (Sent | ExpectedReset)[]): string | undefined {
  const length = Math.max(got.length, expected.length);
  for (let i = 0; i < length; i++) {
    const item = got[i];
    const want = expected[i];
    if (item !== undefined && want !== undefined && item.id === want.id) {
      if (
        'kind' in want
          ? item.kind === 'reset' && item.reason === want.reason
          : item.kind === 'event' && item.data === want.data
      )
        continue;
    }
    const seen = new Set<string>();
    let duplicates = 0;
    for (const entry of got) {
      if (entry.kind !== 'event') continue;
      if (seen.has(entry.data)) duplicates++;
      seen.add(entry.data);
    }
    const wanted = expected.filter((event): event is Sent => !('kind' in event));
    const missing = wanted.filter((event) => !seen.has(event.data)).length;
    const show = (entry: Item | Sent | ExpectedReset | undefined) =>
      entry === undefined
        ? 'nothing'
        : 'kind' in entry && entry.kind === 'reset'
          ? `reset (${entry.reason}, ${entry.id})`
          : `${(entry as Sent).data} (${entry.id})`;
    return (
      `got ${got.length} items, expected ${expected.length} (${duplicates} duplicate(s), ${missing} missing); ` +
      `first difference at #${i}: got ${show(item)}, expected ${show(want)}`
    );
  }
  return undefined;
}

/** Nothing lost, nothing twice, publish order, the ids the SDK returned, and no reset. */
export function exactProblems(client: Client, log: PublishLog): string[] {
  const problems = [...client.problems];
  for (const topic of client.topics) {
    const difference = compareEvents(client.items(topic), inIdOrder(log.resolved.get(topic) ?? []));
    if (difference) problems.push(`${client.name} ${topic}: ${difference}`);
  }
  return problems;
}

/**
 * History was lost under the clients (Redis restart without persistence, FLUSHALL): per topic, the events
 * of the old epoch (a gap-free prefix of them, or all of them when `completeBefore`), exactly one
 * `gateway.reset` (stream-lost), then every event of the new epoch, each once, in order. Events whose send
 * rejected may appear (their outcome is unknown) but only in their place; anything else is wrong data.
 */
export function epochChangeProblems(
  client: Client,
  log: PublishLog,
  options: { readonly completeBefore: boolean },
): { problems: string[]; lostBefore: number } {
  const problems = [...client.problems];
  let lostBefore = 0;
  for (const topic of client.topics) {
    const sent = log.resolved.get(topic) ?? [];
    const epochs = epochsOf(sent);
    if (epochs.length !== 2) {
      problems.push(`${topic}: resolved sends span ${epochs.length} epoch(s), expected the old and the new one`);
      continue;
    }
    const [oldEpoch, newEpoch] = epochs as [string, string];
    const byData = new Map(sent.map((event) => [event.data, event]));
    const items = client.items(topic);
    const resets = items.flatMap((item, index) => (item.kind === 'reset' ? [index] : []));
    const label = `${client.name} ${topic}`;
    if (resets.length !== 1) {
      problems.push(`${label}: ${resets.length} gateway.reset events, expected exactly 1 (${describeItems(items)})`);
      continue;
    }
    const at = resets[0] as number;
    const reset = items[at] as Item & { kind: 'reset' };
    if (reset.reason !== 'stream-lost') problems.push(`${label}: reset reason ${reset.reason}, expected stream-lost`);
    const segment = (part: readonly Item[], epoch: string, name: string) => {
      const delivered: Sent[] = [];
      let previous: Position | undefined;
      for (const item of part) {
        if (item.kind !== 'event') continue;
        const position = parsePosition(item.id);
        if (!position || position.epoch !== epoch) {
          problems.push(`${label}: ${item.data} with id ${item.id} ${name} the reset, not in epoch ${epoch}`);
          return delivered;
        }
        if (previous && comparePositions(position, previous) <= 0) {
          problems.push(`${label}: id ${item.id} (${item.data}) does not increase ${name} the reset`);
          return delivered;
        }
        previous = position;
        const stored = byData.get(item.data);
        if (stored) {
          if (stored.id !== item.id)
            problems.push(`${label}: ${item.data} arrived with id ${item.id}, stored as ${stored.id}`);
          delivered.push(stored);
        } else if (!log.rejected.has(item.data)) {
          problems.push(`${label}: ${item.data} (${item.id}) was never published`);
        }
      }
      return delivered;
    };
    const before = segment(items.slice(0, at), oldEpoch, 'before');
    const after = segment(items.slice(at + 1), newEpoch, 'after');
    const expectedBefore = inIdOrder(sent.filter((event) => event.position.epoch === oldEpoch));
    const expectedAfter = inIdOrder(sent.filter((event) => event.position.epoch === newEpoch));
    const asItems = (events: readonly Sent[]): Item[] =>
      events.map((event) => ({ kind: 'event', id: event.id, data: event.data, stream: 0 }));
    const prefix = options.completeBefore ? expectedBefore : expectedBefore.slice(0, before.length);
    const differenceBefore = compareEvents(asItems(before), prefix);
    if (differenceBefore) problems.push(`${label} before the reset: ${differenceBefore}`);
    lostBefore += expectedBefore.length - before.length;
    const differenceAfter = compareEvents(asItems(after), expectedAfter);
    if (differenceAfter) problems.push(`${label} after the reset: ${differenceAfter}`);
  }
  return { problems, lostBefore };
}

/** What faultProblems found: problems, the resets seen, and the acknowledged events no reset accounts for. */
export interface FaultOutcome {
  /** Wrong data, duplicates, wrong ids, order, and (with `allowResets: false`) any reset. */
  readonly problems: string[];
  /** gateway.reset events received, by reason. */
  readonly resets: Record<string, number>;
  /** Acknowledged events a client never got, each with a reset between its neighbours. */
  readonly covered: number;
  /**
   * Acknowledged events a client never got without a reset between its neighbours: silent loss. Not in
   * `problems`, so the caller can tell (by asking Redis) what the gateway lost from what Redis lost.
   */
  readonly uncovered: Sent[];
  /** Events whose send rejected that a client got anyway (they were stored: "outcome unknown"). */
  readonly rejectedDelivered: number;
}

/**
 * A fault that may lose what Redis acknowledged (a failover to a replica missing writes) or make sends fail
 * with an unknown outcome. Per topic: every data event is one the SDK sent (resolved, or rejected: stored
 * anyway), with the id the SDK returned, at most once; between two resets ids strictly increase within one
 * epoch; resolved events arrive in id order; and every acknowledged event the client did not get has a
 * `gateway.reset` between the delivered events around it (in id order), or it is listed in `uncovered`.
 * `allowResets: false` also makes any reset a problem (Redis lost nothing).
 */
export function faultProblems(
  client: Client,
  log: PublishLog,
  options: { readonly allowResets: boolean },
): FaultOutcome {
  const problems = [...client.problems];
  const resets: Record<string, number> = {};
  let covered = 0;
  let rejectedDelivered = 0;
  const uncovered: Sent[] = [];
  for (const topic of client.topics) {
    const label = `${client.name} ${topic}`;
    const sent = log.resolved.get(topic) ?? [];
    const byData = new Map(sent.map((event) => [event.data, event]));
    const items = client.items(topic);
    const indexOfData = new Map<string, number>();
    let previous: Position | undefined;
    for (const [index, item] of items.entries()) {
      if (item.kind === 'reset') {
        resets[item.reason] = (resets[item.reason] ?? 0) + 1;
        if (!options.allowResets) problems.push(`${label}: gateway.reset (${item.reason}, ${item.id}) at #${index}`);
        previous = undefined;
        continue;
      }
      if (indexOfData.has(item.data)) {
        problems.push(`${label}: ${item.data} arrived twice (#${indexOfData.get(item.data)} and #${index})`);
        continue;
      }
      indexOfData.set(item.data, index);
      const position = parsePosition(item.id);
      if (!position) {
        problems.push(`${label}: ${item.data} has an id that does not parse: ${item.id}`);
        continue;
      }
      if (previous && (position.epoch !== previous.epoch || comparePositions(position, previous) <= 0)) {
        problems.push(`${label}: ${item.data} (${item.id}) does not follow the previous id without a reset`);
      }
      previous = position;
      const stored = byData.get(item.data);
      if (stored) {
        if (stored.id !== item.id)
          problems.push(`${label}: ${item.data} arrived with id ${item.id}, stored as ${stored.id}`);
      } else if (log.rejected.has(item.data)) {
        rejectedDelivered++;
      } else {
        problems.push(`${label}: ${item.data} (${item.id}) was never published`);
      }
    }
    // The acknowledged events in stream order: epochs in the order they appeared, ids within each.
    const epochs = epochsOf(sent);
    const expected = epochs.flatMap((epoch) => inIdOrder(sent.filter((event) => event.position.epoch === epoch)));
    const resetAt = items.flatMap((item, index) => (item.kind === 'reset' ? [index] : []));
    let lastDelivered = -1;
    let outOfOrder = 0;
    const missing: number[] = [];
    const settle = (until: number) => {
      for (const at of missing.splice(0)) {
        if (resetAt.some((index) => index > lastDelivered && index < until)) covered++;
        else uncovered.push(expected[at] as Sent);
      }
    };
    for (const [at, event] of expected.entries()) {
      const index = indexOfData.get(event.data);
      if (index === undefined) {
        missing.push(at);
        continue;
      }
      settle(index);
      if (index < lastDelivered) outOfOrder++;
      lastDelivered = Math.max(lastDelivered, index);
    }
    settle(items.length);
    if (outOfOrder > 0) problems.push(`${label}: ${outOfOrder} acknowledged event(s) arrived out of id order`);
  }
  return { problems, resets, covered, uncovered, rejectedDelivered };
}

/** Items as runs, e.g. `ex20 R:stream-lostx1 ex15`, for failure messages. */
export function describeItems(items: readonly Item[]): string {
  const kinds = items.map((item) => (item.kind === 'reset' ? `R:${item.reason}` : 'e'));
  const runs: string[] = [];
  for (const kind of kinds) {
    const last = runs.at(-1);
    if (last?.startsWith(`${kind}x`)) runs[runs.length - 1] = `${kind}x${Number(last.slice(kind.length + 1)) + 1}`;
    else runs.push(`${kind}x1`);
  }
  return runs.join(' ');
}
