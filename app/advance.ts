import type { Dag } from '../core/dag/schema.ts';
import { ConflictError, NotFoundError } from '../core/errors.ts';
import { parseInstance } from '../core/mapping/index.ts';
import { Metric } from '../core/metric-names.ts';
import type { TaskInstanceRecord, TaskKey, TaskMessage } from '../core/ports.ts';
import {
  countUpstream,
  nextStep,
  progressEntry,
  runOutcome,
  type UpstreamCounts,
} from '../core/readiness/index.ts';
import { isTerminalTask, resolveTask, type TaskStatus } from '../core/state/index.ts';
import { branchSkips } from './branch.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { injectFault } from './faults.ts';
import {
  claimStands,
  indexContinued,
  indexContinuedOfRun,
  reapExpiredLease,
  settleTentative,
} from './leases.ts';
import { advanceInstance, stopStrayInstances } from './mapping.ts';
import { queue, runEnded, taskMessage } from './runs.ts';

/** A pending task with one upstream task, as it stands once that task's outcome is counted. */
function afterOnly(
  status: TaskStatus,
): Pick<TaskInstanceRecord, 'status' | 'counts' | 'upstreamCount'> {
  return { status: 'pending', counts: countUpstream([status]), upstreamCount: 1 };
}

/**
 * What happens after a task reaches a terminal status: each downstream task counts the outcome
 * and is queued, skipped or failed as its trigger rule says, and the run ends once every task has
 * finished. Costs O(out-degree) writes. Safe to repeat for the same event (at-least-once
 * delivery): an outcome is counted once per task and generation, so an event that a clear
 * overtook (an older generation) changes no count that matters, and every transition is
 * conditional.
 *
 * Who calls it: the worker that wrote a success, right after the write (app/tasks.ts; the
 * task's message, deleted only once this returns, is the repair path); and the table's stream
 * for every other terminal write (failures, the reaper, cancels, clears, deferred ends). A task
 * resolved here to `skipped` or `upstream_failed` is advanced from here too, recursively.
 */
