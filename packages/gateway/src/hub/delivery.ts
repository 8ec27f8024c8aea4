/** A publication encoded once per node: every connection of the topic writes these same bytes. */
import { formatPosition, type Position } from '@sse-gateway/publisher-sdk/protocol';
import type { Publication } from '../engine/engine.js';
import { encodeBody } from '../sse/frame.js';

export interface Delivery {
  readonly topic: string;
  readonly position: Position;
  /** The single-topic event id, `epoch:ms-seq`. */
  readonly idText: string;
  /** `id:` line plus body: what a single-topic connection writes. */
  readonly frame: Buffer;
  /** `event:`/`data:` lines and the blank line: what a multi-topic connection writes after its own id line. */
  readonly body: Buffer;
  /** When this node encoded it (epoch ms): a stream whose credentials expired before gets it no more. */
  readonly at: number;
}

/** Consecutive replayed events of one topic, their frames concatenated for one write. */
export interface ReplayChunk {
  readonly deliveries: readonly Delivery[];
  readonly bytes: Buffer;
}

export function encodeDelivery(publication: Publication): Delivery {
  const idText = formatPosition(publication.position);
  const body = encodeBody(publication.event, publication.data);
  return {
    topic: publication.topic,
    position: publication.position,
    idText,
    frame: Buffer.from(`id: ${idText}\n${body}`),
    body: Buffer.from(body),
    at: Date.now(),
  };
}
