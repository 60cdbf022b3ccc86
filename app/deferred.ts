import { createHash } from 'node:crypto';
import { ConflictError, ThrottledError } from '../core/errors.ts';
import type { AttemptRef, TaskInstanceRecord } from '../core/ports.ts';
import { nextRetryAt } from '../core/retry/index.ts';
import { deferTask, finishTask, triesSoFar } from '../core/state/index.ts';
import type { AwsEvent, DeferredOperator, DeferredWork, WorkState } from '../operators/registry.ts';
import { isDeferred } from '../operators/registry.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { OutputTooLargeError, storeOutput } from './outputs.ts';
import { released } from './pools.ts';
import { scheduleRetry } from './retries.ts';

/**
 * Deferred attempts (DESIGN.md section 9): a `stepfunctions` or `ecs` task's worker starts the
 * external work, records it with the attempt (`deferred`, with the attempt's deadline) and
 * leaves. The attempt stays `running` under its lease token, which fences its one outcome.
 * The outcome comes from whichever is first:
 * - the AWS event of the work's end (`completeFromEvent`, the completion function);
 * - the reaper, when the attempt's lease (here: the time of its next check) expires
 *   (`checkDeferred`): it asks the operator, and stops the work once the attempt's timeout has
 *   passed.
 * Both write the outcome conditionally on the lease token, so an event and a check that race
 * record one outcome, and an event for an attempt that was cancelled or reaped changes nothing.
 */

/** The work as kept with the attempt: the operator's description and the attempt's deadline. */
export interface DeferredRecord extends DeferredWork {
  readonly timeoutAt: string;
}

/**
 * The name an attempt gives its external work: 32 hex digits of a hash of the run, task and
 * attempt, so that a start repeated after a crash names the same work (an execution name, an
 * ECS client token), and the work's end event leads back to the attempt (StateStore.putDeferral).
 */
export function workName(ref: AttemptRef): string {
  return createHash('sha256')
    .update(`${ref.dagId}\n${ref.runId}\n${ref.taskId}\n${ref.attempt}`)
    .digest('hex')
    .slice(0, 32);
}

/** How long a deferred attempt waits for its end event before the reaper asks. */
export const DEFAULT_CHECK_SECONDS = 300;

/** The next time to ask about the work: after the check interval, or at the deadline. */
export function nextCheck(now: Date, timeoutAt: string, checkSeconds: number): Date {
  return new Date(Math.min(now.getTime() + checkSeconds * 1000, Date.parse(timeoutAt)));
}

export function parseDeferred(
  ti: Pick<TaskInstanceRecord, 'deferred'>,
): DeferredRecord | undefined {
  if (!ti.deferred) return undefined;
  try {
    return JSON.parse(ti.deferred) as DeferredRecord;
  } catch {
    return undefined;
  }
}

function operatorOf(deps: Deps, work: DeferredWork): DeferredOperator<unknown> | undefined {
  const op = deps.operators.get(work.operator);
  return op && isDeferred(op) ? op : undefined;
}

export type DeferredOutcome = 'success' | 'failed' | 'up_for_retry' | 'stale';

/**
 * Records the end of a deferred attempt, fenced by the attempt's lease token: `stale` when the
 * attempt moved on (cancelled, reaped, finished by a racing event). A success's output is
 * stored first, so that an outcome never names a missing output.
 */
export async function finishDeferred(
  deps: Deps,
  ti: TaskInstanceRecord,
  end: Exclude<WorkState, { state: 'running' }>,
  how: string,
  leaseExpiredBy?: Date,
): Promise<DeferredOutcome> {
  const now = deps.clock();
  let result = end;
  let stored: Awaited<ReturnType<typeof storeOutput>>;
  let retryable = true;
  if (result.state === 'success') {
    try {
      stored = await storeOutput(deps, ti, result.output);
    } catch (e) {
      if (!(e instanceof OutputTooLargeError)) throw e;
      result = { state: 'failed', error: e.message };
      retryable = false;
    }
  }
  let retryAt: Date | null = null;
  if (result.state === 'failed' && retryable) {
    const task = (await loadDag(deps, ti.dagId, ti.dagVersion)).tasks.get(ti.taskId);
    retryAt = task ? nextRetryAt(task, triesSoFar(ti), now, deps.random) : null;
  }
  let done: TaskInstanceRecord;
  try {
    done = await deps.store.transitionTask(ti, {
      ...finishTask(
        ti,
        result.state === 'success'
          ? { ok: true, ...(stored ? { output: stored } : {}) }
          : { ok: false, error: result.error, retryAt },
        now,
      ),
      ...(leaseExpiredBy ? { leaseExpiredBy: leaseExpiredBy.toISOString() } : {}),
    });
  } catch (e) {
    if (e instanceof ConflictError) return 'stale';
    throw e;
  }
  await released(deps, ti.gates);
  const stamp = now.toISOString();
  const lines = [
    `${stamp} ${how}`,
    ...(result.state === 'failed' ? [`${stamp} error: ${result.error}`] : []),
    ...(result.state === 'success' && result.output !== undefined && result.output !== null
      ? [`${stamp} output: ${JSON.stringify(result.output).slice(0, 4000)}`]
      : []),
    `${stamp} ${done.status === 'success' ? 'success' : 'failed'}${done.status === 'up_for_retry' ? `, retry at ${done.retryAt}` : ''}`,
    '',
  ];
  const written = await deps.blobs.getLog(ti);
  await deps.blobs.putLog(ti, `${written ?? ''}${lines.join('\n')}`);
  await scheduleRetry(deps, done);
  return done.status as DeferredOutcome;
}