export async function advance(
  deps: Deps,
  /** With `uncounted` as its task instance has it: how its end enters the run's progress. */
  key: TaskKey & { readonly uncounted?: boolean | undefined },
  status: TaskStatus,
  dagVersion: number,
  generation = 0,
  options: {
    /**
     * When exactly one task became ready and this says yes, its message is not sent but
     * returned: the caller (a worker with time left) claims and runs it itself. The task is
     * `queued` in the table all the same, so that if the caller dies, the reaper sends it.
     */
    readonly continueWith?: (message: TaskMessage) => boolean;
    /**
     * With `continueWith`: the lease its caller would claim the continued task under. When this
     * task's only downstream task has it as its one upstream task, the write that counts the
     * outcome also queues and claims that task (one write instead of three), and the claimed
     * record comes back with its message. A worker that dies after that write has a claimed
     * task whose lease runs out, as when it dies after any claim.
     */
    readonly lease?: { readonly token: string; readonly seconds: number };
    /**
     * The tasks a repeat has walked again already, shared down the recursion: each is walked
     * once, so a repeat at a fan-out's root costs O(edges), not a walk per path.
     */
    readonly walked?: Set<string>;
  } = {},
): Promise<Continued | undefined> {
  if (!isTerminalTask(status)) return undefined;
  // A mapped task's instance: counted towards its mapped task, which its downstream tasks wait for.
  if (parseInstance(key.taskId)) {
    await advanceInstance(deps, key, status, generation);
    return undefined;
  }
  const { dag, graph, tasks } = await loadDag(deps, key.dagId, dagVersion);
  const downstream = graph.downstream.get(key.taskId) ?? [];
  const entry = progressEntry(
    key.uncounted === true,
    status === 'success' || status === 'skipped',
    generation,
  );
  // Counted before any downstream task can run on it: a task that runs on a failure (rule
  // all_done, …) may be the last to end, and must find the run unable to succeed.
  if (entry === 'extra') await finish(deps, key, status, generation, dag, true);
  // A mapped task, as it stands (read once): a failed or cancelled one that did not end by its
  // instances' ends stops those still running; one that expanded weighs its instances downstream.
  const mapped =
    tasks.get(key.taskId)?.mapOver !== undefined && (status !== 'success' || downstream.length > 0)
      ? await deps.store.getTaskInstance(key)
      : undefined;
  if (mapped && status !== 'success') await stopStrayInstances(deps, mapped);
  // The task's end is counted in the run's progress at the same time as its downstream tasks
  // (an `extra` end was counted above, first): each write counts once, whichever lands first,
  // and the run cannot end before the tasks downstream of this one have. If the downstream part
  // fails, this one is still waited for before the failure goes up: nothing runs on after.
  const counting = entry === 'count' ? finish(deps, key, status, generation, dag) : undefined;
  // Handled here as well, so that a failure while the downstream part is still going is not an
  // unhandled rejection; awaited below.
  counting?.catch(() => {});
  const now = deps.clock();
  const messages: TaskMessage[] = [];
  let kept: Continued | undefined;
  const walked = options.walked ?? new Set<string>();
  /** Downstream outcomes advanced inline, to walk again once this task's own part is done. */
  const again: TaskInstanceRecord[] = [];

  try {
    if (status !== 'cancelled') {
      // A branch's success skips the tasks it did not choose, whatever their rule (app/branch.ts).
      const skips =
        tasks.get(key.taskId)?.operator === 'branch' && status === 'success'
          ? await branchSkips(
              deps,
              graph,
              tasks.get(key.taskId),
              await deps.store.getTaskInstance(key),
            )
          : undefined;
      const weight = mapWeight(mapped);
      /** One downstream task; again (`pass`) when a tentative claim on it was settled first. */
      const one = async (taskId: string, pass = 0): Promise<void> => {
        const dk = { dagId: key.dagId, runId: key.runId, taskId };
        const rule = tasks.get(taskId)?.triggerRule ?? 'all_success';
        const skip = skips?.has(taskId) === true;
        const outcome = skip ? 'skipped' : status;
        // A task with this one upstream task, whose rule queues it on this outcome (a chain's
        // next task, a fan-out's branch): counted and queued in one write.
        const single = !weight && (graph.upstream.get(taskId) ?? []).length === 1;
        const queueAt =
          !skip && single && nextStep(rule, afterOnly(outcome)) === 'queue' ? { queueAt: now } : {};
        // The only task this outcome can make ready, and the caller would run it: claim it in
        // the same write. The attempt is the one that write gives it.
        const { lease, continueWith } = options;
        const probe =
          queueAt.queueAt && lease && continueWith && downstream.length === 1
            ? await taskMessage(deps, { ...dk, attempt: 0 }, dagVersion)
            : undefined;
        const claim =
          lease && probe && continueWith?.(probe)
            ? {
                leaseToken: lease.token,
                leaseExpiresAt: new Date(now.getTime() + lease.seconds * 1000).toISOString(),
              }
            : undefined;
        const { task, counted } = await deps.store.recordUpstreamOutcome(
          dk,
          key.taskId,
          outcome,
          generation,
          { ...queueAt, ...(claim ? { claim } : {}), ...(weight ? { weight } : {}) },
        );
        // Claimed under this lease: by this write, or by one whose answer was lost (its retry
        // was refused, and the outcome reads as counted already). Either way it is ours to run.
        if (probe && claim && task.status === 'running' && task.leaseToken === claim.leaseToken) {
          kept = { message: { ...probe, attempt: task.attempt }, claimed: task };
          return;
        }
        if (counted && task.status === 'queued' && queueAt.queueAt) {
          messages.push(await taskMessage(deps, { ...dk, attempt: task.attempt }, dagVersion));
          return;
        }
        // A repeat of this step (its caller died after queuing but before sending, and its
        // message or stream record came back): send the queued task's message again. Within
        // SQS's 5-minute window the copy is dropped; after it, the claim is.
        if (!counted && task.status === 'queued') {
          messages.push(await taskMessage(deps, { ...dk, attempt: task.attempt }, dagVersion));
          return;
        }
        // A repeat that finds the task running on this outcome: a worker may have continued into
        // it and died. In no lease index until it heartbeats, so this walk is its repair: reaped
        // here once its lease has run out (conditionally: a live worker renews it first), or put
        // in the lease index under the lease it has, for the reaper to find if it runs out.
        // A tentative claim (made in one request with a success of this task, app/tasks.ts) is
        // settled first, indexed or not: it stands if that attempt's success landed, and is
        // then a continued task as any other; otherwise it is withdrawn, and this outcome
        // counted afresh on the next pass (a success then queues the task for a first attempt).
        if (
          !counted &&
          task.status === 'running' &&
          task.leaseToken &&
          (task.continued || task.tentative !== undefined)
        ) {
          const claimed =
            task.tentative === undefined
              ? task
              : await settleTentative(
                  deps,
                  task,
                  (await claimStands(deps, task)) ? 'confirm' : 'withdraw',
                );
          if (!claimed) {
            // Withdrawn, by this or by another writer (the reaper, a repeat of this walk), or
            // moved on: counted afresh. A claim is tentative once, so this ends.
            if (pass >= 3) throw new Error(`${taskId}: its tentative claim did not settle`);
            return one(taskId, pass + 1);
          }
          // In the lease index already (a clear or a run's end put it there): the reaper's.
          if (!claimed.continued) return;
          const expired =
            claimed.leaseExpiresAt !== null && claimed.leaseExpiresAt < now.toISOString();
          if (expired) await reapExpiredLease(deps, claimed, now);
          else await indexContinued(deps, [claimed], now);
          return;
        }
        // A repeat after the task ended in an outcome advanced inline (resolved by this step, or
        // run by a worker that continued into it, whose own message was never sent): go on
        // from it again, in case whoever advanced it died first. Every write below is counted
        // once, so this changes nothing twice.
        if (!counted && task.advanceInline && isTerminalTask(task.status)) {
          // After this task's own progress write, below: that is the repair that matters most.
          if (!walked.has(taskId)) {
            walked.add(taskId);
            again.push(task);
          }
          return;
        }
        const decision = skip && task.status === 'pending' ? 'skipped' : nextStep(rule, task);
        if (decision === 'queue') {
          const m = await queue(deps, dk, dagVersion, task);
          if (m) messages.push(m);
        } else if (decision === 'skipped' || decision === 'upstream_failed') {
          const resolved = await deps.store
            .transitionTask(dk, resolveTask(task, decision, now))
            .catch((e: unknown) => {
              if (!(e instanceof ConflictError)) throw e;
              // Resolved already: by a concurrent advance, or by this write whose answer was
              // lost (the SDK's retry is refused). Go on from it either way; that is harmless.
              const current = e.current as TaskInstanceRecord | undefined;
              return current?.status === decision &&
                current.generation === task.generation &&
                current.advanceInline === true
                ? current
                : undefined;
            });
          // Inline, not by the resolution's own stream record (which is filtered out): a chain
          // of skips costs no stream hop per task.
          if (resolved) {
            await advance(
              deps,
              { ...dk, uncounted: resolved.uncounted },
              decision,
              dagVersion,
              resolved.generation,
            );
          }
        }
      };
      await Promise.all(downstream.map((taskId) => one(taskId)));
      const only = messages.length === 1 ? messages[0] : undefined;
      if (!kept && only && options.continueWith?.(only)) {
        kept = { message: only };
        messages.length = 0;
      }
      if ((await injectFault(deps, dag, 'advance.before-dispatch', key)) === 'repeat') {
        await deps.dispatcher.dispatch(messages); // sent twice: SQS drops the copy within 5 min
      }
      await deps.dispatcher.dispatch(messages);
    }
  } catch (e) {
    await Promise.allSettled([counting]);
    throw e;
  }

  await counting;
  for (const t of again) {
    await advance(deps, t, t.status, dagVersion, t.generation, { walked });
  }
  return kept;
}

