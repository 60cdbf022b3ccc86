import type { AttemptRef, TaskInstanceRecord } from '../core/ports.ts';
import type { Deps } from './deps.ts';

/**
 * A successful attempt's log up to this size is kept with its outcome, in the task instance's
 * final write, rather than as an object of its own: an S3 PUT ($5 per million) costs more than
 * the whole rest of a noop task's orchestration, and one more KB of item is one more DynamoDB
 * write unit ($0.625 per million). Larger logs, and the logs of failed attempts, go to S3.
 */
export const INLINE_LOG_BYTES = 1024;

export const fitsInline = (text: string) => Buffer.byteLength(text) <= INLINE_LOG_BYTES;

/**
 * The log of one attempt: the one kept inline when it is that attempt's, else its object.
 * An inline log is only replaced by a later attempt's after it was copied to S3 (keepEarlierLog),
 * so every attempt's log is always in one place or the other.
 */
export async function readLog(
  deps: Deps,
  ti: TaskInstanceRecord,
  attempt: number,
): Promise<string | undefined> {
  if (typeof ti.log === 'string' && ti.logAttempt === attempt) return ti.log;
  const ref = { dagId: ti.dagId, runId: ti.runId, taskId: ti.taskId, attempt };
  // The worker writes an S3 log beside the outcome, not before it: for an attempt that has just
  // ended, the log may land a moment after the outcome is seen. Wait that moment out.
  // (An attempt waiting to retry keeps no end time: it has just ended as far as this knows.)
  const justEnded =
    ti.attempt === attempt &&
    (ti.status === 'up_for_retry' ||
      (ti.endTime !== null && deps.clock().getTime() - Date.parse(ti.endTime) < JUST_ENDED_MS));
  for (let tries = 0; ; tries++) {
    const text = await deps.blobs.getLog(ref);
    if (text !== undefined || !justEnded || tries >= 5) return text;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** How long after an attempt's end its log may still be on its way. */
const JUST_ENDED_MS = 10_000;

/**
 * Before an attempt's outcome can replace the inline log of an earlier attempt (the task was
 * cleared after it succeeded), the earlier log is copied to its object. Rare: once per clear of
 * a task whose last success kept its log inline.
 */
export async function keepEarlierLog(
  deps: Deps,
  ti: TaskInstanceRecord,
  ref: AttemptRef,
): Promise<void> {
  if (typeof ti.log !== 'string' || !ti.logAttempt || ti.logAttempt === ref.attempt) return;
  await deps.blobs.putLog({ ...ref, attempt: ti.logAttempt }, ti.log);
}
