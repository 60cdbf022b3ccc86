import type { Dag, Task } from '../core/dag/schema.ts';
import {
  AirlessError,
  ConflictError,
  NotFoundError,
  ThrottledError,
  UnrecoverableError,
} from '../core/errors.ts';
import { baseTaskId, mapShardCount, parseInstance } from '../core/mapping/index.ts';
import { Metric } from '../core/metric-names.ts';
import { type Gate, gatesOf, parseWaiter } from '../core/pools/index.ts';
import type { TaskInstanceRecord, TaskMessage } from '../core/ports.ts';
import { nextRetryAt } from '../core/retry/index.ts';
import {
  claimTask,
  deferTask,
  finishTask,
  heartbeatTask,
  isTerminalRun,
  mapTask,
  releaseTask,
  type StoredOutput,
  type TaskInstanceState,
  triesSoFar,
} from '../core/state/index.ts';
import { maskSecrets } from '../core/template/index.ts';
import { type DeferredWork, isDeferred, parseTaskConfig } from '../operators/registry.ts';
import { advance, type Continued, claimAhead, failUnprocessableRun } from './advance.ts';
import { loadDag } from './dags.ts';
import { DEFAULT_CHECK_SECONDS, type DeferredRecord, nextCheck, workName } from './deferred.ts';
import type { Deps } from './deps.ts';
import { InjectedCrash, injectFault } from './faults.ts';
import { indexContinuedOfRun, settleTentative } from './leases.ts';
import { fitsInline, keepEarlierLog } from './logs.ts';
import {
  expandMapped,
  mapItemName,
  renderMapItems,
  settleMapped,
  stopInstances,
} from './mapping.ts';
import { storeOutput } from './outputs.ts';
import { claimThroughGates, released } from './pools.ts';
import { scheduleRetry } from './retries.ts';
import { runEnded } from './runs.ts';
import { renderConfig } from './templates.ts';

export interface ExecuteOptions {
  /** How long a claim or heartbeat holds the attempt; past it, the reaper may take it back. */
  readonly leaseSeconds: number;
  readonly heartbeatSeconds: number;
  /** Time left before the worker itself is stopped (Lambda's remaining time). */
  readonly remainingMs: () => number;
  /**
   * Aborted when the worker is stopping and cannot wait for this attempt (a Fargate worker's
   * SIGTERM): the attempt is handed back to the queue, unchanged, for another worker.
   */
  readonly handBack?: AbortSignal;
  /** How long a deferred attempt waits for its end event before the reaper asks. */
  readonly deferredCheckSeconds?: number;
  /** Called once the attempt is claimed, before it runs (a Fargate worker keeps its message). */
  readonly onClaimed?: () => Promise<void>;
  /**
   * How many tasks, one after another, this worker may run itself when a success makes exactly
   * one task ready (a chain's next task): it claims that one at once instead of sending it
   * through the queue and waiting for a worker to receive it. 0 or absent: none. The bound keeps
   * a long chain from holding one worker: every so often its next task goes through the queue,
   * behind the other work waiting there.
   */
  readonly continuations?: number;
  /**
   * And for how long, in all (ms, counted from the end of the attempt this worker took from the
   * queue): the bound that matters for fairness, as a continuation saves a queue round trip per
   * task, which counts only for short tasks. Absent: `continuations` alone bounds it.
   */
  readonly continuationMs?: number;
  /** Told each continued attempt's outcome (the first attempt's is the one returned). */
  readonly onContinued?: (msg: TaskMessage, outcome: ExecuteOutcome) => void;
}

export type ExecuteOutcome =
  | 'success'
  | 'failed'
  | 'up_for_retry'
  /** A duplicate or stale message: someone else has (or had) this attempt. */
  | 'not_claimed'
  /** The lease moved on while it ran: its result was not written. */
  | 'lease_lost'
  /** Deferred: external work started, and its end will record the outcome. */
  | 'deferred'
  /** A mapped task expanded into its instances, which run on their own (core/mapping). */
  | 'mapped'
  /** The worker stopped and handed the attempt back to the queue. */
  | 'handed_back'
  /** A gate (its pool, its DAG's maxActiveTasks) is full: it waits, parked, for a free slot. */
  | 'waiting';

