/// <reference types="node" />
/**
 * Waiting on conditions, never on fixed sleeps: every test synchronises on something it can observe
 * (an event count, a closed stream, a metric), polled often, with a generous deadline for a loaded CI box.
 */

export interface WaitOptions {
  /** Give up after this long. Default 20 s. */
  readonly timeoutMs?: number;
  /** Poll interval. Default 15 ms. */
  readonly intervalMs?: number;
  /** What is awaited, for the error message: "3000 events on client B". */
  readonly what: string;
}

const DEFAULT_TIMEOUT_MS = 20_000;
const DEFAULT_INTERVAL_MS = 15;

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls `predicate` until it returns a truthy value (which is returned), or throws after the deadline
 * saying what it waited for and, when `predicate` threw, the last error.
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, options: WaitOptions): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const cause =
        lastError === undefined ? '' : ` (last error: ${(lastError as Error)?.message ?? String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what}${cause}`);
    }
    await pause(intervalMs);
  }
}

/** Resolves with the first emission of `event` on `emitter`, or rejects after the deadline. */
export function waitForEvent<A extends unknown[]>(
  emitter: NodeJS.EventEmitter,
  event: string,
  options: { readonly timeoutMs?: number; readonly what: string },
): Promise<A> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${options.what}`));
    }, timeoutMs);
    const listener = (...args: unknown[]) => {
      clearTimeout(timer);
      resolve(args as A);
    };
    emitter.once(event, listener);
  });
}

/** Rejects with a message naming `what` when `promise` does not settle within the deadline. */
export function withDeadline<T>(promise: Promise<T>, options: { readonly timeoutMs?: number; readonly what: string }) {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${options.what}`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