/**
 * What a mapped task that ended after expanding adds to each downstream task: every instance's
 * outcome, and its instances but one as upstream tasks. Undefined for one that never expanded
 * (it failed before, or mapOver gave no items: it counts once, as any task).
 */
function mapWeight(
  ti: TaskInstanceRecord | undefined,
): { counts: UpstreamCounts; extraUpstream: number } | undefined {
  if (!ti?.mapCounts || ti.mapLength === undefined) return undefined;
  return { counts: ti.mapCounts, extraUpstream: ti.mapLength - 1 };
}

/**
 * A continuation claimed in the same request as its upstream task's success (claimAhead): the
 * task, its message and the write that counts, queues and claims it, tentatively.
 */
export interface Ahead {
  readonly key: TaskKey;
  readonly message: TaskMessage;
  /** Starts the write: called in the same turn as the success's own write, so both go together. */
  readonly write: () => Promise<{ task: TaskInstanceRecord; counted: boolean }>;
}

/**
 * What a success of `ti` (running now) would continue into, if its advance would be that one
 * write and nothing more: its one downstream task, whose one upstream task it is and whose rule
 * queues it on a success, which the caller would run; no progress write (an uncounted success),
 * no branch's skips, no mapped task's weight. Then that write can go with the success's own,
 * in one request, rather than after it (app/tasks.ts): its claim is tentative, as the two are
 * neither ordered nor atomic. Undefined otherwise: the caller advances after its outcome.
 */
