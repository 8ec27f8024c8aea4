/** Typed errors: every failure of `send` says which kind it is and carries the underlying cause. */

export type PublishErrorKind = 'validation' | 'auth' | 'network' | 'server' | 'closed';

export class PublishError extends Error {
  override readonly name: string = 'PublishError';
  constructor(
    readonly kind: PublishErrorKind,
    message: string,
    options?: { cause?: unknown; status?: number; code?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.status = options?.status;
    this.code = options?.code;
  }
  /** HTTP status, when the gateway answered. */
  readonly status: number | undefined;
  /** The gateway's error code (`invalid_topic`, ...), when it answered with one. */
  readonly code: string | undefined;
}

/** The event was refused before it was sent: bad topic, event name or data. Retrying cannot help. */
export class ValidationError extends PublishError {
  override readonly name = 'ValidationError';
  constructor(message: string, options?: { cause?: unknown; status?: number; code?: string }) {
    super('validation', message, options);
  }
}

/** The gateway refused the credentials (401/403). */
export class AuthError extends PublishError {
  override readonly name = 'AuthError';
  constructor(message: string, options?: { cause?: unknown; status?: number; code?: string }) {
    super('auth', message, options);
  }
}

/**
 * The gateway or Redis could not be reached, stayed unreachable past the retry budget, or stopped answering.
 * `maybeStored` tells the two outcomes apart: retry at once when it is false; when it is true, retry with
 * the same idempotency key (or check history first), or the event may be stored twice.
 */
export class NetworkError extends PublishError {
  override readonly name = 'NetworkError';
  /**
   * True when the events were written and no answer came (the connection dropped with them in flight, or
   * the deadline passed while they were): they may have been stored. False when they never left the
   * process (queued past the deadline, queue full, Redis unreachable for too long, the write refused).
   */
  readonly maybeStored: boolean;
  constructor(message: string, options: { maybeStored: boolean; cause?: unknown; status?: number; code?: string }) {
    super('network', message, options);
    this.maybeStored = options.maybeStored;
  }
}

/** The gateway or Redis answered with an error of its own. */
export class ServerError extends PublishError {
  override readonly name = 'ServerError';
  constructor(message: string, options?: { cause?: unknown; status?: number; code?: string }) {
    super('server', message, options);
  }
}

/** `send` was called after `close()`. */
export class ClosedError extends PublishError {
  override readonly name = 'ClosedError';
  constructor() {
    super('closed', 'the publisher is closed');
  }
}
