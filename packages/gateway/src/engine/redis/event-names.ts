/**
 * Event names read from Redis come from any publisher, not only ours: one that would break the SSE framing
 * (CR, LF, NUL, or empty) is sent as the default type instead, with one warning per node.
 */
import type { Logger } from 'pino';

export class EventNameGuard {
  #warned = false;

  constructor(private readonly log: Logger) {}

  safe(event: string, topic: string): string {
    if (event !== '' && !/[\r\n\0]/.test(event)) return event;
    if (!this.#warned) {
      this.#warned = true;
      this.log.warn({ topic }, 'an event name with CR, LF or NUL (or empty) was read from Redis; sent as "message"');
    }
    return 'message';
  }
}
