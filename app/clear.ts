import type { Task } from '../core/dag/schema.ts';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';
import { instanceId } from '../core/mapping/index.ts';
import type { ClearPlan, RunRecord, TaskInstanceRecord, TaskMessage } from '../core/ports.ts';
import {
  addCounts,
  addOutcome,
  counterFor,
  NO_COUNTS,
  nextStep,
  progressEntry,
} from '../core/readiness/index.ts';
import {
  attemptSummary,
  hasTriedSinceClear,
  isTerminalRun,
  isTerminalTask,
  MAX_HISTORY,
  type TaskStatus,
} from '../core/state/index.ts';
import { branchSkips } from './branch.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { indexContinued } from './leases.ts';
import { taskMessage } from './runs.ts';

/**
 * Clears a finished task and everything downstream of it, so that they run again with new
 * attempt numbers and their retries afresh (Airflow's "clear" with downstream). The run reopens
 * if it had ended.
 *
 * Everything is computed from one read, then applied as one atomic write conditioned on what
 * was read (StateStore.clearTasks): a clear that races another clear, a worker or readiness
 * changes nothing and answers 409. Tasks whose trigger rule is decided at once are written
 * `queued` (or `skipped`, `upstream_failed`) in that same write, so a crash before their
 * messages are sent leaves them to the reaper, never stranded. Downstream tasks still running
 * are left to finish.
 */