/**
 * An AWS event that may report the end of deferred work: finds the attempt by the work's name
 * and records the end. Events for work that is not ours, or for an attempt that has moved on,
 * change nothing (`ignored` / `stale`).
 */
export async function completeFromEvent(
  deps: Deps,
  event: AwsEvent,
): Promise<DeferredOutcome | 'ignored'> {
  for (const op of deps.operators.deferred()) {
    const name = op.nameOfEvent(event);
    if (!name) continue;
    const ref = await deps.store.getDeferral(name);
    if (!ref) return 'ignored';
    const ti = await deps.store.getTaskInstance(ref);
    if (ti?.status === 'running' && ti.attempt === ref.attempt && !ti.deferred) {
      // The end came before the worker recorded the start: have the event delivered again.
      throw new ThrottledError(`work ${name} ended before its attempt recorded it: try again`);
    }
    const work = ti && parseDeferred(ti);
    if (!ti || !work || ti.status !== 'running' || ti.attempt !== ref.attempt) return 'stale';
    if (work.name !== name) return 'stale';
    const end = op.endOfEvent(event, work) ?? (await op.check(work));
    if (end.state === 'running') return 'stale';
    return finishDeferred(deps, ti, end, `${work.operator} work ${name} ended (event)`);
  }
  return 'ignored';
}

/**
 * The reaper's look at a deferred attempt whose check time came without an end event: records
 * the end if the work ended, stops it and fails the attempt once its timeout passed, or else
 * sets the next check.
 */
export async function checkDeferred(
  deps: Deps,
  ti: TaskInstanceRecord,
  checkSeconds: number,
): Promise<DeferredOutcome | 'running'> {
  const now = deps.clock();
  const work = parseDeferred(ti);
  const op = work && operatorOf(deps, work);
  if (!work || !op) {
    return finishDeferred(
      deps,
      ti,
      {
        state: 'failed',
        error: `deferred work of operator "${work?.operator ?? '?'}" cannot be checked in this deployment`,
      },
      'checked by the reaper',
      now,
    );
  }
  const state = await op.check(work);
  if (state.state !== 'running') {
    return finishDeferred(
      deps,
      ti,
      state,
      `${work.operator} work ${work.name} ended (checked by the reaper)`,
      now,
    );
  }
  if (now.getTime() >= Date.parse(work.timeoutAt)) {
    await op.stop(work, 'the Airless task timed out');
    return finishDeferred(
      deps,
      ti,
      {
        state: 'failed',
        error: `timed out: the work ran past the task's timeout (${work.timeoutAt}) and was stopped`,
      },
      `${work.operator} work ${work.name} stopped by the reaper`,
      now,
    );
  }
  try {
    await deps.store.transitionTask(ti, {
      ...deferTask(ti, ti.deferred ?? '', nextCheck(now, work.timeoutAt, checkSeconds), now),
      leaseExpiredBy: now.toISOString(),
    });
  } catch (e) {
    if (e instanceof ConflictError) return 'stale';
    throw e;
  }
  return 'running';
}

/**
 * A check that failed (throttled, access denied, the cluster gone): ask again after the check
 * interval; past the attempt's deadline, try to stop the work and fail the attempt, so that an
 * attempt whose work can never be checked does not stay `running` for ever.
 */
export async function checkFailed(
  deps: Deps,
  ti: TaskInstanceRecord,
  error: unknown,
  checkSeconds: number,
): Promise<void> {
  const now = deps.clock();
  const work = parseDeferred(ti);
  const why = error instanceof Error ? error.message : String(error);
  if (!work || now.getTime() >= Date.parse(work.timeoutAt)) {
    const op = work && operatorOf(deps, work);
    await op?.stop(work as DeferredWork, 'the Airless task timed out').catch(() => undefined);
    await finishDeferred(
      deps,
      ti,
      { state: 'failed', error: `timed out, and its work could not be checked: ${why}` },
      'given up by the reaper',
      now,
    );
    return;
  }
  await deps.store
    .transitionTask(ti, {
      ...deferTask(ti, ti.deferred ?? '', nextCheck(now, work.timeoutAt, checkSeconds), now),
      leaseExpiredBy: now.toISOString(),
    })
    .catch((e: unknown) => {
      if (!(e instanceof ConflictError)) throw e;
    });
}

/** Stops the external work of a deferred attempt that was cancelled. Harmless to repeat. */
export async function stopDeferred(
  deps: Deps,
  ti: Pick<TaskInstanceRecord, 'deferred'>,
  reason: string,
): Promise<void> {
  const work = parseDeferred(ti);
  const op = work && operatorOf(deps, work);
  if (work && op) await op.stop(work, reason);
}
