import { ConflictError } from '../core/errors.ts';
import { Metric } from '../core/metric-names.ts';
import type { TaskKey, TaskMessage } from '../core/ports.ts';
import { nextStep, runOutcome } from '../core/readiness/index.ts';
import { isTerminalTask, resolveTask, type TaskStatus } from '../core/state/index.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { injectFault } from './faults.ts';
import { queue, runEnded, taskMessage } from './runs.ts';

/**
 * What happens after a task reaches a terminal status: each downstream task counts the outcome
 * and is queued, skipped or failed as its trigger rule says, and the run ends once every task has
 * finished. Costs O(out-degree) writes. Safe to repeat for the same event (at-least-once
 * delivery): an outcome is counted once per task and generation, so an event that a clear
 * overtook (an older generation) changes no count that matters, and every transition is
 * conditional.
 *
 * A task resolved here to `skipped` or `upstream_failed` is itself a terminal transition, and its
 * own event continues the chain.
 */
export async function advance(
  deps: Deps,
  key: TaskKey,
  status: TaskStatus,
  dagVersion: number,
  generation = 0,
): Promise<void> {
  if (!isTerminalTask(status)) return;
  const { dag, graph, tasks } = await loadDag(deps, key.dagId, dagVersion);
  const now = deps.clock();
  const messages: TaskMessage[] = [];

  if (status !== 'cancelled') {
    await Promise.all(
      (graph.downstream.get(key.taskId) ?? []).map(async (taskId) => {
        const dk = { dagId: key.dagId, runId: key.runId, taskId };
        const { task, counted } = await deps.store.recordUpstreamOutcome(
          dk,
          key.taskId,
          status,
          generation,
        );
        // A repeat of this event (the stream retries a record whose handler died after queuing
        // but before sending): send the queued task's message again. Within SQS's 5-minute
        // window the copy is dropped; after it, the claim is.
        if (!counted && task.status === 'queued') {
          messages.push(await taskMessage(deps, { ...dk, attempt: task.attempt }, dagVersion));
          return;
        }
        const decision = nextStep(tasks.get(taskId)?.triggerRule ?? 'all_success', task);
        if (decision === 'queue') {
          const m = await queue(deps, dk, dagVersion, task);
          if (m) messages.push(m);
        } else if (decision === 'skipped' || decision === 'upstream_failed') {
          await deps.store
            .transitionTask(dk, resolveTask(task, decision, now))
            .catch((e: unknown) => {
              if (!(e instanceof ConflictError)) throw e;
            });
        }
      }),
    );
    if ((await injectFault(deps, dag, 'advance.before-dispatch', key)) === 'repeat') {
      await deps.dispatcher.dispatch(messages); // sent twice: SQS drops the copy within 5 min
    }
    await deps.dispatcher.dispatch(messages);
  }

  const progress = await deps.store.recordTaskFinished(
    key,
    status === 'success' || status === 'skipped',
    dag.tasks.length,
    generation,
  );
  if (progress && runOutcome(progress) !== 'running') {
    await injectFault(deps, dag, 'advance.before-run-end', key);
    try {
      // Only if no clear reopened tasks since the progress was read.
      await deps.store.transitionRun(key.dagId, key.runId, ['running'], runOutcome(progress), now, {
        clears: progress.clears,
      });
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
      if (run?.status === 'running') return;
    }
    // Also on a duplicate event, in case the first one died before this: it is harmless twice.
    await runEnded(deps, key.dagId, key.runId);
  }
}