export async function clearTasks(
  deps: Deps,
  dagId: string,
  runId: string,
  taskId: string,
  /**
   * `mapIndex`: clear one instance of a mapped task (core/mapping) and what depends on the
   * mapped task, as Airflow clears one mapped task instance: the instance runs again on its
   * next attempt, the mapped task waits for it (reopened, if it had ended), and its downstream
   * tasks are cleared to count it afresh. The other instances are left as they are.
   */
  options: { readonly mapIndex?: number } = {},
): Promise<RunRecord> {
  let run = await deps.store.getRun(dagId, runId);
  if (!run) throw new NotFoundError(`run ${runId} of DAG ${dagId} not found`);
  const { dag, graph, tasks } = await loadDag(deps, dagId, run.dagVersion);
  if (!tasks.has(taskId)) throw new NotFoundError(`task ${taskId} is not in DAG ${dagId}`);
  let instances = new Map(
    (await deps.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t]),
  );
  if (run.status === 'queued' || !run.tasksWritten) {
    throw new ConflictError(`run ${runId} has not started: nothing to clear`);
  }
  const one =
    options.mapIndex === undefined
      ? undefined
      : await instancePart(deps, run, tasks.get(taskId), instances, taskId, options.mapIndex);
  if (one?.waiting) {
    // The mapped task still waits for its instances: only this one changes, in a run that
    // goes on (one that ended meanwhile would reopen without its slot: refused).
    if (run.status !== 'running') {
      throw new ConflictError(`run ${runId} is ${run.status}: clear the mapped task instead`);
    }
    try {
      await deps.store.clearTasks({
        dagId,
        runId,
        taskCount: dag.tasks.length,
        runStatus: run.status,
        at: deps.clock(),
        tasks: [],
        instance: one,
      });
    } catch (e) {
      if (e instanceof ConflictError) throw changedMeanwhile(runId, e);
      throw e;
    }
    await deps.dispatcher.dispatch([
      await taskMessage(
        deps,
        { dagId, runId, taskId: one.taskId, attempt: one.attempt },
        run.dagVersion,
      ),
    ]);
    return (await deps.store.getRun(dagId, runId)) ?? run;
  }
  const root = instances.get(taskId);
  if (!root || !isTerminalTask(root.status)) {
    throw new ConflictError(
      `task ${taskId} is ${root?.status ?? 'missing'}: only a finished task can be cleared`,
    );
  }

  // The task and everything downstream of it, in topological order (breadth-first from the
  // root can visit a task before one of its upstream tasks; the order below cannot).
  const reach = new Set([taskId]);
  for (const id of reach) for (const d of graph.downstream.get(id) ?? []) reach.add(d);
  const order = topologicalOrder(reach, graph);

  // An outcome advanced inline (a worker's success, a resolution) whose advance did not finish
  // (its worker died: the message comes back later to finish it) must be counted in the run's
  // progress before its task is cleared, because the clear moves the task on and the message
  // would then find nothing to finish. Only counted: its downstream tasks are all cleared with
  // it (the plan marks its old outcome counted on each), and must not run on it meanwhile.
  const done = await deps.store.finishedTasks(dagId, runId);
  // Every uncounted failure not counted yet, in the clear's reach or not: a task it reopens
  // may end the run, whose total must hold that failure first.
  const extras = [...instances.values()].filter(
    (t) =>
      !reach.has(t.taskId) &&
      isTerminalTask(t.status) &&
      progressEntryOf(t) === 'extra' &&
      !done.has(`${t.taskId}#${t.generation}`),
  );
  const unsettled = order
    .map((id) => instances.get(id))
    .filter(
      (t): t is TaskInstanceRecord =>
        t !== undefined &&
        // An uncounted task's failure too, however it is advanced: the clear's compensation
        // for its old outcome (ClearPlan oldSucceeded) assumes the total it raises is raised.
        (t.advanceInline === true || progressEntryOf(t) === 'extra') &&
        isTerminalTask(t.status) &&
        progressEntryOf(t) !== 'none' &&
        !done.has(`${t.taskId}#${t.generation}`),
    );
  unsettled.push(...extras);
  if (unsettled.length > 0) {
    for (const t of unsettled) {
      const ok = t.status === 'success' || t.status === 'skipped';
      const extra = progressEntryOf(t) === 'extra';
      await deps.store.recordTaskFinished(t, ok, dag.tasks.length, t.generation, extra);
    }
    // Read again, as the clear is conditioned on what it read (the run, the counts).
    run = (await deps.store.getRun(dagId, runId)) ?? run;
    instances = new Map(
      (await deps.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t]),
    );
  }

  const now = deps.clock();
  // A task a worker continued into, still running in the clear's reach, is in no lease index
  // until its first heartbeat: if that worker died, its repair is the return of its message,
  // whose walk starts from the upstream success this clear reopens. Indexed under the lease it
  // has, the reaper repairs it instead. Harmless if the clear then fails, or the task has ended.
  await indexContinued(
    deps,
    order.flatMap((id) => instances.get(id) ?? []),
    now,
  );
  // What each cleared task looks like after the clear, for the tasks after it to count.
  const after = new Map<string, Pick<TaskInstanceRecord, 'status' | 'generation'>>();
  const statusAfter = (id: string) => after.get(id) ?? instances.get(id);
  const planned: ClearPlan['tasks'][number][] = [];
  for (const id of order) {
    const ti = instances.get(id);
    if (!ti) continue;
    const finished = isTerminalTask(ti.status);
    if (!finished && ti.status !== 'pending') continue; // running, queued or waiting to retry
    const generation = finished ? ti.generation + 1 : ti.generation;
    const upstream = graph.upstream.get(id) ?? [];
    const upStatuses: TaskStatus[] = [];
    // A branch left as it is still chose what it chose: a task it skipped stays skipped.
    let skippedByBranch = false;
    for (const u of upstream) {
      const skips = reach.has(u)
        ? undefined
        : await branchSkips(deps, graph, tasks.get(u), instances.get(u));
      const skip = skips?.has(id) === true;
      skippedByBranch ||= skip;
      upStatuses.push(skip ? 'skipped' : (statusAfter(u)?.status ?? 'pending'));
    }
    const counted: string[] = [];
    upstream.forEach((u, i) => {
      const up = instances.get(u);
      if (!up) return;
      if (reach.has(u) && isTerminalTask(up.status)) {
        // The cleared upstream's old outcome: marked counted, so its late event is ignored.
        counted.push(`${u}#${up.generation}`);
      }
      const now = statusAfter(u);
      if (now && counterFor(upStatuses[i] ?? 'pending') !== undefined) {
        counted.push(`${u}#${now.generation}`);
      }
    });
    // A mapped upstream task that ended after expanding, and stays as it is, counts each of
    // its instances (core/mapping), as readiness counted them.
    let counts = NO_COUNTS;
    let upstreamCount = upstream.length;
    upstream.forEach((u, i) => {
      const up = reach.has(u) ? undefined : instances.get(u);
      const st = upStatuses[i] ?? 'pending';
      if (up?.mapCounts && up.mapLength !== undefined && up.status === st) {
        counts = addCounts(counts, up.mapCounts);
        upstreamCount += up.mapLength - 1;
      } else counts = addOutcome(counts, st);
    });
    const decision = skippedByBranch
      ? 'skipped'
      : nextStep(tasks.get(id)?.triggerRule ?? 'all_success', {
          status: 'pending',
          counts,
          upstreamCount,
        });
    // The mapped task of an instance cleared alone waits again for its instances.
    const reopened = one !== undefined && id === taskId;
    const status = reopened
      ? 'running'
      : decision === 'queue'
        ? 'queued'
        : decision === 'skipped' || decision === 'upstream_failed'
          ? decision
          : 'pending';
    planned.push({
      taskId: id,
      expect: {
        status: ti.status,
        attempt: ti.attempt,
        generation: ti.generation,
        counts: ti.counts,
      },
      status,
      attempt: status === 'queued' ? ti.attempt + 1 : ti.attempt,
      newGeneration: finished,
      generation,
      counts,
      upstreamCount,
      counted: [...new Set(counted)],
      ...(finished ? { oldSucceeded: ti.status === 'success' || ti.status === 'skipped' } : {}),
      // A finished try leaves the task instance: its history keeps it, if the write that
      // ended it did not (a failure's did). Bounded: a task cleared again and again keeps
      // its latest attempts.
      ...(!reopened &&
      finished &&
      hasTriedSinceClear(ti) &&
      ti.status !== 'failed' &&
      isTerminalTask(ti.status)
        ? {
            history: [...(ti.history ?? []), attemptSummary(ti, ti.status, ti.endTime)].slice(
              -MAX_HISTORY,
            ),
          }
        : {}),
    });
    after.set(id, { status, generation });
  }

  // A finished run reopens only into a free slot of the DAG's maxActiveRuns.
  const reopening = isTerminalRun(run.status);
  if (reopening && !(await deps.store.acquireRunSlot(dagId, runId, dag.maxActiveRuns))) {
    throw new ConflictError(
      `DAG ${dagId} already has ${dag.maxActiveRuns} active runs (maxActiveRuns, or paused): clear again once one ends`,
    );
  }
  try {
    await deps.store.clearTasks({
      dagId,
      runId,
      taskCount: dag.tasks.length,
      runStatus: run.status,
      ...(reopening ? { slot: dag.maxActiveRuns } : {}),
      at: now,
      tasks: planned,
      ...(one ? { instance: one } : {}),
    });
  } catch (e) {
    if (reopening) await deps.store.releaseRunSlot(dagId, runId);
    if (e instanceof ConflictError) throw changedMeanwhile(runId, e);
    throw e;
  }
  const messages: TaskMessage[] = await Promise.all(
    [
      ...planned.filter((t) => t.status === 'queued'),
      ...(one ? [{ taskId: one.taskId, attempt: one.attempt }] : []),
    ].map((t) =>
      taskMessage(deps, { dagId, runId, taskId: t.taskId, attempt: t.attempt }, run.dagVersion),
    ),
  );
  // If this send is lost, the reaper finds them queued and sends them again.
  await deps.dispatcher.dispatch(messages);
  return (await deps.store.getRun(dagId, runId)) ?? run;
}

