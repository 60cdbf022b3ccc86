import { ConflictError, NotFoundError } from '../core/errors.ts';
import type { RunRecord, TaskMessage } from '../core/ports.ts';
import { counterFor, countUpstream, decide } from '../core/readiness/index.ts';
import { clearTask, isTerminalRun, isTerminalTask, resolveTask } from '../core/state/index.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { queue } from './runs.ts';

/**
 * Clears a finished task and everything downstream of it, so that they run again with new
 * attempt numbers (Airflow's "clear" with downstream). The run reopens if it had ended.
 *
 * Order matters: the run reopens first (so that readiness acts on the events that follow), the
 * cleared tasks go back to `pending` and leave the run's progress, their readiness counts are
 * recomputed from their upstream tasks as they now stand, and then any whose trigger rule is
 * already decided is queued (or resolved). Each step is a conditional write.
 */
export async function clearTasks(
  deps: Deps,
  dagId: string,
  runId: string,
  taskId: string,
): Promise<RunRecord> {
  const run = await deps.store.getRun(dagId, runId);
  if (!run) throw new NotFoundError(`run ${runId} of DAG ${dagId} not found`);
  const { dag, graph, tasks } = await loadDag(deps, dagId, run.dagVersion);
  if (!tasks.has(taskId)) throw new NotFoundError(`task ${taskId} is not in DAG ${dagId}`);
  const instances = new Map(
    (await deps.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t]),
  );
  const root = instances.get(taskId);
  if (!root || !isTerminalTask(root.status)) {
    throw new ConflictError(
      `task ${taskId} is ${root?.status ?? 'missing'}: only a finished task can be cleared`,
    );
  }

  // The task and everything downstream of it.
  const cleared = new Set([taskId]);
  for (const id of cleared) for (const d of graph.downstream.get(id) ?? []) cleared.add(d);

  const now = deps.clock();
  let current = run;
  if (isTerminalRun(run.status)) {
    current = await deps.store.transitionRun(dagId, runId, [run.status], 'running', now);
  }

  for (const id of cleared) {
    const ti = instances.get(id);
    if (!ti || !isTerminalTask(ti.status)) continue;
    const updated = await deps.store.transitionTask(ti, clearTask(ti, now));
    instances.set(id, updated);
    await deps.store.unrecordTaskFinished(
      ti,
      ti.status === 'success' || ti.status === 'skipped',
      dag.tasks.length,
    );
  }

  const messages: TaskMessage[] = [];
  for (const id of cleared) {
    const upstream = graph.upstream.get(id) ?? [];
    const statuses = upstream.map((u) => instances.get(u)?.status ?? 'pending');
    const counted = upstream.filter((_, i) => counterFor(statuses[i] ?? 'pending') !== undefined);
    const ti = await deps.store.resetUpstreamCounts(
      { dagId, runId, taskId: id },
      countUpstream(statuses),
      counted,
    );
    const decision = decide(
      tasks.get(id)?.triggerRule ?? 'all_success',
      ti.counts,
      ti.upstreamCount,
    );
    if (decision === 'queue') {
      const m = await queue(deps, ti, run.dagVersion, ti);
      if (m) messages.push(m);
    } else if (decision === 'skipped' || decision === 'upstream_failed') {
      await deps.store.transitionTask(ti, resolveTask(ti, decision, now));
    }
  }
  await deps.dispatcher.dispatch(messages);
  return current;
}
