/**
 * Cluster-wide operator actions (a new retry hint, closing the streams of a topic or of a token subject)
 * travel as events on a reserved topic that every node follows through its engine, like any topic: on
 * Redis they reach every node, in order, and a node that was cut off from Redis gets the ones it missed
 * from history when it is back. Clients can never follow or publish it: `$` is not a topic character.
 */
import type { Logger } from 'pino';
import type { Engine, Publication } from '../engine/engine.js';
import type { Hub } from '../hub/hub.js';

export const CONTROL_TOPIC = '$gateway/control';
const CONTROL_EVENT = 'control';
/** Pause between attempts to follow the control topic while the engine refuses. */
const SUBSCRIBE_RETRY_MS = 1000;

export type ControlAction =
  | { readonly kind: 'retry'; readonly retryMs: number }
  | { readonly kind: 'close-topic'; readonly topic: string }
  | { readonly kind: 'close-subject'; readonly subject: string };

interface ControlMessage {
  readonly action: ControlAction;
  /** Who asked (for the logs), and through which node. */
  readonly by: string;
  readonly via: string;
}

export interface ControlChannelDeps {
  readonly engine: Engine;
  readonly hub: Hub;
  readonly nodeId: string;
  readonly logger: Logger;
  /** Applies a new retry hint on this node (with the configured jitter). */
  readonly setRetry: (retryMs: number) => void;
}

export class ControlChannel {
  readonly #deps: ControlChannelDeps;
  readonly #log: Logger;
  #stopped = false;

  constructor(deps: ControlChannelDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ mod: 'control' });
  }

  /**
   * Follows the control topic, in the background: the node serves streams whether or not its engine can
   * subscribe yet (Redis down at boot), and a failed subscription is tried again until it holds.
   */
  start(): void {
    void this.#follow();
  }

  /** No more attempts to follow (the node is stopping). */
  stop(): void {
    this.#stopped = true;
  }

  async #follow(): Promise<void> {
    for (let attempt = 1; !this.#stopped; attempt++) {
      try {
        await this.#deps.engine.subscribe(CONTROL_TOPIC);
        return;
      } catch (error) {
        if (attempt === 1) this.#log.warn({ err: error }, 'could not follow the control topic yet; retrying');
        await new Promise((resolve) => setTimeout(resolve, SUBSCRIBE_RETRY_MS).unref());
      }
    }
  }

  /** Sends `action` to every node (this one included); resolves once it is stored. */
  async send(action: ControlAction, by: string): Promise<void> {
    const message: ControlMessage = { action, by, via: this.#deps.nodeId };
    await this.#deps.engine.publish([{ topic: CONTROL_TOPIC, event: CONTROL_EVENT, data: JSON.stringify(message) }]);
  }

  /** A publication of the control topic, from the engine: applies it here. */
  onPublication(publication: Publication): void {
    let message: ControlMessage;
    try {
      message = JSON.parse(publication.data) as ControlMessage;
    } catch {
      this.#log.warn({ data: publication.data.slice(0, 200) }, 'ignored a control message that is not JSON');
      return;
    }
    const { action } = message;
    const { hub } = this.#deps;
    let closed: number | undefined;
    switch (action?.kind) {
      case 'retry':
        this.#deps.setRetry(action.retryMs);
        break;
      case 'close-topic':
        closed = hub.closeTopic(action.topic);
        break;
      case 'close-subject':
        closed = hub.closeSubject(action.subject);
        break;
      default:
        this.#log.warn({ action }, 'ignored an unknown control action');
        return;
    }
    // The node that took the request logged who asked; the others note what it did here.
    this.#log.debug({ action, by: message.by, via: message.via, closed }, 'control action applied');
  }
}