/** Keep this long for writing the log and the outcome after a timeout. */
const SAFETY_MS = 15_000;

/** Tries of a write that ends this worker's attempt, while DynamoDB throttles it. */
const ENDING_TRIES = 6;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A write that ends this worker's attempt (its outcome, its hand-back), tried again while
 * DynamoDB throttles it and the lease still holds. Given up, the attempt would stay `running`
 * until the lease ran out and be run again, its result lost. Each try is conditional on the
 * lease: a repeat of one that landed unanswered is refused with a ConflictError, as the SDK's
 * own retry is.
 */
async function whileLeased<T>(
  deps: Deps,
  lease: TaskInstanceRecord,
  opts: Pick<ExecuteOptions, 'remainingMs'>,
  write: () => Promise<T>,
): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await write();
    } catch (e) {
      const wait = 50 * 2 ** tries * (0.5 + deps.random() / 2);
      const left = Date.parse(lease.leaseExpiresAt ?? '') - deps.clock().getTime();
      // Within the lease, and within the worker's own time: a Lambda stopped mid-retry would
      // send its whole batch back.
      const time = Math.min(left, opts.remainingMs() - 5_000);
      if (!(e instanceof ThrottledError) || tries >= ENDING_TRIES || !(time > wait + 1000)) {
        throw e;
      }
      deps.metrics?.addMetric(Metric.TaskEndThrottled, 'Count', 1);
      await sleep(wait);
    }
  }
}

class LogBuffer {
  readonly #lines: string[] = [];
  /** Values of the run's conf and the DAG's params under secret-looking keys: never logged. */
  secrets: ReadonlySet<string> = new Set();
  constructor(private readonly clock: () => Date) {}
  add(line: string) {
    this.#lines.push(`${this.clock().toISOString()} ${this.mask(line)}`);
  }
  mask(text: string): string {
    return this.secrets.size > 0 ? (maskSecrets(text, this.secrets) as string) : text;
  }
  text() {
    return `${this.#lines.join('\n')}\n`;
  }
}

/**
 * Runs one task attempt exactly as far as its lease allows:
 * claim (conditional on `queued` and the message's attempt) → run the operator with a timeout,
 * heartbeating the lease → record the outcome (conditional on the lease), with a small log kept
 * in the same write or a larger one written beside it → advance readiness from a success.
 * A duplicate message fails the claim and does nothing; a worker whose lease moved on cannot
 * write its outcome (fencing).
 */
export async function executeTask(
  deps: Deps,
  msg: TaskMessage,
  opts: ExecuteOptions,
  /** A continued task that the write that queued it also claimed for this worker. */
  claimed?: TaskInstanceRecord,
  /** A continued task: its continuation ends once the invocation has no more time left than this. */
  continueUntil?: number,
): Promise<ExecuteOutcome> {
  let current: TaskInstanceRecord;
  if (claimed) current = claimed;
  else
    try {
      const gates = await gatesFor(deps, msg);
      if (gates.length > 0) {
        const r = await claimThroughGates(deps, msg, gates, opts.leaseSeconds);
        if (r === 'waiting') return 'waiting';
        current = r;
      } else {
        current = await claim(deps, msg, opts);
        // Taken out of its gate's waiters without a slot (see claim): the next one goes on.
        if (msg.waiter) await released(deps, [parseWaiter(msg.waiter).gate]);
      }
    } catch (e) {
      if (e instanceof NotFoundError) return 'not_claimed';
      if (!(e instanceof ConflictError)) throw e;
      // This attempt moved on. If it is this message's own success, written by a worker that
      // died before advancing readiness from it (the message comes back because it was never
      // deleted), advance now: the message is the repair path of the inline advance.
      const ti = e.current as TaskInstanceRecord | undefined;
      // A mapped task that this message's attempt expanded, waiting for its instances: the
      // worker may have died (or failed) before ending it once they had all ended. Its message
      // is the repair path, as for an inline advance: it comes back until this succeeds.
      if (
        ti?.status === 'running' &&
        ti.attempt === msg.attempt &&
        ti.leaseToken === null &&
        ti.mapAttempt === msg.attempt
      ) {
        await settleMapped(deps, ti);
        return 'not_claimed';
      }
      if (ti?.status === 'success' && ti.attempt === msg.attempt && ti.advanceInline) {
        // A run that has ended counted every task: only what follows its end may be left to
        // finish (its slot, the next queued run), and that is harmless to repeat.
        // Nor is there a walk to repair a task this message's worker continued into and died in
        // (the run failed, or a cancel died before it got to that task): the reaper's instead.
        const run = await deps.store.getRun(msg.dagId, msg.runId);
        if (run && isTerminalRun(run.status)) {
          await runEnded(deps, msg.dagId, msg.runId);
          await indexContinuedOfRun(deps, msg.dagId, msg.runId);
        } else await advanceFrom(deps, ti);
      }
      return 'not_claimed';
    }
  return runClaimed(deps, msg, opts, current, continueUntil);
}

