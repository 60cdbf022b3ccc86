import { InvalidTransitionError } from '../errors.ts';
import type { UpstreamCounts } from '../readiness/index.ts';

/** The statuses, lowercase, in Airflow's words (docs/architecture.md). */
export const RUN_STATUSES = ['queued', 'running', 'success', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

export const TASK_STATUSES = [
  'pending',
  'queued',
  'running',
  'success',
  'failed',
  'up_for_retry',
  'upstream_failed',
  'skipped',
  'cancelled',
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export const TERMINAL_TASK_STATUSES: ReadonlySet<TaskStatus> = new Set([
  'success',
  'failed',
  'upstream_failed',
  'skipped',
  'cancelled',
]);
export const TERMINAL_RUN_STATUSES: ReadonlySet<RunStatus> = new Set([
  'success',
  'failed',
  'cancelled',
]);

export const isTerminalTask = (s: TaskStatus) => TERMINAL_TASK_STATUSES.has(s);
export const isTerminalRun = (s: RunStatus) => TERMINAL_RUN_STATUSES.has(s);

/**
 * Every allowed task-instance transition, keyed by the event that causes it. An adapter turns
 * each one into a single conditional write: the item must still be in `from` with the expected
 * attempt and lease token, or the write is refused and nothing changes.
 */
export const TASK_TRANSITIONS = {
  /** Readiness or a retry timer hands the task to the queue; the attempt number goes up by one. */
  queue: { from: ['pending', 'up_for_retry'], to: ['queued'] },
  /** A worker takes the attempt and gets a lease. */
  claim: { from: ['queued'], to: ['running'] },
  /** A worker extends its lease. */
  heartbeat: { from: ['running'], to: ['running'] },
  /**
   * A deferred operator started its external work (core/deferred): the attempt stays running
   * with no worker, and the lease becomes the time of the next check on that work.
   */
  defer: { from: ['running'], to: ['running'] },
  /**
   * A stopping worker hands an attempt it cannot finish back to the queue, unchanged: the same
   * attempt is claimed again by another worker, and no try is spent.
   */
  release: { from: ['running'], to: ['queued'] },
  /** The worker reports the outcome, or the reaper finds the lease expired. */
  finish: { from: ['running'], to: ['success', 'failed', 'up_for_retry'] },
  /**
   * A mapped task's attempt expanded it into its instances (core/mapping): it stays running,
   * with no lease, until they have all finished; or, given no items, it is skipped.
   */
  map: { from: ['running'], to: ['running', 'skipped'] },
  /** Readiness decides the trigger rule can never be met. */
  resolve: { from: ['pending'], to: ['skipped', 'upstream_failed'] },
  /** The run is cancelled: unfinished tasks stop where they are. */
  cancel: { from: ['pending', 'queued', 'running', 'up_for_retry'], to: ['cancelled'] },
  /** The user clears a finished task so it runs again, with the next attempt number. */
  clear: {
    from: ['success', 'failed', 'upstream_failed', 'skipped', 'cancelled'],
    to: ['pending'],
  },
} as const satisfies Record<string, { from: readonly TaskStatus[]; to: readonly TaskStatus[] }>;
export type TaskEvent = keyof typeof TASK_TRANSITIONS;

export const RUN_TRANSITIONS = {
  start: { from: ['queued'], to: ['running'] },
  /**
   * Its tasks all finished. From `queued` too: a run's first tasks are queued before the run is
   * marked running (app/runs.ts startRun), and may all finish before that write.
   */
  finish: { from: ['queued', 'running'], to: ['success', 'failed'] },
  cancel: { from: ['queued', 'running'], to: ['cancelled'] },
  /** The run cannot be processed (its DAG version is unreadable): it fails with a reason. */
  abort: { from: ['queued', 'running'], to: ['failed'] },
  /** Clearing a task of a finished run reopens the run. */
  reopen: { from: ['success', 'failed', 'cancelled'], to: ['running'] },
} as const satisfies Record<string, { from: readonly RunStatus[]; to: readonly RunStatus[] }>;
export type RunEvent = keyof typeof RUN_TRANSITIONS;

export function canTransitionTask(event: TaskEvent, from: TaskStatus, to: TaskStatus): boolean {
  const t = TASK_TRANSITIONS[event];
  return (
    (t.from as readonly TaskStatus[]).includes(from) && (t.to as readonly TaskStatus[]).includes(to)
  );
}

export function canTransitionRun(event: RunEvent, from: RunStatus, to: RunStatus): boolean {
  const t = RUN_TRANSITIONS[event];
  return (
    (t.from as readonly RunStatus[]).includes(from) && (t.to as readonly RunStatus[]).includes(to)
  );
}

/**
 * Checks a run status change as a store is asked to make it (from any of `from` to `to`)
 * against RUN_TRANSITIONS: every pair must be allowed by some event.
 */
export function checkRunTransition(from: readonly RunStatus[], to: RunStatus): void {
  const events = Object.keys(RUN_TRANSITIONS) as RunEvent[];
  for (const f of from) {
    if (!events.some((e) => canTransitionRun(e, f, to))) {
      throw new InvalidTransitionError(`cannot move a run from "${f}" to "${to}"`);
    }
  }
}

/** What the store holds for one task instance; the fields a transition is conditioned on. */
export interface TaskInstanceState {
  readonly status: TaskStatus;
  /** 0 until first queued; attempts are 1-based. */
  readonly attempt: number;
  /** Set while an attempt is running; the fencing token of the worker that holds it. */
  readonly leaseToken: string | null;
  /** The gates (core/pools) whose slots the running attempt holds; absent when none. */
  readonly gates?: readonly string[] | null;
  /** Set while a queued attempt waits at a full gate: where (core/pools waiterOf). */
  readonly parked?: string | null;
}

/**
 * The attempt count when the task was last cleared (0 if never): the retry budget counts from
 * there, so a cleared task gets its retries again, as in Airflow.
 */
export function triesSoFar(ti: { readonly attempt: number; readonly retryBase?: number }): number {
  return ti.attempt - (ti.retryBase ?? 0);
}

/** The most of an error message an attempt's history entry keeps; the log has the rest. */
export const HISTORY_ERROR_CHARS = 200;

/**
 * How long a writer of a run's task instances holds it. Longer than any writer can live: the
 * writers are the API and scheduler functions (creating a run), the advance function (5-minute
 * timeout) and the reaper (2 minutes), and Lambda stops a function at its timeout, so a writer
 * whose lease expired is gone for good.
 */
export const CREATION_LEASE_SECONDS = 6 * 60;

/** The most of an error message a task instance keeps; the log has the rest. */
export const MAX_ERROR_CHARS = 2000;

function boundError(error: string): string {
  return error.length <= MAX_ERROR_CHARS ? error : `${error.slice(0, MAX_ERROR_CHARS - 1)}…`;
}

/**
 * One task-instance state change, as a compare-and-set: write `set` only if the item still
 * matches `expect`. `at` is when it happened (ISO-8601), passed in because the core reads no
 * clock.
 */
export interface TaskTransition {
  readonly event: TaskEvent;
  readonly expect: TaskInstanceState;
  readonly set: TaskInstanceState & {
    readonly leaseExpiresAt?: string | null;
    readonly retryAt?: string | null;
    readonly startTime?: string | null;
    readonly endTime?: string | null;
    readonly error?: string | null;
    readonly retryBase?: number;
    /** The external work of a deferred attempt (JSON, see DeferredWork), while it runs. */
    readonly deferred?: string | null;
    /** A successful attempt's output: JSON text kept with the task instance, when small. */
    readonly output?: string | null;
    /** Or where it is stored, when it is too large to keep inline. */
    readonly outputKey?: string | null;
    /**
     * The attempt's log, when small enough to keep with the task instance instead of a blob of
     * its own (app/logs.ts), and the attempt it belongs to.
     */
    readonly log?: string | null;
    readonly logAttempt?: number | null;
    /**
     * Whoever writes this outcome advances readiness from it itself, at once (app/advance.ts):
     * the table's stream leaves it alone. Cleared by every write that does not set it.
     */
    readonly advanceInline?: boolean;
    /** An attempt this write ends without success: appended to the task's attempt history. */
    readonly past?: AttemptSummary;
    /** A mapped task's expansion (core/mapping): how many instances, over how many shards. */
    readonly mapped?: { readonly length: number; readonly shards: number };
    /** A mapped task's end: its instances' outcomes, which its downstream tasks count. */
    readonly mapCounts?: UpstreamCounts;
  };
  readonly at: string;
  /**
   * The write ends a running attempt: it gives back the slots of these gates (core/pools), in
   * the same atomic write, and is refused unless the attempt holds exactly these.
   */
  readonly release?: readonly string[];
  /**
   * The write takes a queued attempt out of `queued`: it removes the attempt from the gate it
   * waits at, this one (null: none), and is refused unless the attempt waits exactly there.
   */
  readonly unpark?: string | null;
  /**
   * The task instance as the writer read it, when the write releases slots or a place: a store
   * whose atomic write of several items returns nothing answers with it, changed as `set` says
   * (a read after the write could see a later write instead, such as a clear).
   */
  readonly from?: TaskInstanceState;
  /**
   * Only if the lease expired before this time (ISO): the reaper's condition, so that a worker
   * that renewed its lease after the reaper read it keeps its attempt.
   */
  readonly leaseExpiredBy?: string;
  /**
   * Only if the attempt is still a continuation in no lease index (TaskInstanceRecord
   * `continued`): every other write, a heartbeat first, ends that, so this write cannot move
   * back a lease renewed after it was read.
   */
  readonly whileContinued?: true;
  /**
   * A mapped task's end: only if no instance was cleared alone since its counts were read
   * (TaskInstanceRecord mapEpoch; absent counts as 0).
   */
  readonly mapEpoch?: number;
}

function transition(
  event: TaskEvent,
  current: TaskInstanceState,
  set: TaskTransition['set'],
  at: Date,
): TaskTransition {
  if (!canTransitionTask(event, current.status, set.status)) {
    throw new InvalidTransitionError(
      `cannot ${event} a task instance from "${current.status}" to "${set.status}"`,
    );
  }
  return {
    event,
    expect: { status: current.status, attempt: current.attempt, leaseToken: current.leaseToken },
    set,
    at: at.toISOString(),
    // A gate's count moves with the attempts it counts: what a running attempt holds goes back
    // with its end, and a waiting attempt leaves its gate's waiters with its claim or cancel.
    ...(current.status === 'running' && set.status !== 'running'
      ? { release: current.gates ?? [] }
      : {}),
    ...(current.status === 'queued' && set.status !== 'queued'
      ? { unpark: current.parked ?? null }
      : {}),
    ...(current.gates?.length || current.parked ? { from: current } : {}),
  };
}

export function queueTask(ti: TaskInstanceState, at: Date): TaskTransition {
  return transition(
    'queue',
    ti,
    {
      status: 'queued',
      attempt: ti.attempt + 1,
      leaseToken: null,
      retryAt: null,
      // A new attempt: the last one's times and error are its history's, not this one's.
      startTime: null,
      endTime: null,
      error: null,
    },
    at,
  );
}

export function claimTask(
  ti: TaskInstanceState,
  leaseToken: string,
  leaseSeconds: number,
  at: Date,
): TaskTransition {
  return transition(
    'claim',
    ti,
    {
      status: 'running',
      attempt: ti.attempt,
      leaseToken,
      leaseExpiresAt: new Date(at.getTime() + leaseSeconds * 1000).toISOString(),
      startTime: at.toISOString(),
      endTime: null,
      // An earlier attempt's error is its own (the attempt history keeps it), not this one's.
      error: null,
      deferred: null,
      output: null,
      outputKey: null,
    },
    at,
  );
}

export function heartbeatTask(
  ti: TaskInstanceState,
  leaseSeconds: number,
  at: Date,
): TaskTransition {
  return leaseUntil(ti, new Date(at.getTime() + leaseSeconds * 1000).toISOString(), at);
}

/** A running attempt's lease, written as expiring at `leaseExpiresAt` (see heartbeatTask). */
function leaseUntil(
  ti: TaskInstanceState,
  leaseExpiresAt: string | null,
  at: Date,
): TaskTransition {
  return transition(
    'heartbeat',
    ti,
    { status: 'running', attempt: ti.attempt, leaseToken: ti.leaseToken, leaseExpiresAt },
    at,
  );
}

/**
 * Puts a running attempt in the lease index under the lease it has, as a heartbeat would
 * without renewing it: for a task a worker continued into (in no index until its first
 * heartbeat), once the return of that worker's message finds it, or something moves on what
 * that return would walk. Refused once it is a continuation no longer (a heartbeat indexed it).
 */
export function indexLeaseTask(
  ti: TaskInstanceState & { readonly leaseExpiresAt: string | null },
  at: Date,
): TaskTransition {
  return { ...leaseUntil(ti, ti.leaseExpiresAt, at), whileContinued: true };
}

/**
 * One attempt of a task, as its history shows it (`GET .../tasks/{task_id}`). A task keeps the
 * summaries of its attempts that did not succeed, and of attempts a clear set aside; the
 * current attempt is the task instance itself. A success costs no history write.
 */
export interface AttemptSummary {
  readonly attempt: number;
  readonly status: TaskStatus;
  readonly startTime: string | null;
  readonly endTime: string | null;
  readonly error?: string | null;
}

/**
 * A task's attempts, oldest first: its kept summaries, and its current attempt as it stands (a
 * later word on an attempt replaces an earlier one). None before its first attempt.
 */
export function attemptHistory(
  ti: TaskInstanceState & {
    readonly startTime: string | null;
    readonly endTime: string | null;
    readonly error: string | null;
    readonly retryBase?: number;
    readonly history?: readonly AttemptSummary[];
  },
): AttemptSummary[] {
  const byAttempt = new Map<number, AttemptSummary>();
  for (const h of ti.history ?? []) byAttempt.set(h.attempt, h);
  // Only a try of its own since its last clear: a task resolved without running (skipped,
  // upstream_failed) keeps the attempt number of the try before the clear, which is history's.
  if (hasTriedSinceClear(ti) && ti.status !== 'pending') {
    byAttempt.set(ti.attempt, {
      attempt: ti.attempt,
      status: ti.status,
      startTime: ti.startTime,
      endTime: ti.endTime,
      ...(ti.error ? { error: ti.error } : {}),
    });
  }
  return [...byAttempt.values()].sort((a, b) => a.attempt - b.attempt);
}

/**
 * An attempt as its history keeps it: its error shorter than the task instance's, since every
 * later write of the item pays for it.
 */
export function attemptSummary(
  ti: {
    readonly attempt: number;
    readonly startTime?: string | null;
    readonly error?: string | null;
  },
  status: TaskStatus,
  endTime: string | null,
): AttemptSummary {
  const e = ti.error;
  return {
    attempt: ti.attempt,
    status,
    startTime: ti.startTime ?? null,
    endTime,
    ...(e
      ? {
          error: e.length <= HISTORY_ERROR_CHARS ? e : `${e.slice(0, HISTORY_ERROR_CHARS - 1)}…`,
        }
      : {}),
  };
}

/** Whether the task instance's attempt number is a try made since it was last cleared. */
export function hasTriedSinceClear(ti: { readonly attempt: number; readonly retryBase?: number }) {
  return ti.attempt > (ti.retryBase ?? 0);
}

/** The most attempts a task's history keeps through clears; retries add at most 100 more. */
export const MAX_HISTORY = 100;

/**
 * The end of a running attempt. A failure with attempts left becomes `up_for_retry` at `retryAt`
 * (see core/retry); otherwise it is final. A failure is kept in the task's attempt history.
 */
export function finishTask(
  ti: TaskInstanceState & { readonly startTime?: string | null },
  outcome:
    | {
        ok: true;
        output?: StoredOutput;
        /** A small log kept with the outcome (see TaskTransition). */
        log?: string;
        /** The writer advances readiness itself (see TaskTransition). */
        advanceInline?: boolean;
      }
    | { ok: false; error: string; retryAt: Date | null },
  at: Date,
): TaskTransition {
  const end = { leaseToken: null, leaseExpiresAt: null, attempt: ti.attempt, deferred: null };
  if (outcome.ok) {
    return transition(
      'finish',
      ti,
      {
        ...end,
        status: 'success',
        endTime: at.toISOString(),
        output: outcome.output?.inline ?? null,
        outputKey: outcome.output?.key ?? null,
        ...(outcome.log !== undefined ? { log: outcome.log, logAttempt: ti.attempt } : {}),
        ...(outcome.advanceInline ? { advanceInline: true } : {}),
      },
      at,
    );
  }
  const error = boundError(outcome.error);
  const past = (status: TaskStatus) => attemptSummary({ ...ti, error }, status, at.toISOString());
  if (outcome.retryAt) {
    return transition(
      'finish',
      ti,
      {
        ...end,
        status: 'up_for_retry',
        retryAt: outcome.retryAt.toISOString(),
        error,
        past: past('up_for_retry'),
      },
      at,
    );
  }
  return transition(
    'finish',
    ti,
    { ...end, status: 'failed', error, endTime: at.toISOString(), past: past('failed') },
    at,
  );
}

/** Where a successful attempt's output is kept: inline JSON text, or a blob's key. */
export type StoredOutput =
  | { readonly inline: string; readonly key?: undefined }
  | {
      readonly key: string;
      readonly inline?: undefined;
    };

/**
 * A deferred attempt's external work has started: the attempt is fenced by a lease token (a new
 * one from the worker, kept by the reaper's later checks) and holds no worker; `checkAt` is when the reaper looks at the work if no
 * completion event came first.
 */
export function deferTask(
  ti: TaskInstanceState,
  deferred: string,
  checkAt: Date,
  at: Date,
  /** A new fencing token, when the worker hands the attempt over (the reaper keeps it). */
  leaseToken: string | null = ti.leaseToken,
): TaskTransition {
  return transition(
    'defer',
    ti,
    {
      status: 'running',
      attempt: ti.attempt,
      leaseToken,
      leaseExpiresAt: checkAt.toISOString(),
      deferred,
    },
    at,
  );
}

/** Back to the queue with the same attempt, for another worker to claim (a worker stopping). */
export function releaseTask(ti: TaskInstanceState, at: Date): TaskTransition {
  return transition(
    'release',
    ti,
    {
      status: 'queued',
      attempt: ti.attempt,
      leaseToken: null,
      leaseExpiresAt: null,
      startTime: null,
    },
    at,
  );
}

/** Readiness resolves a task that can never run; readiness goes on from it at once, inline. */
export function resolveTask(
  ti: TaskInstanceState,
  status: 'skipped' | 'upstream_failed',
  at: Date,
): TaskTransition {
  return transition(
    'resolve',
    ti,
    {
      status,
      attempt: ti.attempt,
      leaseToken: null,
      endTime: at.toISOString(),
      advanceInline: true,
    },
    at,
  );
}

export function cancelTask(ti: TaskInstanceState, at: Date): TaskTransition {
  return transition(
    'cancel',
    ti,
    {
      status: 'cancelled',
      attempt: ti.attempt,
      leaseToken: null,
      leaseExpiresAt: null,
      retryAt: null,
      endTime: at.toISOString(),
      deferred: null,
    },
    at,
  );
}

/** Back to `pending`, keeping the attempt count, so the next queue gives a new attempt number. */
export function clearTask(ti: TaskInstanceState, at: Date): TaskTransition {
  return transition(
    'clear',
    ti,
    {
      status: 'pending',
      attempt: ti.attempt,
      leaseToken: null,
      leaseExpiresAt: null,
      retryAt: null,
      startTime: null,
      endTime: null,
      error: null,
      retryBase: ti.attempt,
      deferred: null,
      output: null,
      outputKey: null,
    },
    at,
  );
}

/**
 * A mapped task's attempt gave `length` items (core/mapping): with some, it stays running, its
 * lease given up (its instances hold their own), until they have all finished; with none, it is
 * skipped, its output the empty list.
 */
export function mapTask(
  ti: TaskInstanceState,
  length: number,
  shards: number,
  log: string | undefined,
  at: Date,
): TaskTransition {
  const logged = log !== undefined ? { log, logAttempt: ti.attempt } : {};
  if (length === 0) {
    return transition(
      'map',
      ti,
      {
        status: 'skipped',
        attempt: ti.attempt,
        leaseToken: null,
        leaseExpiresAt: null,
        endTime: at.toISOString(),
        output: '[]',
        ...logged,
      },
      at,
    );
  }
  return transition(
    'map',
    ti,
    {
      status: 'running',
      attempt: ti.attempt,
      leaseToken: null,
      leaseExpiresAt: null,
      mapped: { length, shards },
      ...logged,
    },
    at,
  );
}

/**
 * A mapped task ends once all its instances have: `success` when they all succeeded, `failed`
 * otherwise (core/mapping mappedOutcome), their counts kept for its downstream tasks.
 */
export function finishMapped(
  ti: TaskInstanceState & { readonly mapEpoch?: number },
  status: 'success' | 'failed',
  counts: UpstreamCounts,
  at: Date,
): TaskTransition {
  return {
    ...mappedEnd(ti, status, counts, at),
    mapEpoch: ti.mapEpoch ?? 0,
  };
}

function mappedEnd(
  ti: TaskInstanceState,
  status: 'success' | 'failed',
  counts: UpstreamCounts,
  at: Date,
): TaskTransition {
  return transition(
    'finish',
    ti,
    {
      status,
      attempt: ti.attempt,
      leaseToken: null,
      endTime: at.toISOString(),
      mapCounts: counts,
      ...(status === 'failed'
        ? { error: `${counts.failed + counts.upstreamFailed} mapped instances did not succeed` }
        : {}),
    },
    at,
  );
}

/**
 * The run id is a pure function of the DAG run's identity, so that two deliveries of the same
 * scheduled tick, or two triggers with the same idempotency key, name the same run and the
 * store's conditional create keeps only one.
 */
export function scheduledRunId(logicalDate: Date): string {
  return `scheduled__${logicalDate.toISOString()}`;
}

export function manualRunId(key: string): string {
  return `manual__${key}`;
}
