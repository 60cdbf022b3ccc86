import { ConflictError, NotFoundError } from '../core/errors.ts';
import { baseTaskId } from '../core/mapping/index.ts';
import type { TaskInstanceRecord } from '../core/ports.ts';
import { nextRetryAt } from '../core/retry/index.ts';
import { finishTask, indexLeaseTask, triesSoFar } from '../core/state/index.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { released } from './pools.ts';
import { scheduleRetry } from './retries.ts';

/**
 * Fails a running attempt whose lease has expired (its worker crashed, hung, or never sent a
 * first heartbeat), to retry or for good, exactly as a failure the worker reported, and says so
 * in its log. Conditional on the lease as read and on its expiry: a worker that renewed it
 * meanwhile, or got its outcome in first, keeps the attempt, and this answers false.
 * The reaper calls it for what the lease index holds; the return of a continuation's first
 * message for a continued task, which is not in that index until its first heartbeat
 * (app/advance.ts).
 */
export async function reapExpiredLease(
  deps: Deps,
  ti: TaskInstanceRecord,
  now: Date,
): Promise<boolean> {
  // Read from an index entry that has moved on since: nothing to reap.
  if (ti.status !== 'running' || !ti.leaseToken) return false;
  // A tentative claim is one only if the upstream success it went with landed; otherwise it
  // never started, and is undone rather than failed: that task's outcome, when it comes,
  // counts as any other.
  if (ti.tentative !== undefined && !(await claimStands(deps, ti))) {
    await settleTentative(deps, ti, 'withdraw');
    return false;
  }
  const { tasks } = await loadDag(deps, ti.dagId, ti.dagVersion);
  const task = tasks.get(baseTaskId(ti.taskId));
  const retryAt = task ? nextRetryAt(task, triesSoFar(ti), now, deps.random) : null;
  const error = 'lease expired: the worker stopped heartbeating (it crashed, hung or was stopped)';
  let done: TaskInstanceRecord;
  try {
    done = await deps.store.transitionTask(ti, {
      ...finishTask(ti, { ok: false, error, retryAt }, now),
      // Not if the worker renewed its lease since it was read.
      leaseExpiredBy: now.toISOString(),
    });
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e; // the worker got there first after all
    return false;
  }
  await released(deps, ti.gates);
  // Say what happened to the attempt in its log: a worker that died wrote none, or wrote it and
  // died before recording the outcome (its log then ends as if nothing went wrong).
  const ref = { dagId: ti.dagId, runId: ti.runId, taskId: ti.taskId, attempt: ti.attempt };
  const written = await deps.blobs.getLog(ref);
  const note = [
    ...(written === undefined
      ? [
          `${now.toISOString()} attempt ${ti.attempt} started at ${ti.startTime ?? '?'} and its worker stopped without writing a log`,
        ]
      : [`${now.toISOString()} the worker stopped before recording this attempt's outcome`]),
    `${now.toISOString()} ${error}; lease expired at ${ti.leaseExpiresAt ?? '?'}`,
    `${now.toISOString()} failed by the reaper${done.status === 'up_for_retry' ? `, retry at ${done.retryAt}` : ''}`,
    '',
  ].join('\n');
  await deps.blobs.putLog(ref, `${written ?? ''}${note}`);
  await scheduleRetry(deps, done);
  return true;
}

/**
 * Puts the running tasks among these that a worker continued into (in no lease index until their
 * first heartbeat, app/advance.ts) in the lease index, under the leases they have: from then on
 * the reaper repairs them if their workers died, as any running attempt. For whatever would move
 * on the return of their workers' messages, their repair until then: a clear reopening the walk
 * it would take, a run that ends. Each write is conditional on the task still being a
 * continuation, so that a lease renewed since it was read stays renewed; a refused one has
 * moved on already.
 */
export async function indexContinued(
  deps: Deps,
  tis: Iterable<TaskInstanceRecord>,
  now: Date,
): Promise<void> {
  for (const ti of tis) {
    if (!ti.continued || ti.status !== 'running' || !ti.leaseToken) continue;
    await deps.store.transitionTask(ti, indexLeaseTask(ti, now)).catch((e: unknown) => {
      if (!(e instanceof ConflictError)) throw e;
    });
  }
}

/** indexContinued for every task of a run: for a run that ended, whose tasks no walk repairs. */
export async function indexContinuedOfRun(deps: Deps, dagId: string, runId: string): Promise<void> {
  await indexContinued(deps, await deps.store.listTaskInstances(dagId, runId), deps.clock());
}

/**
 * Settles a tentative claim (TaskInstanceRecord `tentative`) as `how` says, if it is still that
 * claim: the task as confirmed, or undefined once withdrawn or if it had moved on (settled by
 * someone else, or its worker wrote since). The caller then reads it afresh.
 */
export async function settleTentative(
  deps: Deps,
  ti: TaskInstanceRecord,
  how: 'confirm' | 'withdraw',
): Promise<TaskInstanceRecord | undefined> {
  if (!ti.leaseToken) return undefined;
  try {
    const settled = await deps.store.settleTentative(ti, ti.leaseToken, how, deps.clock());
    // Rare (a success refused, or a worker dead in between): said, for whoever looks.
    console.info(
      JSON.stringify({
        message: 'tentative claim settled',
        how,
        dagId: ti.dagId,
        runId: ti.runId,
        taskId: ti.taskId,
        attempt: ti.attempt,
        upstreamAttempt: ti.tentative,
      }),
    );
    return how === 'confirm' ? settled : undefined;
  } catch (e) {
    if (e instanceof ConflictError || e instanceof NotFoundError) return undefined;
    throw e;
  }
}

/**
 * Whether a tentative claim stands: the attempt of its one upstream task that it went with
 * succeeded (that task's current attempt, or one its history keeps, as a clear keeps it).
 */
export async function claimStands(deps: Deps, ti: TaskInstanceRecord): Promise<boolean> {
  const { graph } = await loadDag(deps, ti.dagId, ti.dagVersion);
  const [upstream] = graph.upstream.get(ti.taskId) ?? [];
  if (upstream === undefined || ti.tentative === undefined) return false;
  const up = await deps.store.getTaskInstance({ ...ti, taskId: upstream });
  if (!up) return false;
  return (
    (up.attempt === ti.tentative && up.status === 'success') ||
    (up.history ?? []).some((h) => h.attempt === ti.tentative && h.status === 'success')
  );
}