/**
 * The gates the attempt passes (its pool, its DAG's maxActiveTasks). A DAG version that can
 * never be read has none: the plain claim then fails the attempt for it, as for any task.
 */
async function gatesFor(deps: Deps, msg: TaskMessage): Promise<Gate[]> {
  try {
    const { dag, tasks } = await loadDag(deps, msg.dagId, msg.dagVersion);
    const task = tasks.get(baseTaskId(msg.taskId));
    // A mapped task's own attempt only expands it: its instances take the slots.
    if (task?.mapOver !== undefined && !parseInstance(msg.taskId)) return [];
    return task ? gatesOf(dag, task) : [];
  } catch (e) {
    if (e instanceof AirlessError && !e.retryable) return [];
    throw e;
  }
}

async function claim(
  deps: Deps,
  msg: TaskMessage,
  opts: ExecuteOptions,
): Promise<TaskInstanceRecord> {
  const claimed = (ti: TaskInstanceState) =>
    deps.store.transitionTask(msg, claimTask(ti, deps.newId(), opts.leaseSeconds, deps.clock()));
  if (!msg.waiter) {
    return claimed({ status: 'queued', attempt: msg.attempt, leaseToken: null });
  }
  // A woken attempt whose gates cannot be known (its DAG version is unreadable) is claimed out
  // of its gate's waiters, to fail for that reason, rather than stay first in line for ever.
  // From the record as read, so that the store answers with it rather than read it again.
  const ti = await deps.store.getTaskInstance(msg);
  if (!ti) throw new NotFoundError(`claim ${msg.runId}/${msg.taskId}: not found`);
  const waiting =
    ti.status === 'queued' &&
    ti.attempt === msg.attempt &&
    ti.leaseToken === null &&
    ti.parked === msg.waiter;
  if (!waiting) throw new ConflictError(`claim ${msg.runId}/${msg.taskId}: moved on`, ti);
  return claimed(ti);
}

