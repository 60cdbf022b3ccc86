import { ConflictError, NotFoundError, TooLargeError, ValidationError } from '../core/errors.ts';
import { jsonByteLength, jsonValueIssues } from '../core/json.ts';
import { baseTaskId } from '../core/mapping/index.ts';
import { Metric } from '../core/metric-names.ts';
import type { NewRun, RunRecord, TaskInstanceRecord, TaskKey, TaskMessage } from '../core/ports.ts';
import { startsImmediately } from '../core/readiness/index.ts';
import {
  CREATION_LEASE_SECONDS,
  cancelTask,
  isTerminalRun,
  isTerminalTask,
  manualRunId,
  queueTask,
  scheduledRunId,
} from '../core/state/index.ts';
import { type LoadedDag, loadDag } from './dags.ts';
import { stopDeferred } from './deferred.ts';
import type { Deps } from './deps.ts';
import { injectFault } from './faults.ts';
import { released } from './pools.ts';

/** The most a run's `conf` may take as JSON, far below DynamoDB's 400 KB item limit. */
export const MAX_CONF_BYTES = 64 * 1024;

export { CREATION_LEASE_SECONDS };

export interface TriggerInput {
  readonly dagId: string;
  readonly conf?: Readonly<Record<string, unknown>> | undefined;
  /** Manual runs: the same key always names the same run. */
  readonly idempotencyKey?: string | undefined;
  /** Scheduled runs: the scheduled time, which names the run. */
  readonly scheduledTime?: Date | undefined;
}

/**
 * Refuses a `conf` that could not be stored, or read back unchanged, before anything is written:
 * every later write of the run must fit too, so the bound is well below the item limit.
 */
export function checkConf(conf: unknown): void {
  const issues = jsonValueIssues(conf, ['conf']);
  if (issues.length > 0) throw new ValidationError(issues);
  const bytes = jsonByteLength(conf);
  if (bytes > MAX_CONF_BYTES) {
    throw new TooLargeError([
      {
        path: '$.conf',
        message: `is ${bytes} bytes as JSON; the limit is ${MAX_CONF_BYTES} bytes (store large inputs in S3 and pass their keys)`,
      },
    ]);
  }
}

function newRunInput(
  loaded: LoadedDag,
  fields: Pick<NewRun, 'dagId' | 'runId' | 'kind' | 'logicalDate' | 'conf' | 'at'>,
): NewRun {
  return {
    ...fields,
    dagVersion: loaded.version.version,
    tasks: loaded.dag.tasks.map((t) => ({
      taskId: t.taskId,
      upstreamCount: loaded.graph.upstream.get(t.taskId)?.length ?? 0,
      ...(loaded.uncounted.has(t.taskId) ? { uncounted: true } : {}),
    })),
  };
}

/**
 * Creates a run of the DAG's latest version and starts it. The run id is derived from the
 * scheduled time or the idempotency key, so a repeated trigger finds the existing run
 * (`created: false`) instead of making a second one. A large run is answered at once, `queued`:
 * its task instances are written off the request path (see writeRunTasks), and it starts then.
 * A run of a paused DAG waits `queued` until the DAG is unpaused, as in Airflow.
 */
