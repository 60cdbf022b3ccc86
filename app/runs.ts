import { ConflictError } from '../core/errors.ts';
import type { RunRecord, TaskInstanceRecord, TaskKey, TaskMessage } from '../core/ports.ts';
import { startsImmediately } from '../core/readiness/index.ts';
import {
  cancelTask,
  isTerminalTask,
  manualRunId,
  queueTask,
  scheduledRunId,
} from '../core/state/index.ts';
import { type LoadedDag, loadDag, loadLatestDag } from './dags.ts';
import type { Deps } from './deps.ts';

export interface TriggerInput {
  readonly dagId: string;
  readonly conf?: Readonly<Record<string, unknown>> | undefined;
  /** Manual runs: the same key always names the same run. */
  readonly idempotencyKey?: string | undefined;
  /** Scheduled runs: the scheduled time, which names the run. */
  readonly scheduledTime?: Date | undefined;
}

/**
 * Creates a run of the DAG's latest version and starts it. The run id is derived from the
 * scheduled time or the idempotency key, so a repeated trigger finds the existing run
 * (`created: false`) instead of making a second one.
 */
export async function triggerRun(
  deps: Deps,
  input: TriggerInput,
): Promise<{ run: RunRecord; created: boolean }> {
  const loaded = await loadLatestDag(deps, input.dagId);
  const now = deps.clock();
  const runId = input.scheduledTime
    ? scheduledRunId(input.scheduledTime)
    : manualRunId(input.idempotencyKey ?? `${now.toISOString()}__${deps.newId().slice(0, 8)}`);
  const { run, created } = await deps.store.createRun({
    dagId: input.dagId,
    runId,
    dagVersion: loaded.version.version,
    kind: input.scheduledTime ? 'scheduled' : 'manual',
    logicalDate: input.scheduledTime ?? now,
    conf: input.conf ?? {},
    tasks: loaded.dag.tasks.map((t) => ({
      taskId: t.taskId,
      upstreamCount: loaded.graph.upstream.get(t.taskId)?.length ?? 0,
    })),
    at: now,
  });
  // A repeat of a trigger whose first call died before starting the run finishes the job.
  if (run.status === 'queued') return { run: await startRun(deps, run, loaded), created };
  return { run, created };
}

/**
 * Moves a queued run to running and queues the tasks that start at once (no upstream tasks, or
 * rule `always`). Safe to repeat: each step is a conditional write.
 */
export async function startRun(deps: Deps, run: RunRecord, loaded: LoadedDag): Promise<RunRecord> {
  const now = deps.clock();
  let current = run;
  // maxActiveRuns: without a slot the run waits in `queued`; a run that ends starts the next.
  if (
    run.status === 'queued' &&
    !(await deps.store.acquireRunSlot(run.dagId, run.runId, loaded.dag.maxActiveRuns))
  ) {
    return run;
  }
  try {
    current = await deps.store.transitionRun(run.dagId, run.runId, ['queued'], 'running', now);
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    current = (await deps.store.getRun(run.dagId, run.runId)) ?? run;
  }
  const roots = loaded.dag.tasks.filter((t) =>
    startsImmediately(t.triggerRule, loaded.graph.upstream.get(t.taskId)?.length ?? 0),
  );
  const messages = await Promise.all(
    roots.map((t) =>
      queue(deps, { dagId: run.dagId, runId: run.runId, taskId: t.taskId }, run.dagVersion, {
        status: 'pending',
        attempt: 0,
        leaseToken: null,
      }),
    ),
  );
  await deps.dispatcher.dispatch(messages.filter((m): m is TaskMessage => m !== undefined));
  return current;
}

/**
 * Queues one task: the conditional write first, so that of two callers only one sends the
 * message. Returns the message to send, or undefined if someone else queued it.
 */
export async function queue(
  deps: Deps,
  key: TaskKey,
  dagVersion: number,
  expected: Pick<TaskInstanceRecord, 'status' | 'attempt' | 'leaseToken'>,
): Promise<TaskMessage | undefined> {
  try {
    const queued = await deps.store.transitionTask(key, queueTask(expected, deps.clock()));
    return { ...key, attempt: queued.attempt, dagVersion };
  } catch (e) {
    if (e instanceof ConflictError) return undefined;
    throw e;
  }
}

/**
 * Cancels a run: the run first, so that readiness queues nothing more, then every unfinished task.
 * A running attempt loses its lease and cannot complete; its operator stops at its next heartbeat.
 */
/** A run has ended: give its slot back and start the oldest queued run of the DAG, if any. */
export async function runEnded(deps: Deps, dagId: string, runId: string): Promise<void> {
  await deps.store.releaseRunSlot(dagId, runId);
  const [next] = await deps.store.listQueuedRuns(dagId, 1);
  if (next) await startRun(deps, next, await loadDag(deps, dagId, next.dagVersion));
}

export async function cancelRun(deps: Deps, dagId: string, runId: string): Promise<RunRecord> {
  const now = deps.clock();
  const run = await deps.store.transitionRun(dagId, runId, ['queued', 'running'], 'cancelled', now);
  await runEnded(deps, dagId, runId);
  const tasks = await deps.store.listTaskInstances(dagId, runId);
  await Promise.all(
    tasks.filter((t) => !isTerminalTask(t.status)).map((t) => cancelOne(deps, t, now)),
  );
  return run;
}

/**
 * Cancels one task, re-reading it when it moved on meanwhile (queued by readiness, claimed by a
 * worker): each try is a conditional write on what it saw, and it stops once the task is finished.
 */
async function cancelOne(deps: Deps, task: TaskInstanceRecord, at: Date): Promise<void> {
  let current: TaskInstanceRecord | undefined = task;
  for (let tries = 0; current && !isTerminalTask(current.status) && tries < 5; tries++) {
    try {
      await deps.store.transitionTask(current, cancelTask(current, at));
      return;
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      current = await deps.store.getTaskInstance(current);
    }
  }
}