/** Runs a claimed attempt, records its outcome and advances from a success. */
async function runClaimed(
  deps: Deps,
  msg: TaskMessage,
  opts: ExecuteOptions,
  claimed: TaskInstanceRecord,
  continueUntil: number | undefined,
): Promise<ExecuteOutcome> {
  let current = claimed;
  await opts.onClaimed?.();
  // The task was cleared after a success that kept its log inline: that log is copied out
  // before this attempt's outcome can take its place. Best effort: an attempt is not held up
  // by an earlier attempt's log.
  await keepEarlierLog(deps, current, msg).catch((e: unknown) => {
    deps.metrics?.addMetric(Metric.LogWriteFailed, 'Count', 1);
    console.error(`could not copy out an earlier log of ${msg.taskId}: ${(e as Error).message}`);
  });
  const log = new LogBuffer(deps.clock);
  const controller = new AbortController();
  let leaseLost = false;
  const heartbeat = setInterval(() => {
    deps.store
      .transitionTask(msg, heartbeatTask(current, opts.leaseSeconds, deps.clock()))
      .then((t) => {
        current = t;
      })
      .catch((e: unknown) => {
        // Cancelled, or reaped after a stall: stop working on an attempt that is no longer ours.
        if (e instanceof ConflictError) {
          leaseLost = true;
          controller.abort(new Error('the lease on this attempt was lost (cancelled or reaped)'));
        }
      });
  }, opts.heartbeatSeconds * 1000);

  let handedBack = false;
  const onHandBack = () => {
    handedBack = true;
    controller.abort(new Error('the worker is stopping: the attempt is handed back to the queue'));
  };
  if (opts.handBack?.aborted) onHandBack();
  else opts.handBack?.addEventListener('abort', onHandBack, { once: true });

  let error: string | undefined;
  let unrecoverable = false;
  let timer: NodeJS.Timeout | undefined;
  let task: Task | undefined;
  let dagTasks: ReadonlyMap<string, Task> | undefined;
  let dagParams: Dag['params'] = {};
  let dagOfTask: Dag | undefined;
  let stored: StoredOutput | undefined;
  let started: DeferredWork | undefined;
  /** A mapped task's attempt: how many instances it expanded into. */
  let mapped: number | undefined;
  try {
    const { dag, graph, tasks } = await loadDag(deps, msg.dagId, msg.dagVersion);
    dagParams = dag.params;
    dagTasks = tasks;
    dagOfTask = dag;
    await injectFault(deps, dag, 'worker.after-claim', msg);
    const instance = parseInstance(msg.taskId);
    task = tasks.get(instance?.taskId ?? msg.taskId);
    if (!task)
      throw new Error(`task ${msg.taskId} is not in DAG ${msg.dagId} version ${msg.dagVersion}`);
    const operator = deps.operators.get(task.operator);
    if (!operator) {
      throw new UnrecoverableError(`operator "${task.operator}" has no runner in this deployment`);
    }
    const timeoutMs = Math.min(
      task.timeoutSeconds * 1000,
      Math.max(1000, opts.remainingMs() - SAFETY_MS),
    );
    timer = setTimeout(
      () => controller.abort(new Error(`timed out after ${Math.round(timeoutMs / 1000)}s`)),
      timeoutMs,
    );
    log.add(
      `attempt ${msg.attempt} (try ${triesSoFar(current)} of ${task.retries + 1}): ${task.operator} ${msg.taskId}`,
    );
    if (task.mapOver !== undefined && !instance) {
      // A mapped task's own attempt: it expands into its instances, which run the operator.
      const { items, logged } = await renderMapItems(deps, msg, dag, task);
      if (logged !== undefined) log.add(`rendered mapOver: ${logged.slice(0, 4000)}`);
      mapped = await expandMapped(deps, current, items);
      await injectFault(deps, dag, 'mapping.after-expand', msg);
      log.add(
        mapped > 0
          ? `expanded into ${mapped} instances, ${task.taskId}[0] to ${task.taskId}[${mapped - 1}]`
          : 'mapOver gave no items: the task is skipped',
      );
      throw MAPPED;
    }
    // Templates rendered for this attempt; a config that does not parse now never will: the
    // attempt fails for good.
    const rendered = await renderConfig(
      deps,
      msg,
      dag,
      task.config,
      instance ? await mapScope(deps, msg, dag, task, current, instance.mapIndex) : undefined,
    );
    log.secrets = rendered.secrets;
    if (rendered.logged !== undefined) log.add(`rendered config: ${rendered.logged}`);
    const config = parseTaskConfig(operator, rendered.config);
    // What this deployment may touch, checked again on what the templates made of the config
    // (registration could only check what was written): refused, no attempt will do better.
    const refused = rendered.logged !== undefined ? operator.refuses?.(config) : undefined;
    if (refused)
      throw new UnrecoverableError(`this deployment refuses the rendered config: ${refused}`);
    const aborted = new Promise<never>((_, reject) => {
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason));
    });
    const ctx = {
      dagId: msg.dagId,
      runId: msg.runId,
      task,
      attempt: msg.attempt,
      downstream: graph.downstream.get(msg.taskId) ?? [],
      signal: controller.signal,
      log: (line: string) => log.add(line),
      runInputs: async () => ({
        conf: (await deps.store.getRun(msg.dagId, msg.runId))?.conf ?? {},
        params: dag.params,
      }),
    };
    if (isDeferred(operator)) {
      // Only the start runs here; the name makes a repeated start find the same work.
      const name = workName(msg);
      await deps.store.putDeferral(name, msg);
      started = await Promise.race([operator.start(config, { ...ctx, workName: name }), aborted]);
    } else {
      const output = await Promise.race([operator.run(config, ctx), aborted]);
      // Stored before the outcome that names it; too large fails the attempt.
      stored = await storeOutput(deps, msg, output);
      if (output !== undefined && output !== null)
        log.add(`output: ${JSON.stringify(maskSecrets(output, log.secrets)).slice(0, 4000)}`);
    }
  } catch (e) {
    // A crash on purpose ends the invocation here, as a dead process would.
    if (e instanceof InjectedCrash) throw e;
    if (e === MAPPED) {
      clearInterval(heartbeat);
      opts.handBack?.removeEventListener('abort', onHandBack);
      return endMapped(deps, msg, current, mapped ?? 0, log, opts);
    }
    // Masked like the log: the error is kept with the task, its history and its events.
    error = log.mask(e instanceof Error ? e.message : String(e));
    // By name too: an operator bundled with its own copy of the class is still understood.
    unrecoverable = e instanceof UnrecoverableError || (e as Error)?.name === 'UnrecoverableError';
    log.add(`error: ${error}`);
    if (unrecoverable) log.add('this failure is not retryable: no further attempt');
  } finally {
    clearInterval(heartbeat);
    clearTimeout(timer);
  }

  opts.handBack?.removeEventListener('abort', onHandBack);
  // Only an attempt the stop interrupted goes back: one that finished meanwhile keeps its outcome.
  if (handedBack && error !== undefined && !leaseLost) {
    // Not an outcome: the same attempt goes back to `queued`, its log to be written by the
    // worker that claims it next. Work a deferred start began is found again by its name.
    const held = current;
    try {
      await whileLeased(deps, held, opts, () =>
        deps.store.transitionTask(msg, releaseTask(held, deps.clock())),
      );
      await released(deps, held.gates);
      return 'handed_back';
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      // A hand-back that landed unanswered (refused on its repeat) gave its slots back too,
      // and its message must go back, not be deleted: the attempt is queued again.
      const now = e.current as TaskInstanceRecord | undefined;
      if (now?.status === 'queued' && now.attempt === msg.attempt && now.leaseToken === null) {
        await released(deps, held.gates);
        return 'handed_back';
      }
      return 'lease_lost';
    }
  }
  const now = deps.clock();
  if (started && error === undefined && task) {
    return defer(deps, msg, current, started, task, log, opts);
  }
  log.add(error === undefined ? 'success' : 'failed');
  const text = log.text();
  // The worker's own write of its log only creates it: a reaper that took the attempt back
  // may have written its account of it first, and that stays.
  if (leaseLost) {
    await deps.blobs.putLog({ ...msg }, text, { ifAbsent: true });
    return 'lease_lost';
  }
  const faulted = { params: dagParams };
  await injectFault(deps, faulted, 'worker.before-outcome', msg);
  // No task (the DAG could not be read): no retry policy, so the failure is final.
  const retryAt =
    error !== undefined && task && !unrecoverable
      ? nextRetryAt(task, triesSoFar(current), now, deps.random)
      : null;
  // A small log of a success goes with the outcome; any other is written beside it, at the
  // same time. A worker that dies between the two leaves an outcome without a log: the log
  // route then answers 404, never a log that is not there.
  const inline = error === undefined && fitsInline(text);
  const held = current.gates;
  const ending = finishTask(
    current,
    error === undefined
      ? {
          ok: true,
          ...(stored ? { output: stored } : {}),
          ...(inline ? { log: text } : {}),
          advanceInline: true,
        }
      : { ok: false, error, retryAt },
    now,
  );
  // Readiness from a success, here and now rather than by the table's stream; the next task may
  // be run by this worker (a continuation), within these bounds.
  const left = opts.continuations ?? 0;
  // The continuation's end, as the time the invocation has left (its own clock).
  const until =
    continueUntil ??
    (opts.continuationMs === undefined ? -1 : opts.remainingMs() - opts.continuationMs);
  const continueWith = (m: TaskMessage) => {
    // Only a task this kind of worker runs, and only if its whole timeout fits in the time
    // this worker has left: a task is never cut short for having been continued.
    const next = dagTasks?.get(m.taskId);
    return (
      left > 0 &&
      opts.remainingMs() > until &&
      m.executor !== 'fargate' &&
      !opts.handBack?.aborted &&
      next !== undefined &&
      // A mapped task's attempt ends when its last instance does, perhaps after this worker
      // has moved on: only its own message can settle it then.
      next.mapOver === undefined &&
      opts.remainingMs() - SAFETY_MS > next.timeoutSeconds * 1000 &&
      // A task behind a gate waits its turn there, as any other.
      dagOfTask !== undefined &&
      gatesOf(dagOfTask, next).length === 0
    );
  };
  const lease = { token: deps.newId(), seconds: opts.leaseSeconds };
  // A success whose advance is one write, the claim of its continuation, sends that write with
  // its own, in one request (claimAhead): a chain's edge then waits for one answer, not two.
  // The claim is tentative until the success is known to have landed. If the continuation
  // cannot be worked out here, the outcome goes alone, and its advance below says why.
  const ahead =
    error === undefined && !held?.length
      ? await claimAhead(deps, current, continueWith, lease).catch(() => undefined)
      : undefined;
  const [written, logged, aheadWritten] = await Promise.allSettled([
    whileLeased(deps, current, opts, () => deps.store.transitionTask(msg, ending)),
    inline ? Promise.resolve() : deps.blobs.putLog({ ...msg }, text, { ifAbsent: true }),
    ahead ? ahead.write() : Promise.resolve(undefined),
  ]);
  if (logged.status === 'rejected') {
    // Retried by the SDK already: the outcome stands without its log.
    deps.metrics?.addMetric(Metric.LogWriteFailed, 'Count', 1);
    console.error(`could not write the log of ${msg.runId}/${msg.taskId}@${msg.attempt}`);
  }
  /** The continuation's claim, if the write that went with the success made it ours. */
  let aheadClaim =
    ahead &&
    aheadWritten.status === 'fulfilled' &&
    aheadWritten.value?.task.status === 'running' &&
    aheadWritten.value.task.leaseToken === lease.token
      ? aheadWritten.value.task
      : undefined;
  /**
   * Undoes a claim that went with the success, if it may have landed, when this worker will not
   * run it: the task is then counted and queued as usual, by whoever advances the real outcome.
   */
  const withdraw = async () => {
    if (!ahead || (aheadWritten.status === 'fulfilled' && !aheadClaim)) return;
    await injectFault(deps, { params: dagParams }, 'worker.before-withdraw', msg);
    // Its answer lost: read, to withdraw only a claim of ours.
    const claimed = aheadClaim ?? (await deps.store.getTaskInstance(ahead.key));
    if (claimed?.tentative !== undefined && claimed.leaseToken === lease.token) {
      await settleTentative(deps, claimed, 'withdraw');
    }
  };
  let done: TaskInstanceRecord;
  if (written.status === 'fulfilled') {
    done = written.value;
    // Its slots went back with the outcome: the oldest waiting attempts may start.
    await released(deps, held);
  } else {
    if (!(written.reason instanceof ConflictError)) {
      // Not known to have landed; the message comes back. The claim that went with it is
      // undone (if this fails too, the walk of this task's outcome or the reaper settles it).
      await withdraw().catch(() => {});
      throw written.reason;
    }
    // A write that landed but whose answer was lost: the SDK's retry of it (or ours, after
    // throttling) is then refused. This attempt's success can only have been written by its
    // lease holder: it is ours (or, after a hand-back, the next holder's), and readiness from it
    // must not be lost with it. A failure is ours if it ended when and as this one did.
    const current = written.reason.current as TaskInstanceRecord | undefined;
    const ours =
      current?.attempt === msg.attempt &&
      (error === undefined
        ? current.status === 'success' && current.advanceInline === true
        : current.status === ending.set.status &&
          current.error === ending.set.error &&
          (current.status === 'failed'
            ? current.endTime === ending.set.endTime
            : current.retryAt === ending.set.retryAt));
    if (!ours || !current) {
      await withdraw();
      return 'lease_lost';
    }
    done = current;
    await released(deps, held);
  }
  if ((await injectFault(deps, faulted, 'worker.after-outcome', msg)) === 'repeat') {
    await deps.dispatcher.dispatch([msg]); // the same message delivered again, late
  }
  // If this dies midway, the message (deleted only once this returns) comes back and advances
  // again. The success landed: a claim that went with it stands, and is all its advance does.
  // Without one (refused, or its answer lost), the advance below makes it, with the same lease.
  // Checked again: the writes may have taken long enough (throttling) that the task no longer
  // fits in the time this worker has left. Then it goes through the queue.
  if (aheadClaim && ahead && !continueWith(ahead.message)) {
    await withdraw();
    aheadClaim = undefined;
  }
  const next: Continued | undefined =
    ahead && aheadClaim
      ? { message: { ...ahead.message, attempt: aheadClaim.attempt }, claimed: aheadClaim }
      : done.status === 'success'
        ? await advanceFrom(deps, done, continueWith, lease)
        : undefined;
  // If this fails, the reaper finds the retry overdue and queues it.
  await scheduleRetry(deps, done);
  if (next) {
    // Claimed for this worker in the write that queued it, or queued with its message unsent.
    // If this worker dies from here, this message comes back (it is deleted only once this
    // returns): its walk reaps a claimed task whose lease has run out, or puts one whose lease
    // is held in the lease index (it is in none until it heartbeats), and sends a queued one;
    // the reaper sends a queued one too.
    const outcome = await executeTask(
      deps,
      next.message,
      { ...opts, continuations: left - 1 },
      next.claimed,
      until,
    );
    opts.onContinued?.(next.message, outcome);
  }
  return done.status as ExecuteOutcome;
}