export async function triggerRun(
  deps: Deps,
  input: TriggerInput,
): Promise<{ run: RunRecord; created: boolean }> {
  const conf = input.conf ?? {};
  checkConf(conf);
  const meta = await deps.store.getDag(input.dagId);
  if (!meta || meta.deleted) throw new NotFoundError(`DAG ${input.dagId} not found`);
  const loaded = await loadDag(deps, input.dagId, meta.latestVersion);
  const now = deps.clock();
  // Keys are scoped to the DAG's incarnation: a key used before a delete names a new run after.
  const key = input.idempotencyKey ?? `${now.toISOString()}__${deps.newId().slice(0, 8)}`;
  const runId = input.scheduledTime
    ? scheduledRunId(input.scheduledTime)
    : manualRunId(meta.incarnation > 1 ? `${key}__i${meta.incarnation}` : key);
  const { run, created } = await deps.store.createRun(
    newRunInput(loaded, {
      dagId: input.dagId,
      runId,
      kind: input.scheduledTime ? 'scheduled' : 'manual',
      logicalDate: input.scheduledTime ?? now,
      conf,
      at: now,
    }),
  );
  await injectFault(deps, loaded.dag, 'trigger.after-create', { dagId: input.dagId, runId });
  if (run.status !== 'queued') return { run, created };
  let current = run;
  // A small run's tasks were written after its run item: a cancel that landed meanwhile saw
  // only some of them, so it must not be started (the cancel finishes the rest; the reaper
  // gives back a slot taken anyway). Once they are all written, a cancel sees every one.
  if (created && run.tasksWritten) {
    const now = await deps.store.getRun(input.dagId, runId);
    if (now && now.status !== 'queued') return { run: now, created };
  }
  // A repeat of a trigger whose first call died before starting the run finishes the job, once
  // every item of the run is there (a creator still writing them, or one that died halfway,
  // leaves the run to the reaper after its creation lease).
  if (
    !created &&
    !run.tasksWritten &&
    (await deps.store.confirmRunTasks(input.dagId, runId, true))
  ) {
    current = { ...run, tasksWritten: true };
  }
  if (!current.tasksWritten) return { run, created };
  const started = await startRun(deps, current, loaded);
  // Waiting for a slot: its start, which would have said its tasks are written, comes later
  // and from elsewhere (the next run's end, an unpause, the reaper), which must know they are.
  if (created && started.status === 'queued') {
    await deps.store.confirmRunTasks(input.dagId, runId, false);
    // A run that ended before the confirmation did not find this one in the queue: try again.
    return { run: await startRun(deps, current, loaded), created };
  }
  return { run: started, created };
}

/**
 * Writes the task instances of a large run and starts it. Called for the run's creation event
 * and by the reaper for a run whose writer died; safe to repeat and to race.
 */
export async function writeRunTasks(
  deps: Deps,
  dagId: string,
  runId: string,
): Promise<'written' | 'busy' | 'gone'> {
  const run = await deps.store.getRun(dagId, runId);
  if (!run) return 'gone';
  const loaded = await loadDag(deps, dagId, run.dagVersion);
  const now = deps.clock();
  const result = run.tasksWritten
    ? 'written'
    : await deps.store.writeRunTasks(
        newRunInput(loaded, {
          dagId,
          runId,
          kind: run.kind,
          logicalDate: new Date(run.logicalDate),
          conf: run.conf,
          at: new Date(run.createdAt),
        }),
        { token: deps.newId(), seconds: CREATION_LEASE_SECONDS, now },
      );
  if (result === 'written') {
    const current = await deps.store.getRun(dagId, runId);
    if (current?.status === 'queued') await startRun(deps, current, loaded);
  }
  return result;
}

/**
 * Moves a queued run to running and queues the tasks that start at once (no upstream tasks, or
 * rule `always`). Safe to repeat: each step is a conditional write.
 */
export async function startRun(deps: Deps, run: RunRecord, loaded: LoadedDag): Promise<RunRecord> {
  const now = deps.clock();
  let current = run;
  if (!run.tasksWritten) return run;
  // maxActiveRuns: without a slot (or while the DAG is paused) the run waits in `queued`; a run
  // that ends, an unpause and the reaper start the next.
  if (
    run.status === 'queued' &&
    !(await deps.store.acquireRunSlot(run.dagId, run.runId, loaded.dag.maxActiveRuns))
  ) {
    return run;
  }
  // The tasks that start at once are queued and sent before the run is marked running: a
  // process that dies in between leaves the run `queued`, holding its slot, where the next run
  // end or the reaper starts it again (every step here is conditional, so that repeats nothing
  // twice; a message lost by the crash is resent by the reaper from its queued index). The other
  // order could leave a run `running` with nothing queued, which nothing would ever look at.
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
  try {
    current = await deps.store.transitionRun(run.dagId, run.runId, ['queued'], 'running', now);
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    // Running already, or ended meanwhile (its tasks all finished first: see advance).
    current = (await deps.store.getRun(run.dagId, run.runId)) ?? run;
  }
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
  // Read first: a cached, immutable version.
  const executor = await executorOf(deps, key, dagVersion);
  try {
    const queued = await deps.store.transitionTask(key, queueTask(expected, deps.clock()));
    return { ...key, attempt: queued.attempt, dagVersion, ...executor };
  } catch (e) {
    if (e instanceof ConflictError) return undefined;
    throw e;
  }
}

