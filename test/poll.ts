/**
 * The one way tests wait for something to happen: poll a condition, bounded in time and in
 * count, and fail naming what was awaited and the last value seen. Never sleep a fixed time and
 * hope it was long enough.
 */
export interface WaitOptions {
  /** Give up after this long. */
  readonly timeoutMs: number;
  /** The pause between two reads (0 for reads that wait themselves, like SQS long polling). */
  readonly intervalMs: number;
  /** What is awaited, for the error on timeout: "run r1 to finish". */
  readonly what: string;
  /** At most this many reads; by default enough to fill timeoutMs at intervalMs. */
  readonly maxAttempts?: number;
}

export class WaitTimeoutError<T = unknown> extends Error {
  constructor(
    message: string,
    readonly last: T | undefined,
  ) {
    super(message);
    this.name = 'WaitTimeoutError';
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function describeValue(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 2000 ? `${s.slice(0, 2000)}… (${s.length} characters)` : s;
}

/**
 * Calls `read` until `until` holds for what it returned, and returns that value. Throws
 * WaitTimeoutError, naming `what` and the last value read, when `timeoutMs` passed or
 * `maxAttempts` reads were made first. An error thrown by `read` or `until` is not retried.
 */
export async function waitFor<T>(
  read: () => Promise<T>,
  until: (v: T) => boolean,
  opts: WaitOptions,
): Promise<T> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const maxAttempts =
    opts.maxAttempts ?? Math.ceil(opts.timeoutMs / Math.max(opts.intervalMs, 10)) + 1;
  let last: T | undefined;
  let attempts = 0;
  while (attempts < maxAttempts) {
    last = await read();
    attempts++;
    if (until(last)) return last;
    const left = deadline - Date.now();
    if (left <= 0) break;
    if (opts.intervalMs > 0) await pause(Math.min(opts.intervalMs, left));
  }
  throw new WaitTimeoutError(
    `timed out waiting for ${opts.what}: gave up after ${attempts} reads in ` +
      `${Date.now() - started} ms (limit ${opts.timeoutMs} ms); last value: ${describeValue(last)}`,
    last,
  );
}