/** Thrown past the operator's part by a mapped task's attempt, which has no operator to run. */
const MAPPED = Symbol('mapped');

/**
 * `item` and `mapIndex` of a mapped task's instance: the item as its expansion kept it, with it
 * or beside it as a blob; failing both, from mapOver rendered again.
 */
async function mapScope(
  deps: Deps,
  msg: TaskMessage,
  dag: Dag,
  task: Task,
  ti: TaskInstanceRecord,
  mapIndex: number,
): Promise<{ item: unknown; mapIndex: number }> {
  if (ti.mapItem !== undefined) return { item: JSON.parse(ti.mapItem), mapIndex };
  if (ti.mapAttempt !== undefined) {
    const body = await deps.blobs.getArtifact({ ...msg, attempt: 0 }, mapItemName(ti.mapAttempt));
    if (body) return { item: JSON.parse(Buffer.from(body).toString('utf8')), mapIndex };
  }
  const { items } = await renderMapItems(deps, msg, dag, task);
  if (mapIndex >= items.length) {
    throw new UnrecoverableError(`mapOver now gives ${items.length} items: no item ${mapIndex}`);
  }
  return { item: items[mapIndex], mapIndex };
}

/**
 * The end of a mapped task's attempt that expanded it: it gives up its lease and waits,
 * `running`, for its instances (or is skipped, given no items). If its instances all ended
 * first, it ends now. The log goes with the write when small, as a success's does.
 */
