/**
 * History reads: one small script returns a topic's epoch, stream metadata and entries as one consistent
 * snapshot, and the shared resume rule (resume-cursor.ts) decides what the snapshot may serve.
 */
import { ORIGIN, type Position, parseStreamId, topicKeys } from '@sse-gateway/publisher-sdk/protocol';
import type { Cluster, Redis } from 'ioredis';
import type { HistoryPage, Publication } from '../engine.js';
import { judgeCursor } from '../resume-cursor.js';
import type { EventNameGuard } from './event-names.js';

/**
 * KEYS[1] stream, KEYS[2] epoch; ARGV[1] after epoch ('' = from the origin), ARGV[2] after 'ms-seq',
 * ARGV[3] most entries to return (0 = metadata only).
 * Returns {} when the topic has no history, else { epoch, last-generated-id, max-deleted-entry-id, entries }.
 * It only reads; judging the cursor is left to judgeCursor. Entries are read only from a cursor of the
 * stream's own epoch (or the origin), so a cursor of another epoch costs no payload reads.
 */
const READ_SCRIPT = `
local stream, epochKey = KEYS[1], KEYS[2]
local afterEpoch, after, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', stream) == 0 then return {} end
local epoch = redis.call('GET', epochKey)
if not epoch then return {} end
local info = redis.call('XINFO', 'STREAM', stream)
local last, maxDeleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then maxDeleted = info[i + 1] end
end
local entries = {}
if count > 0 and (afterEpoch == '' or afterEpoch == epoch) then
  local start = '-'
  if afterEpoch ~= '' then start = '(' .. after end
  entries = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
end
return { epoch, last, maxDeleted, entries }
`;
const READ_COMMAND = 'sseGatewayRead';

type RawEntry = [string, string[]];
type ReadReply = [] | [string, string, string, RawEntry[]];
type ReadCall = (stream: string, epoch: string, afterEpoch: string, after: string, count: number) => Promise<ReadReply>;

export interface HistoryReaderOptions {
  readonly commands: Redis | Cluster;
  readonly prefix: string;
  readonly eventNames: EventNameGuard;
  /** Called once per round trip (metrics). */
  readonly onRoundTrip: () => void;
  /** Wraps each read so it fails when the command connection drops (it does not re-send). */
  readonly tracked: <T>(promise: Promise<T>) => Promise<T>;
}

export class HistoryReader {
  readonly #options: HistoryReaderOptions;
  readonly #read: ReadCall;

  constructor(options: HistoryReaderOptions) {
    this.#options = options;
    options.commands.defineCommand(READ_COMMAND, { numberOfKeys: 2, lua: READ_SCRIPT, readOnly: true });
    const client = options.commands as unknown as Record<string, ReadCall>;
    this.#read = (client[READ_COMMAND] as ReadCall).bind(client);
  }

  /** The topic's latest position (ORIGIN when it has no history). */
  async head(topic: string): Promise<Position> {
    const snapshot = await this.#snapshot(topic, ORIGIN, 0);
    return snapshot ? snapshot.last : ORIGIN;
  }

  async readAfter(topic: string, after: Position, limit: number): Promise<HistoryPage> {
    const snapshot = await this.#snapshot(topic, after, Math.max(0, limit) + 1);
    const verdict = judgeCursor(after, snapshot);
    if (verdict.kind === 'reset') return verdict;
    if (!snapshot) return { kind: 'events', events: [], more: false };
    const rewound = rewoundBefore(after, snapshot.epoch, snapshot.entries[0]);
    // The entry after the cursor names another predecessor: entries the client had are gone (a failover
    // to a replica that missed writes, then new writes): resume after the entry history does have.
    if (rewound) return { kind: 'reset', reason: 'ahead', position: rewound };
    const events = snapshot.entries.slice(0, limit).map((entry) => {
      const publication = toPublication(topic, snapshot.epoch, entry);
      const event = this.#options.eventNames.safe(publication.event, topic);
      return event === publication.event ? publication : { ...publication, event };
    });
    return { kind: 'events', events, more: snapshot.entries.length > limit };
  }

  async #snapshot(topic: string, after: Position, count: number) {
    this.#options.onRoundTrip();
    const keys = topicKeys(this.#options.prefix, topic);
    const reply = await this.#options.tracked(
      this.#read(keys.stream, keys.epoch, after.epoch, `${after.ms}-${after.seq}`, count),
    );
    if (reply.length === 0) return undefined;
    const [epoch, last, maxDeleted, entries] = reply;
    const removed = toPosition(epoch, maxDeleted);
    return {
      epoch,
      last: toPosition(epoch, last),
      removedThrough: removed.ms === 0 && removed.seq === 0 ? undefined : removed,
      entries,
    };
  }
}

function toPosition(epoch: string, id: string): Position {
  const parsed = parseStreamId(id);
  if (!parsed) throw new Error(`unexpected stream id from Redis: ${id}`);
  return { epoch, ms: parsed.ms, seq: parsed.seq };
}

/** The predecessor of `first` when it is not `after` (same epoch; v2 entries only); undefined otherwise. */
function rewoundBefore(after: Position, epoch: string, first: RawEntry | undefined): Position | undefined {
  if (!first || after.epoch !== epoch) return undefined;
  const fields = first[1];
  let prev: string | undefined;
  for (let index = 0; index + 1 < fields.length; index += 2) if (fields[index] === 'p') prev = fields[index + 1];
  const parsed = prev === undefined ? undefined : parseStreamId(prev);
  if (!parsed || (parsed.ms === after.ms && parsed.seq === after.seq)) return undefined;
  // A predecessor past the cursor only means entries after the cursor were trimmed: judged elsewhere.
  if (parsed.ms > after.ms || (parsed.ms === after.ms && parsed.seq > after.seq)) return undefined;
  return { epoch, ms: parsed.ms, seq: parsed.seq };
}

function toPublication(topic: string, epoch: string, [id, fields]: RawEntry): Publication {
  let event = '';
  let data = '';
  for (let index = 0; index + 1 < fields.length; index += 2) {
    if (fields[index] === 'e') event = fields[index + 1] as string;
    else if (fields[index] === 'd') data = fields[index + 1] as string;
  }
  return { topic, position: toPosition(epoch, id), event, data };
}