function changedMeanwhile(runId: string, e: ConflictError): ConflictError {
  return new ConflictError(
    `run ${runId} changed while it was being cleared (another clear, or a task moved on); nothing was changed: try again`,
    undefined,
    { cause: e },
  );
}

/**
 * What clearing instance `mapIndex` of mapped task `taskId` changes beyond the DAG's tasks
 * (ClearPlan.instance), from what was read: refused unless the instance is of the task's current
 * expansion and finished, and the task waits for its instances or ended after them.
 */
async function instancePart(
  deps: Deps,
  run: RunRecord,
  task: Task | undefined,
  instances: ReadonlyMap<string, TaskInstanceRecord>,
  taskId: string,
  mapIndex: number,
): Promise<NonNullable<ClearPlan['instance']>> {
  if (task?.mapOver === undefined) {
    throw new ValidationError([
      { path: 'mapIndex', message: `task ${taskId} is not mapped: clear it without mapIndex` },
    ]);
  }
  const parent = instances.get(taskId);
  const inst = instances.get(instanceId(taskId, mapIndex));
  const { mapAttempt, mapLength } = parent ?? {};
  if (
    !parent ||
    !inst ||
    mapAttempt === undefined ||
    mapLength === undefined ||
    inst.mapAttempt !== mapAttempt
  ) {
    throw new NotFoundError(
      `task ${taskId} of run ${run.runId} has no mapped instance ${mapIndex}`,
    );
  }
  if (!isTerminalTask(inst.status)) {
    throw new ConflictError(
      `instance ${mapIndex} of task ${taskId} is ${inst.status}: only a finished instance can be cleared`,
    );
  }
  const waiting =
    parent.status === 'running' && parent.leaseToken === null && parent.attempt === mapAttempt;
  if (!waiting && !(isTerminalTask(parent.status) && parent.mapCounts)) {
    throw new ConflictError(
      `task ${taskId} is ${parent.status}: clear the mapped task, which runs all its instances again`,
    );
  }
  const counted = (await deps.store.mapOutcomeCounted(
    inst,
    mapIndex,
    mapAttempt,
    mapLength,
    inst.generation,
  ))
    ? counterFor(inst.status)
    : undefined;
  return {
    taskId: inst.taskId,
    parentTaskId: taskId,
    expect: { status: inst.status, attempt: inst.attempt, generation: inst.generation },
    attempt: inst.attempt + 1,
    generation: inst.generation + 1,
    ...(hasTriedSinceClear(inst) && inst.status !== 'failed'
      ? {
          history: [...(inst.history ?? []), attemptSummary(inst, inst.status, inst.endTime)].slice(
            -MAX_HISTORY,
          ),
        }
      : {}),
    mapAttempt,
    mapLength,
    mapIndex,
    ...(counted ? { counted } : {}),
    waiting,
  };
}

/** The tasks of `subset` with each after all of its upstream tasks in the subset (Kahn). */
function topologicalOrder(
  subset: ReadonlySet<string>,
  graph: {
    readonly upstream: ReadonlyMap<string, readonly string[]>;
    readonly downstream: ReadonlyMap<string, readonly string[]>;
  },
): string[] {
  const waiting = new Map<string, number>();
  for (const id of subset) {
    waiting.set(id, (graph.upstream.get(id) ?? []).filter((u) => subset.has(u)).length);
  }
  const out = [...subset].filter((id) => waiting.get(id) === 0);
  for (let i = 0; i < out.length; i++) {
    for (const d of graph.downstream.get(out[i] as string) ?? []) {
      if (!subset.has(d)) continue;
      const left = (waiting.get(d) ?? 0) - 1;
      waiting.set(d, left);
      if (left === 0) out.push(d);
    }
  }
  return out;
}

/** How a task instance's end enters its run's progress (core/readiness progressEntry). */
function progressEntryOf(t: TaskInstanceRecord) {
  return progressEntry(
    t.uncounted === true,
    t.status === 'success' || t.status === 'skipped',
    t.generation,
  );
}