async function endMapped(
  deps: Deps,
  msg: TaskMessage,
  current: TaskInstanceRecord,
  length: number,
  log: LogBuffer,
  opts: ExecuteOptions,
): Promise<ExecuteOutcome> {
  const text = log.text();
  const inline = fitsInline(text);
  const shards = mapShardCount(length);
  const [written, logged] = await Promise.allSettled([
    whileLeased(deps, current, opts, () =>
      deps.store.transitionTask(
        msg,
        mapTask(current, length, shards, inline ? text : undefined, deps.clock()),
      ),
    ),
    inline ? Promise.resolve() : deps.blobs.putLog({ ...msg }, text, { ifAbsent: true }),
  ]);
  if (logged.status === 'rejected') deps.metrics?.addMetric(Metric.LogWriteFailed, 'Count', 1);
  if (written.status === 'rejected') {
    if (!(written.reason instanceof ConflictError)) throw written.reason;
    // Landed unanswered (its repeat refused), or taken back: the reaper has it then.
    const now = written.reason.current as TaskInstanceRecord | undefined;
    const ours =
      now?.attempt === msg.attempt &&
      now.leaseToken === null &&
      (now.status === 'running' ? now.mapAttempt === msg.attempt : now.status === 'skipped');
    if (!ours || !now) {
      // Cancelled or taken back while it expanded: the instances it made count for nothing
      // (a retry expands again), so they stop now rather than run for no one.
      await stopInstances(deps, msg, (t) => t.mapAttempt === msg.attempt);
      return 'lease_lost';
    }
    await settleMapped(deps, now);
    return 'mapped';
  }
  await settleMapped(deps, written.value);
  return 'mapped';
}

