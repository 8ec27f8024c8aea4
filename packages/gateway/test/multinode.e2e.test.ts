/**
 * Multi-node and fault tests with real processes: one redis-server, three gateway processes
 * (`node dist/main.js`) on their own loopback ports, real `eventsource` clients and SDK Redis publishers.
 * There is no load balancer: every client picks its node, and when it has to move (its node died, or the
 * test moves it) it closes its stream and opens one on another node with its last event id, as a browser
 * behind a balancer would.
 *
 * Every check compares what each client received with what the SDK said it stored: per topic, the events
 * whose `send` resolved, ordered by their ids (which strictly increase within a topic and are the publish
 * order). Faults that lose history (a Redis restart without persistence, FLUSHALL) must show up as one
 * `gateway.reset` (stream-lost) between the old epoch's events and the new epoch's, never as silent loss.
 *
 * The fault cases that touch the server itself (restart, CLIENT KILL, FLUSHALL) run only on the
 * redis-server this file spawns, never on a shared REDIS_URL.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createPublisher, type Publisher } from '@sse-gateway/publisher-sdk';
import { comparePositions, type Position, parsePosition } from '@sse-gateway/publisher-sdk/protocol';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Collector, closeAllCollectors, collect, eventsUrl, metric, unusedPort } from './support/gateway.js';
import { startRedis, type TestRedis, uniquePrefix } from './support/redis-server.js';
import { waitFor } from './support/wait.js';

/** The built gateway: `tsc -b` (part of `pnpm test`) writes it. */
const MAIN_PATH = fileURLToPath(new URL('../dist/main.js', import.meta.url));
/** This file's Redis is shared only when REDIS_URL is set: then nothing may restart, kill or flush it. */
const SHARED_REDIS = Boolean(process.env.REDIS_URL);
const PREFIX = uniquePrefix('multinode');
/** Large enough that nothing is trimmed in these tests: every gap must come from the faults themselves. */
const HISTORY_MAX_LENGTH = 100_000;
const NODE_COUNT = 3;
/** Deadline of every wait on a condition (generous: a loaded 2-core CI machine). */
const WAIT_MS = 30_000;
const READY_MS = 30_000;
const TEST_MS = 120_000;
/** Pause between publish rounds of the open-ended publishers: pacing the load, not synchronisation. */
const PACE_MS = 10;
/** Events a client must receive between two steps of a scenario (so each step happens mid-stream). */
const STEP_EVENTS = 20;

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------
// Gateway processes
// ---------------------------------------------------------------------------------------------------

/** Every child process this file spawned, SIGKILLed if the worker exits without running afterAll. */
const children = new Set<ChildProcess>();
const killChildrenOnExit = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
};

class GatewayProcess {
  #child: ChildProcess | undefined;
  #log = '';

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: Readonly<Record<string, string>>,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    const child = this.#child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** The tail of the process' output, for failure messages. */
  log(): string {
    return this.#log;
  }