export async function claimAhead(
  deps: Deps,
  ti: TaskInstanceRecord,
  continueWith: (message: TaskMessage) => boolean,
  lease: { readonly token: string; readonly seconds: number },
): Promise<Ahead | undefined> {
  if (parseInstance(ti.taskId)) return undefined;
  if (progressEntry(ti.uncounted === true, true, ti.generation) !== 'none') return undefined;
  const { graph, tasks } = await loadDag(deps, ti.dagId, ti.dagVersion);
  const own = tasks.get(ti.taskId);
  if (!own || own.operator === 'branch' || own.mapOver !== undefined) return undefined;
  const downstream = graph.downstream.get(ti.taskId) ?? [];
  const taskId = downstream[0];
  if (taskId === undefined || downstream.length !== 1) return undefined;
  if ((graph.upstream.get(taskId) ?? []).length !== 1) return undefined;
  const rule = tasks.get(taskId)?.triggerRule ?? 'all_success';
  if (nextStep(rule, afterOnly('success')) !== 'queue') return undefined;
  const key = { dagId: ti.dagId, runId: ti.runId, taskId };
  const message = await taskMessage(deps, { ...key, attempt: 0 }, ti.dagVersion);
  if (!continueWith(message)) return undefined;
  return {
    key,
    message,
    write: () => {
      const now = deps.clock();
      return deps.store.recordUpstreamOutcome(key, ti.taskId, 'success', ti.generation, {
        queueAt: now,
        claim: {
          leaseToken: lease.token,
          leaseExpiresAt: new Date(now.getTime() + lease.seconds * 1000).toISOString(),
          tentative: ti.attempt,
        },
      });
    },
  };
}

/** A task its caller runs itself: claimed already in the write that queued it, or still queued. */
export interface Continued {
  readonly message: TaskMessage;
  readonly claimed?: TaskInstanceRecord;
}

/** Counts the task in its run's progress, and ends the run when every task has finished. */
async function finish(
  deps: Deps,
  key: TaskKey,
  status: TaskStatus,
  generation: number,
  dag: Dag,
  extra = false,
): Promise<void> {
  const now = deps.clock();
  const progress = await deps.store.recordTaskFinished(
    key,
    status === 'success' || status === 'skipped',
    dag.tasks.length,
    generation,
    extra,
  );
  if (progress && runOutcome(progress) !== 'running') {
    await injectFault(deps, dag, 'advance.before-run-end', key);
    try {
      // Only if no clear reopened tasks since the progress was read.
      // From `queued` too: its start may not be written yet (app/runs.ts startRun).
      await deps.store.transitionRun(
        key.dagId,
        key.runId,
        ['queued', 'running'],
        runOutcome(progress),
        now,
        { clears: progress.clears },
      );
      // Once per run: only one conditional write ends it.
      deps.metrics?.addMetric(
        runOutcome(progress) === 'success' ? Metric.RunSucceeded : Metric.RunFailed,
        'Count',
        1,
      );
    } catch (e) {
      // Already ended (a duplicate event), cancelled, or cleared meanwhile.
      if (!(e instanceof ConflictError)) throw e;
      const run = await deps.store.getRun(key.dagId, key.runId);
      if (run?.status === 'running' || run?.status === 'queued') return;
    }
    // Also on a duplicate event, in case the first one died before this: it is harmless twice.
    await runEnded(deps, key.dagId, key.runId);
  }
}

/**
 * A run that can never go on (its DAG version is unreadable, a write it needs is refused for
 * good) fails with the reason, rather than waiting for ever; its slot is given back. Harmless if
 * the run has ended meanwhile.
 */
export async function failUnprocessableRun(
  deps: Deps,
  dagId: string,
  runId: string,
  error: string,
): Promise<void> {
  try {
    await deps.store.transitionRun(dagId, runId, ['queued', 'running'], 'failed', deps.clock(), {
      reason: `could not be processed: ${error}`,
    });
    deps.metrics?.addMetric(Metric.RunFailed, 'Count', 1);
    await runEnded(deps, dagId, runId);
  } catch (inner) {
    if (!(inner instanceof ConflictError) && !(inner instanceof NotFoundError)) throw inner;
  }
  // A task a worker continued into and died in is repaired by the walk this run no longer
  // takes (the return of that worker's message): the reaper's instead. Also when the run had
  // ended already: whoever ended it may have died before this.
  await indexContinuedOfRun(deps, dagId, runId);
}
