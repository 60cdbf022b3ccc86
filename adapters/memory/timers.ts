import type { RetryTimer, RetryTimers } from '../../core/ports.ts';

/**
 * Retry timers in memory: held until a test delivers them (app/retries.ts `onRetryTimer`), in
 * any order, late, twice or never.
 */
export class MemoryRetryTimers implements RetryTimers {
  readonly #waiting: RetryTimer[] = [];
  readonly #scheduled: { timer: RetryTimer; at: string }[] = [];

  async schedule(timer: RetryTimer, now: Date): Promise<void> {
    this.#waiting.push({ ...timer });
    this.#scheduled.push({ timer: { ...timer }, at: now.toISOString() });
  }

  /** Every timer ever scheduled, with when it was scheduled. */
  get scheduled(): { timer: RetryTimer; at: string }[] {
    return this.#scheduled.map((s) => ({ timer: { ...s.timer }, at: s.at }));
  }

  /** The timers not delivered yet, in the order they were scheduled. */
  get waiting(): RetryTimer[] {
    return this.#waiting.map((t) => ({ ...t }));
  }

  /** Removes the waiting timer at `index` (the oldest by default) to deliver it. */
  take(index = 0): RetryTimer | undefined {
    return this.#waiting.splice(index, 1)[0];
  }

  /** Every waiting timer whose `retryAt` has come by `now`, oldest first. */
  takeDue(now: Date): RetryTimer[] {
    const due = this.#waiting.filter((t) => new Date(t.retryAt).getTime() <= now.getTime());
    for (const t of due) this.#waiting.splice(this.#waiting.indexOf(t), 1);
    return due;
  }
}