  /** Spawns the process on this node's port; resolves once /readyz answers 200. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    const child = spawn(process.execPath, [MAIN_PATH], {
      // A clean environment: nothing of the test runner's (auth secrets, REDIS_PREFIX...) leaks in.
      env: { PATH: process.env.PATH ?? '', ...this.env, PORT: String(this.port) },
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
    const deadline = Date.now() + READY_MS;
    for (;;) {
      if (!this.running) {
        throw new Error(
          `${this.name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${this.#log}`,
        );
      }
      if (await isReady(this.url)) return;
      if (Date.now() > deadline) throw new Error(`${this.name} not ready within ${READY_MS} ms:\n${this.#log}`);
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

async function isReady(url: string): Promise<boolean> {
  return fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5000) }).then(
    async (response) => {
      await response.body?.cancel();
      return response.ok;
    },
    () => false,
  );
}

function gatewayEnv(redisUrl: string): Record<string, string> {
  return {
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    REDIS_PREFIX: PREFIX,
    LOG_LEVEL: 'warn',
    HISTORY_MAX_LENGTH: String(HISTORY_MAX_LENGTH),
    RETRY_MS: '200',
    RETRY_JITTER: '0',
    DRAIN_MS: '0',
    // The test process reads every stream; a busy CI box must not turn that into write timeouts.
    WRITE_TIMEOUT_MS: '15000',
  };
}

/** Starts node `index` on a free port; another port if that one was taken meanwhile. */
async function startNode(index: number, redisUrl: string): Promise<GatewayProcess> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const node = new GatewayProcess(`node${index}`, await unusedPort(), gatewayEnv(redisUrl));
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

// ---------------------------------------------------------------------------------------------------
// Publishing: what the SDK says it stored
// ---------------------------------------------------------------------------------------------------

/** An event whose `send` resolved, with the id the SDK returned. */
interface Sent {
  readonly topic: string;
  readonly data: string;
  readonly id: string;
  readonly position: Position;
  readonly publisher: string;
  readonly n: number;
}

interface PublishLog {
  /** Per topic, in the order the sends resolved. */
  readonly resolved: Map<string, Sent[]>;
  /** Data of events whose send rejected (they may or may not have been stored). */
  readonly rejected: Set<string>;
}

interface PublishRun {
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

const openPublishers = new Set<Publisher>();

function newPublishers(
  redisUrl: string,
  count: number,
  options: { readonly maxLength?: number; readonly maxRetryTimeMs?: number } = {},
): Publisher[] {
  return Array.from({ length: count }, () => {
    const publisher = createPublisher({
      redis: redisUrl,
      prefix: PREFIX,
      maxLength: options.maxLength ?? HISTORY_MAX_LENGTH,
      // A send waiting for Redis fails within this, so a run cannot hang on one.
      maxRetryTimeMs: options.maxRetryTimeMs ?? 10_000,
    });
    openPublishers.add(publisher);
    return publisher;
  });
}

async function closePublishers(publishers: readonly Publisher[]): Promise<void> {
  await Promise.allSettled(publishers.map((publisher) => publisher.close()));
  for (const publisher of publishers) openPublishers.delete(publisher);
}

/**
 * Each publisher `p` publishes rounds n = 0, 1, ...: one event per topic, data `topic|tag<p>|n`, up to
 * `window` rounds in flight (pipelined on its connection), `paceMs` between rounds, until `rounds` or `stop()`.
 */
function runPublishers(options: {
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
      const round = Promise.all(
        topics.map((topic) => {
          const data = `${topic}|${name}|${n}`;
          return publisher.send('message', data, { topic }).then(
            (id) => {
              const position = parsePosition(id);
              if (!position) throw new Error(`the SDK returned an id that does not parse: ${id}`);
              log.resolved.get(topic)?.push({ topic, data, id, position, publisher: name, n });
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
function inIdOrder(sent: readonly Sent[]): Sent[] {
  return [...sent].sort((a, b) => comparePositions(a.position, b.position));
}

function epochsOf(sent: readonly Sent[]): string[] {
  const epochs: string[] = [];
  for (const event of sent) if (epochs.at(-1) !== event.position.epoch) epochs.push(event.position.epoch);
  return epochs;
}

/** What the SDK answered must already be consistent: distinct ids, increasing per publisher in publish order. */
function publishProblems(log: PublishLog, options: { readonly singleEpoch: boolean }): string[] {
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

type Item =
  | { readonly kind: 'event'; readonly id: string; readonly data: string; readonly stream: number }
  | { readonly kind: 'reset'; readonly id: string; readonly reason: string; readonly stream: number };

let nodes: GatewayProcess[] = [];

class Client {
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
    const gateway = nodes[node];
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

async function waitForOpen(clients: readonly Client[]): Promise<void> {
  await waitFor(() => clients.every((client) => client.current.opens >= 1), {
    timeoutMs: WAIT_MS,
    what: `${clients.length} streams to open`,
  }).catch((error: Error) => {
    const closed = clients.filter((client) => client.current.opens < 1).map((client) => client.describe());
    throw new Error(`${error.message}: ${closed.join('; ')}`);
  });
}

/** Waits until every client got at least `count` data events per topic (counting over all its streams). */
async function waitForEach(clients: readonly Client[], count: (client: Client, topic: string) => number, what: string) {
  await waitFor(
    () => clients.every((client) => client.topics.every((topic) => client.count(topic) >= count(client, topic))),
    {
      timeoutMs: WAIT_MS,
      what,
    },
  ).catch((error: Error) => {
    throw new Error(`${error.message}: ${clients.map((client) => client.describe()).join('; ')}`);
  });
}

/** Waits until every client received the newest stored event of each of its topics (by id, in the last epoch). */
async function waitForDelivery(clients: readonly Client[], log: PublishLog): Promise<void> {
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
  await waitFor(() => behind().length === 0, { timeoutMs: WAIT_MS, what: 'every client to get the last event' }).catch(
    (error: Error) => {
      const expected = [...log.resolved].map(([topic, sent]) => `${topic}=${sent.length}`).join(' ');
      const stuck = behind().map((client) => client.describe());
      throw new Error(`${error.message}; resolved ${expected}; behind: ${stuck.join('; ')}`);
    },
  );
}

/** A reset a client must get at a given point. */
interface ExpectedReset {
  readonly kind: 'reset';
  readonly reason: string;
  readonly id: string;
}

/** The first difference between what a client got and what it should have got, with counts. */
function compareEvents(got: readonly Item[], expected: readonly (Sent | ExpectedReset)[]): string | undefined {
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
function exactProblems(client: Client, log: PublishLog): string[] {
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
function epochChangeProblems(
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

function describeItems(items: readonly Item[]): string {
  const kinds = items.map((item) => (item.kind === 'reset' ? `R:${item.reason}` : 'e'));
  const runs: string[] = [];
  for (const kind of kinds) {
    const last = runs.at(-1);
    if (last?.startsWith(`${kind}x`)) runs[runs.length - 1] = `${kind}x${Number(last.slice(kind.length + 1)) + 1}`;
    else runs.push(`${kind}x1`);
  }
  return runs.join(' ');
}

// ---------------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------------

describe('multi-node: 3 gateway processes on one Redis, clients on specific nodes', () => {
  let redis: TestRedis;
  let admin: Redis | undefined;

  beforeAll(async () => {
    if (!existsSync(MAIN_PATH)) throw new Error(`${MAIN_PATH} is missing: build first (npx tsc -b)`);
    process.once('exit', killChildrenOnExit);
    redis = await startRedis();
    const started = await Promise.allSettled(
      Array.from({ length: NODE_COUNT }, (_, index) => startNode(index, redis.url)),
    );
    // Keep whatever started, so afterAll stops it even when another node failed to start.
    nodes = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failed = started.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
  }, 90_000);

  beforeEach(({ onTestFailed }) => {
    // What the nodes logged (warnings and up) is often the quickest way to the cause of a failure.
    onTestFailed(() => {
      for (const node of nodes)
        console.warn(`--- ${node.name} (port ${node.port}) log tail:\n${node.log().slice(-4000)}`);
    });
  });

  afterAll(async () => {
    closeAllCollectors();
    await Promise.allSettled([...openPublishers].map((publisher) => publisher.close()));
    openPublishers.clear();
    admin?.disconnect();
    await Promise.allSettled(nodes.map((node) => node.kill('SIGKILL')));
    await redis?.stop().catch(() => {});
    process.off('exit', killChildrenOnExit);
  }, 60_000);

  const adminConnection = (): Redis => {
    if (!admin) {
      admin = new Redis(redis.url, { protocol: 2, maxRetriesPerRequest: 3, connectionName: 'multinode-test-admin' });
      // It reconnects by itself after the Redis restart; its errors meanwhile are expected.
      admin.on('error', () => {});
    }
    return admin;
  };

  it(
    '30 clients over 3 nodes, 5 parallel publishers: every event once, in publish order, with the SDK ids',
    async () => {
      const topics = ['fanout/a', 'fanout/b', 'fanout/c'];
      const clients: Client[] = [];
      for (let i = 0; i < 30; i++) {
        const node = i % NODE_COUNT;
        const first = Math.floor(i / NODE_COUNT) % topics.length;
        // Every topic has clients on every node; one client in five follows two topics.
        const followed = [topics[first] as string];
        if (i % 5 === 4) followed.push(topics[(first + 1) % topics.length] as string);
        clients.push(new Client(`c${i}`, followed, node));
      }
      await waitForOpen(clients);

      const publishers = newPublishers(redis.url, 5);
      const rounds = 150;
      const run = runPublishers({ publishers, topics, tag: 'p', rounds, window: 8, paceMs: 0 });
      await run.done;
      await closePublishers(publishers);
      expect(run.log.rejected.size).toBe(0);
      expect(run.resolvedCount()).toBe(5 * rounds * topics.length);
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);

      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      // Spelled out: each publisher's sequence of each topic is complete and in order at every client.
      const sequenceProblems: string[] = [];
      for (const client of clients) {
        for (const topic of client.topics) {
          const items = client.items(topic);
          for (let p = 0; p < publishers.length; p++) {
            const ns = items.flatMap((item) =>
              item.kind === 'event' && item.data.split('|')[1] === `p${p}` ? [Number(item.data.split('|')[2])] : [],
            );
            if (ns.length !== rounds || ns.some((n, index) => n !== index)) {
              sequenceProblems.push(
                `${client.name} ${topic} p${p}: ${ns.length} events, not 0..${rounds - 1} in order`,
              );
            }
          }
        }
      }
      expect(sequenceProblems).toEqual([]);
      // Nobody had to reconnect: this is delivery on live connections.
      expect(clients.filter((client) => client.current.opens !== 1).map((client) => client.describe())).toEqual([]);
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it(
    'a client that drops and resumes on a different node with its last id gets no gap and no duplicate (single and multi-topic)',
    async () => {
      const topics = ['resume/a', 'resume/b'];
      const movers = [
        new Client('single-a', ['resume/a'], 0),
        new Client('single-b', ['resume/b'], 1),
        new Client('multi-0', topics, 0),
        new Client('multi-2', topics, 2),
      ];
      const stayers = [new Client('stay-a', ['resume/a'], 2), new Client('stay-ab', topics, 1)];
      const clients = [...movers, ...stayers];
      await waitForOpen(clients);
      const publishers = newPublishers(redis.url, 2);
      const run = runPublishers({ publishers, topics, tag: 'r' });
      try {
        // Three hops each (around all three nodes), one of them with the id as query parameter.
        for (const via of ['header', 'query', 'header'] as const) {
          await waitFor(() => movers.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
            timeoutMs: WAIT_MS,
            what: `${STEP_EVENTS} events on every mover's current stream`,
          });
          const ids = movers.map((client) => client.drop());
          // Events published while the clients are away must come from history.
          const mark = run.resolvedCount();
          await waitFor(() => run.resolvedCount() >= mark + STEP_EVENTS, {
            timeoutMs: WAIT_MS,
            what: 'publishing to go on while the clients are away',
          });
          movers.forEach((client, index) => {
            client.open((client.node + 1) % NODE_COUNT, ids[index], via);
          });
        }
        await waitFor(() => movers.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on every mover's last stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      for (const client of movers) {
        expect(client.streams.map((stream) => stream.opens)).toEqual([1, 1, 1, 1]);
        // Every hop went to a different node.
        expect(client.visited.every((node, index) => index === 0 || node !== client.visited[index - 1])).toBe(true);
      }
      expect(stayers.map((client) => client.current.opens)).toEqual([1, 1]);
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'CLIENT KILL TYPE pubsub while publishing: connected clients miss nothing (the nodes refill from the streams)',
    async () => {
      const topics = ['pubsub/a', 'pubsub/b'];
      const clients = [
        new Client('a@0', ['pubsub/a'], 0),
        new Client('b@1', ['pubsub/b'], 1),
        new Client('ab@2', topics, 2),
        new Client('ab@0', topics, 0),
        new Client('a@1', ['pubsub/a'], 1),
        new Client('b@2', ['pubsub/b'], 2),
      ];
      await waitForOpen(clients);
      const redisAdmin = adminConnection();
      const publishers = newPublishers(redis.url, 2);
      const run = runPublishers({ publishers, topics, tag: 'k' });
      try {
        for (let kill = 1; kill <= 3; kill++) {
          await waitForEach(clients, () => kill * STEP_EVENTS, `${kill * STEP_EVENTS} events per topic per client`);
          const refills = await Promise.all(
            nodes.map((node) => metric(node.url, 'sse_gateway_engine_events', { counter: 'refills' })),
          );
          const killed = Number(await redisAdmin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'));
          // One subscriber connection per node (nothing else on this server subscribes).
          expect(killed).toBeGreaterThanOrEqual(NODE_COUNT);
          // Each node noticed and reconnected (its refill started) before the next kill.
          await waitFor(
            async () => {
              const now = await Promise.all(
                nodes.map((node) => metric(node.url, 'sse_gateway_engine_events', { counter: 'refills' })),
              );
              return now.every((value, index) => value > (refills[index] as number));
            },
            { timeoutMs: WAIT_MS, what: `every node to refill after CLIENT KILL #${kill}` },
          );
        }
        await waitForEach(clients, () => 4 * STEP_EVENTS, `${4 * STEP_EVENTS} events per topic per client`);
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      // Connected clients: their streams never broke.
      expect(clients.map((client) => [client.current.opens, client.current.errors])).toEqual(clients.map(() => [1, 0]));
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'subscriber away while history is trimmed past a live client: gateway.reset (trimmed), then what history still holds',
    async () => {
      const topics = ['trim/a', 'trim/b'];
      const clients = [
        new Client('a@0', ['trim/a'], 0),
        new Client('a@1', ['trim/a'], 1),
        new Client('ab@2', topics, 2),
        new Client('ab@0', topics, 0),
      ];
      await waitForOpen(clients);
      const redisAdmin = adminConnection();
      // These topics' only publisher keeps 50 events (retention is applied by whoever publishes).
      const keep = 50;
      const [publisher] = newPublishers(redis.url, 1, { maxLength: keep });
      if (!publisher) throw new Error('no publisher');
      const log: PublishLog = { resolved: new Map(topics.map((topic) => [topic, []])), rejected: new Set() };
      const publish = async (topic: string, name: string, count: number) => {
        const datas = Array.from({ length: count }, (_, n) => `${topic}|${name}|${n}`);
        const ids = await publisher.sendMany(datas.map((data) => ({ topic, event: 'message', data })));
        return datas.map((data, n): Sent => {
          const id = ids[n] as string;
          const sent = { topic, data, id, position: parsePosition(id) as Position, publisher: name, n };
          log.resolved.get(topic)?.push(sent);
          return sent;
        });
      };
      const before = [...(await publish('trim/a', 'before', 10)), ...(await publish('trim/b', 'before', 5))];
      await waitForDelivery(clients, log);

      const refills = await Promise.all(
        nodes.map((node) => metric(node.url, 'sse_gateway_engine_events', { counter: 'refills' })),
      );
      const [, maxClients = '10000'] = (await redisAdmin.config('GET', 'maxclients')) as string[];
      let burst: Sent[];
      let quiet: Sent[];
      // Keep the killed subscribers out while 200 events go in: the server refuses every new connection
      // (the connections open now, this one and the publisher's included, stay).
      await redisAdmin.config('SET', 'maxclients', '1');
      try {
        expect(Number(await redisAdmin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBe(NODE_COUNT);
        burst = await publish('trim/a', 'burst', 200);
        quiet = await publish('trim/b', 'quiet', 5);
        expect(String(await redisAdmin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).trim()).toBe('');
      } finally {
        await redisAdmin.config('SET', 'maxclients', maxClients);
      }
      await waitFor(
        async () => {
          const now = await Promise.all(
            nodes.map((node) => metric(node.url, 'sse_gateway_engine_events', { counter: 'refills' })),
          );
          return now.every((value, index) => value > (refills[index] as number));
        },
        { timeoutMs: WAIT_MS, what: 'every node to start a refill once its subscriber is back' },
      );
      // The refill is over once the clients have the last burst event: only then may more events come, or
      // they would trim what the refill has yet to read (an honest second reset, but not this test's point).
      await waitForDelivery(clients, log);
      const after = [...(await publish('trim/a', 'after', 10)), ...(await publish('trim/b', 'after', 5))];
      await waitForDelivery(clients, log);
      await closePublishers([publisher]);

      const ofTopic = (sent: readonly Sent[], topic: string) => sent.filter((event) => event.topic === topic);
      const trimmedUpTo = burst[burst.length - keep - 1] as Sent;
      const expected = new Map<string, (Sent | ExpectedReset)[]>([
        [
          'trim/a',
          [
            ...ofTopic(before, 'trim/a'),
            { kind: 'reset', reason: 'trimmed', id: trimmedUpTo.id },
            ...burst.slice(-keep),
            ...ofTopic(after, 'trim/a'),
          ],
        ],
        // Nothing of trim/b was trimmed: the refill brings all of it, without a reset.
        ['trim/b', [...ofTopic(before, 'trim/b'), ...quiet, ...ofTopic(after, 'trim/b')]],
      ]);
      const problems = clients.flatMap((client) => [
        ...client.problems,
        ...client.topics.flatMap((topic) => {
          const difference = compareEvents(client.items(topic), expected.get(topic) ?? []);
          return difference ? [`${client.name} ${topic}: ${difference}`] : [];
        }),
      ]);
      expect(problems).toEqual([]);
      expect(clients.map((client) => [client.current.opens, client.current.errors])).toEqual(clients.map(() => [1, 0]));
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it(
    'kill -9 of a gateway while publishing: its clients resume on the other nodes and lose nothing',
    async () => {
      const topics = ['crash/a', 'crash/b'];
      const victims = [
        new Client('v-a', ['crash/a'], 0),
        new Client('v-b', ['crash/b'], 0),
        new Client('v-ab', topics, 0),
        new Client('v-ab2', topics, 0),
      ];
      const survivors = [
        new Client('s-a', ['crash/a'], 1),
        new Client('s-b', ['crash/b'], 2),
        new Client('s-ab', topics, 1),
      ];
      const clients = [...victims, ...survivors];
      await waitForOpen(clients);
      const victim = nodes[0] as GatewayProcess;
      const publishers = newPublishers(redis.url, 2);
      const run = runPublishers({ publishers, topics, tag: 'x' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        await victim.kill('SIGKILL');
        // Each victim saw its stream die (and read whatever arrived before), then moves, like behind a balancer.
        await waitFor(() => victims.every((client) => client.current.errors >= 1), {
          timeoutMs: WAIT_MS,
          what: 'the victims to notice their node died',
        });
        victims.forEach((client, index) => {
          client.moveTo(1 + (index % 2));
        });
        await waitFor(() => victims.every((client) => client.receivedOnCurrent() >= STEP_EVENTS), {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on every victim's new stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
        // The later tests need three nodes again.
        if (!victim.running) await victim.start();
      }
      expect(publishProblems(run.log, { singleEpoch: true })).toEqual([]);
      await waitForDelivery(clients, run.log);
      expect(clients.flatMap((client) => exactProblems(client, run.log))).toEqual([]);
      expect(victims.map((client) => client.streams.length)).toEqual(victims.map(() => 2));
      expect(survivors.map((client) => [client.current.opens, client.current.errors])).toEqual(
        survivors.map(() => [1, 0]),
      );
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'redis-server down and restarted empty while publishing: every resolved send arrives once, in order; one stream-lost reset between the epochs',
    async () => {
      const topics = ['restart/a', 'restart/b'];
      const clients = [
        new Client('a@0', ['restart/a'], 0),
        new Client('b@1', ['restart/b'], 1),
        new Client('ab@2', topics, 2),
        new Client('ab@0', topics, 0),
        new Client('a@2', ['restart/a'], 2),
        new Client('ab@1', topics, 1),
      ];
      await waitForOpen(clients);
      // Sends give up after 1 s without Redis, so the outage below makes some of them reject.
      const publishers = newPublishers(redis.url, 2, { maxRetryTimeMs: 1000 });
      const run = runPublishers({ publishers, topics, tag: 'z' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        await redis.stop();
        // The outage lasts until every node says it is not ready, and then until sends made during the
        // outage gave up (besides those in flight when the connection dropped).
        await waitFor(async () => (await Promise.all(nodes.map((node) => isReady(node.url)))).every((ok) => !ok), {
          timeoutMs: WAIT_MS,
          what: 'every node to answer 503 on /readyz',
        });
        const rejectedInFlight = run.log.rejected.size;
        await waitFor(() => run.log.rejected.size > rejectedInFlight, {
          timeoutMs: WAIT_MS,
          what: 'sends made during the outage to reject',
        });
        // Same port, empty server (no persistence): every topic's history is gone.
        await redis.restart();
        const mark = run.resolvedCount();
        await waitFor(() => run.resolvedCount() >= mark + 4 * STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: 'publishing to resume on the restarted Redis',
        });
        await waitFor(async () => (await Promise.all(nodes.map((node) => isReady(node.url)))).every(Boolean), {
          timeoutMs: WAIT_MS,
          what: 'every node ready again',
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: false })).toEqual([]);
      await waitForDelivery(clients, run.log);
      const results = clients.map((client) => epochChangeProblems(client, run.log, { completeBefore: false }));
      expect(results.flatMap((result) => result.problems)).toEqual([]);
      const lost = results.reduce((sum, result) => sum + result.lostBefore, 0);
      console.info(
        `redis restart: ${run.resolvedCount()} sends resolved, ${run.log.rejected.size} rejected; ` +
          `${lost} pre-restart events missed by clients (each followed by its reset)`,
      );
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );

  it.skipIf(SHARED_REDIS)(
    'FLUSHALL: a client resuming with an old id, and every connected client, get gateway.reset (stream-lost) before new events',
    async () => {
      const topics = ['flush/a', 'flush/b'];
      const connected = [
        new Client('a@0', ['flush/a'], 0),
        new Client('ab@1', topics, 1),
        new Client('b@2', ['flush/b'], 2),
      ];
      // Resume with an old id: one before anything is published again (no stream at all), one after.
      const early = new Client('early-a', ['flush/a'], 0);
      const late = new Client('late-ab', topics, 2);
      const clients = [...connected, early, late];
      await waitForOpen(clients);
      const publishers = newPublishers(redis.url, 2);
      const run = runPublishers({ publishers, topics, tag: 'f' });
      try {
        await waitForEach(clients, () => STEP_EVENTS, `${STEP_EVENTS} events per topic per client`);
        const earlyId = early.drop();
        const lateId = late.drop();
        await run.pause();
        await waitForDelivery(connected, run.log);
        expect(await adminConnection().flushall()).toBe('OK');

        early.open(1, earlyId);
        await waitFor(() => early.items('flush/a').some((item) => item.stream === 1), {
          timeoutMs: WAIT_MS,
          what: 'the early resumer to get its reset',
        });
        const first = early.items('flush/a').find((item) => item.stream === 1);
        expect(first).toMatchObject({ kind: 'reset', reason: 'stream-lost' });

        run.resume();
        const mark = run.resolvedCount();
        await waitFor(() => run.resolvedCount() >= mark + 2 * STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: 'publishing into the new epoch',
        });
        late.open(0, lateId);
        await waitFor(() => late.receivedOnCurrent() >= STEP_EVENTS, {
          timeoutMs: WAIT_MS,
          what: `${STEP_EVENTS} events on the late resumer's new stream`,
        });
      } finally {
        await run.stop();
        await closePublishers(publishers);
      }
      expect(publishProblems(run.log, { singleEpoch: false })).toEqual([]);
      await waitForDelivery(clients, run.log);
      // Connected clients had every old event: theirs must be complete; the resumers left early.
      const problems = [
        ...connected.flatMap((client) => epochChangeProblems(client, run.log, { completeBefore: true }).problems),
        ...[early, late].flatMap((client) => epochChangeProblems(client, run.log, { completeBefore: false }).problems),
      ];
      expect(problems).toEqual([]);
      // The resumers' new streams start with the reset of each topic (before anything of that topic).
      for (const client of [early, late]) {
        for (const topic of client.topics) {
          const first = client.items(topic).find((item) => item.stream === 1);
          expect(first, `${client.name} ${topic}`).toMatchObject({ kind: 'reset', reason: 'stream-lost' });
        }
      }
      for (const client of clients) client.current.close();
    },
    TEST_MS,
  );
});