/**
 * Advances readiness from an outcome this worker wrote. A run that can never go on (its DAG
 * version unreadable, a write refused for good) fails with the reason, as the stream does;
 * anything a retry can fix escapes, so that the message comes back.
 */
async function advanceFrom(
  deps: Deps,
  ti: TaskInstanceRecord,
  continueWith?: (m: TaskMessage) => boolean,
  lease?: { readonly token: string; readonly seconds: number },
): Promise<Continued | undefined> {
  try {
    return await advance(deps, ti, ti.status, ti.dagVersion, ti.generation, {
      ...(continueWith ? { continueWith } : {}),
      ...(lease ? { lease } : {}),
    });
  } catch (e) {
    if (!(e instanceof AirlessError) || e.retryable) throw e;
    await failUnprocessableRun(deps, ti.dagId, ti.runId, e.message);
    return undefined;
  }
}

/**
 * Records a started deferred attempt: the work and the attempt's deadline (counted from the
 * claim), the next check as the lease, the log so far. The worker is then free. If the attempt
 * moved on meanwhile (cancelled), the work it started is stopped.
 */
async function defer(
  deps: Deps,
  msg: TaskMessage,
  current: TaskInstanceRecord,
  work: DeferredWork,
  task: Task,
  log: LogBuffer,
  opts: ExecuteOptions,
): Promise<ExecuteOutcome> {
  const now = deps.clock();
  const claimedAt = Date.parse(current.startTime ?? now.toISOString());
  const timeoutAt = new Date(claimedAt + task.timeoutSeconds * 1000).toISOString();
  const record: DeferredRecord = { ...work, timeoutAt };
  log.add(`deferred: ${work.operator} work ${work.name} runs without a worker until ${timeoutAt}`);
  const checkAt = nextCheck(now, timeoutAt, opts.deferredCheckSeconds ?? DEFAULT_CHECK_SECONDS);
  try {
    // A new lease token: a cancel that read the attempt before this write cannot pass its
    // fence afterwards without reading it again, and so seeing the work it must stop.
    await deps.store.transitionTask(
      msg,
      deferTask(current, JSON.stringify(record), checkAt, now, deps.newId()),
    );
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    const op = deps.operators.get(work.operator);
    if (op && isDeferred(op)) await op.stop(work, 'the Airless attempt was cancelled or reaped');
    return 'lease_lost';
  }
  // After the record, so that the window in which an end event finds the work unrecorded (and
  // is sent back to be retried) stays one write long. An end event handled within this write's
  // time may have its lines replaced by this log: the outcome stands either way.
  await deps.blobs.putLog({ ...msg }, log.text());
  return 'deferred';
}