/**
 * `{ executor: 'fargate' }` for a task that runs on Fargate workers; nothing for Lambda. A
 * version that cannot be read goes to a Lambda worker, which fails the attempt saying why.
 */
async function executorOf(
  deps: Deps,
  key: TaskKey,
  dagVersion: number,
): Promise<{ executor?: 'fargate' }> {
  try {
    const task = (await loadDag(deps, key.dagId, dagVersion)).tasks.get(baseTaskId(key.taskId));
    return task?.executor === 'fargate' ? { executor: 'fargate' } : {};
  } catch (e) {
    if (e instanceof NotFoundError || e instanceof ValidationError) return {};
    throw e;
  }
}

/** The message of an attempt already queued (a resend, a clear's), routed by its executor. */
export async function taskMessage(
  deps: Deps,
  ti: TaskKey & { readonly attempt: number },
  dagVersion: number,
): Promise<TaskMessage> {
  const { dagId, runId, taskId, attempt } = ti;
  return { dagId, runId, taskId, attempt, dagVersion, ...(await executorOf(deps, ti, dagVersion)) };
}

/** A run has ended: give its slot back and start the oldest queued run of the DAG, if any. */
export async function runEnded(deps: Deps, dagId: string, runId: string): Promise<void> {
  await deps.store.releaseRunSlot(dagId, runId);
  await startQueuedRuns(deps, dagId, 1);
}

/**
 * Starts up to `max` of the DAG's queued runs, oldest logical date first, as slots allow: after
 * a run ends, on unpause, and from the reaper. One index read, however long the DAG's history.
 */
export async function startQueuedRuns(deps: Deps, dagId: string, max: number): Promise<number> {
  let started = 0;
  for (const next of await deps.store.listQueuedRuns(dagId, max)) {
    const run = await startRun(deps, next, await loadDag(deps, dagId, next.dagVersion));
    if (run.status !== 'running') break; // no slot left (or paused): the rest wait too
    started++;
  }
  return started;
}

/**
 * Gives back the slots of runs that ended without releasing them (their end event was lost),
 * then starts queued runs into the free slots. The reaper's repair for a DAG with waiting runs.
 */
export async function reconcileRunSlots(deps: Deps, dagId: string): Promise<number> {
  const dag = await deps.store.getDag(dagId);
  if (!dag) return 0;
  if (dag.deleted) {
    // A deleted DAG never starts its waiting runs again: end them, so nothing waits for ever.
    for (const run of await deps.store.listQueuedRuns(dagId, 100)) {
      await deps.store
        .transitionRun(dagId, run.runId, ['queued'], 'cancelled', deps.clock())
        .then(() => deps.metrics?.addMetric(Metric.RunCancelled, 'Count', 1))
        .catch((e: unknown) => {
          if (!(e instanceof ConflictError)) throw e;
        });
    }
    return 0;
  }
  for (const runId of dag.activeRuns) {
    const run = await deps.store.getRun(dagId, runId);
    if (!run || isTerminalRun(run.status)) await deps.store.releaseRunSlot(dagId, runId);
  }
  if (dag.paused) return 0;
  const { dag: doc } = await loadDag(deps, dagId, dag.latestVersion);
  return startQueuedRuns(deps, dagId, doc.maxActiveRuns);
}

/**
 * Cancels a run: the run first, so that a run end computed meanwhile cannot land (its write is
 * conditional on `running`) and the run stays cancelled; then every unfinished task, each
 * re-read when it moved on meanwhile. A running attempt loses its lease and cannot complete;
 * its operator stops at its next heartbeat.
 */
export async function cancelRun(deps: Deps, dagId: string, runId: string): Promise<RunRecord> {
  const now = deps.clock();
  const run = await deps.store.transitionRun(dagId, runId, ['queued', 'running'], 'cancelled', now);
  deps.metrics?.addMetric(Metric.RunCancelled, 'Count', 1);
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
      if (current.status === 'running') await released(deps, current.gates);
      // A deferred attempt's external work runs on without a worker: stop it too. Best effort:
      // its end event then finds the attempt cancelled and changes nothing.
      if (current.deferred) {
        await stopDeferred(deps, current, 'the Airless run was cancelled').catch(() => {
          deps.metrics?.addMetric(Metric.DeferredStopFailed, 'Count', 1);
        });
      }
      return;
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      current = await deps.store.getTaskInstance(current);
    }
  }
}
