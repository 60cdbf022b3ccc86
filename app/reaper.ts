import { ConflictError } from '../core/errors.ts';
import type { TaskMessage } from '../core/ports.ts';
import { nextRetryAt } from '../core/retry/index.ts';
import { finishTask } from '../core/state/index.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { scheduleRetry } from './retries.ts';
import { queue } from './runs.ts';

export interface ReapOptions {
  /** A queued attempt older than this has probably lost its message: send it again. */
  readonly queuedGraceSeconds: number;
  /** A retry this late has probably lost its timer: queue it now. */
  readonly retryGraceSeconds: number;
  /** At most this many of each kind per pass; the next pass takes the rest. */
  readonly limit: number;
}

export interface ReapReport {
  readonly expiredLeases: number;
  readonly redispatched: number;
  readonly retriesQueued: number;
}

/**
 * The reaper's pass, every minute. Queues, streams and workers may lose work; this finds it in
 * the state, which they cannot lose:
 * - running attempts whose lease expired (the worker crashed, hung, or never sent a first
 *   heartbeat): failed, to retry or for good, exactly as a failure the worker reported;
 * - queued attempts whose message was lost: sent again (same attempt, same deduplication id, so a
 *   message that was merely slow is not doubled, and the claim is conditional anyway);
 * - retries whose timer was lost: queued.
 * Every change is a conditional write, so a reaper racing a worker or another reaper is harmless.
 */
export async function reap(deps: Deps, opts: ReapOptions): Promise<ReapReport> {
  const now = deps.clock();
  let expiredLeases = 0;
  for (const ti of await deps.store.findExpiredLeases(now, opts.limit)) {
    const { tasks } = await loadDag(deps, ti.dagId, ti.dagVersion);
    const task = tasks.get(ti.taskId);
    const retryAt = task ? nextRetryAt(task, ti.attempt, now, deps.random) : null;
    const error =
      'lease expired: the worker stopped heartbeating (it crashed, hung or was stopped)';
    try {
      const done = await deps.store.transitionTask(
        ti,
        finishTask(ti, { ok: false, error, retryAt }, now),
      );
      expiredLeases++;
      await scheduleRetry(deps, done);
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e; // the worker got there first after all
    }
  }

  const queuedBefore = new Date(now.getTime() - opts.queuedGraceSeconds * 1000);
  const lost: TaskMessage[] = (await deps.store.findQueuedBefore(queuedBefore, opts.limit)).map(
    (ti) => ({
      dagId: ti.dagId,
      runId: ti.runId,
      taskId: ti.taskId,
      attempt: ti.attempt,
      dagVersion: ti.dagVersion,
    }),
  );
  await deps.dispatcher.dispatch(lost);

  const retryBefore = new Date(now.getTime() - opts.retryGraceSeconds * 1000);
  const due: TaskMessage[] = [];
  for (const ti of await deps.store.findRetriesDue(retryBefore, opts.limit)) {
    const m = await queue(deps, ti, ti.dagVersion, ti);
    if (m) due.push(m);
  }
  await deps.dispatcher.dispatch(due);
  return { expiredLeases, redispatched: lost.length, retriesQueued: due.length };
}
