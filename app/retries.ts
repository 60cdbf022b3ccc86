import type { RetryTimer, TaskInstanceRecord } from '../core/ports.ts';
import type { Deps } from './deps.ts';
import { queue } from './runs.ts';

/** Starts the wait of a task that went to `up_for_retry`. */
export async function scheduleRetry(deps: Deps, ti: TaskInstanceRecord): Promise<void> {
  if (ti.status !== 'up_for_retry' || !ti.retryAt) return;
  await deps.timers.schedule(
    {
      dagId: ti.dagId,
      runId: ti.runId,
      taskId: ti.taskId,
      failedAttempt: ti.attempt,
      dagVersion: ti.dagVersion,
      retryAt: ti.retryAt,
    },
    deps.clock(),
  );
}

/**
 * A retry timer came back: if its time has come, queue the next attempt (conditional on the task
 * still waiting after that failed attempt, so a duplicate timer or the reaper's safety net finds
 * nothing to do); if not (a wait longer than one queue delay), wait again.
 */
export async function onRetryTimer(
  deps: Deps,
  timer: RetryTimer,
): Promise<'queued' | 'waiting' | 'stale'> {
  const now = deps.clock();
  // Within a second is on time: the queue's delay has whole-second resolution.
  if (new Date(timer.retryAt).getTime() - now.getTime() > 1000) {
    await deps.timers.schedule(timer, now);
    return 'waiting';
  }
  const key = { dagId: timer.dagId, runId: timer.runId, taskId: timer.taskId };
  const message = await queue(deps, key, timer.dagVersion, {
    status: 'up_for_retry',
    attempt: timer.failedAttempt,
    leaseToken: null,
  });
  if (!message) return 'stale';
  await deps.dispatcher.dispatch([message]);
  return 'queued';
}
