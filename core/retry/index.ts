import type { RetrySettings } from '../dag/schema.ts';

/** A source of uniform numbers in [0, 1), injected so that tests are deterministic. */
export type Random = () => number;

/**
 * The delay before retrying after attempt `failedAttempt` (1-based) failed, in milliseconds.
 *
 * - `fixed`: `retryDelaySeconds` every time.
 * - `exponential`: "full jitter" (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
 *   uniform in [0, min(cap, base × 2^(attempt-1))), which spreads a burst of failures out
 *   instead of retrying them all in lock step.
 *
 * Both are capped by `maxRetryDelaySeconds`.
 */
export function retryDelayMs(policy: RetrySettings, failedAttempt: number, random: Random): number {
  // Whole milliseconds: timers and ISO timestamps have no finer grain.
  const cap = Math.floor(policy.maxRetryDelaySeconds * 1000);
  const base = Math.floor(policy.retryDelaySeconds * 1000);
  if (policy.retryBackoff === 'fixed') return Math.min(base, cap);
  // 2^n is Infinity past n = 1023, and 0 × Infinity is NaN: bound the exponent. Past 2^60 the
  // cap (at most a day) has long taken over anyway.
  const ceiling = Math.min(cap, base * 2 ** Math.min(60, Math.max(0, failedAttempt - 1)));
  return Math.floor(random() * ceiling);
}

/**
 * When to run the next attempt after `failedAttempt` failed at `failedAt`, or null when the
 * retries are used up (a task runs at most `retries + 1` times). The delay counts from the
 * failure, not from when the failure was noticed.
 */
export function nextRetryAt(
  policy: RetrySettings,
  failedAttempt: number,
  failedAt: Date,
  random: Random,
): Date | null {
  if (failedAttempt > policy.retries) return null;
  return new Date(failedAt.getTime() + retryDelayMs(policy, failedAttempt, random));
}
