/**
 * The ports through which the core's callers reach the outside world. `adapters/aws` implements
 * each one on an AWS service; the contract tests in `test/integration` hold every implementation
 * to the same behaviour.
 */
import type { Issue } from './errors.ts';
import type { AirlessEvent } from './events.ts';
import type { Gate, GateState } from './pools/index.ts';
import type { RunProgress, UpstreamCounts } from './readiness/index.ts';
import type {
  AttemptSummary,
  RunStatus,
  TaskInstanceState,
  TaskStatus,
  TaskTransition,
} from './state/index.ts';

export interface Page<T> {
  readonly items: T[];
  /** Pass back to get the next page; absent on the last page. */
  readonly nextToken?: string;
}

export interface PageRequest {
  readonly limit?: number;
  readonly nextToken?: string | undefined;
}

/**
 * A backfill (DESIGN.md section 11): the runs of a DAG's scheduled times in `[from, to]`, created
 * a chunk at a time from `cursor` on; `cursor` is null once every run is created.
 */
export interface BackfillRecord {
  readonly dagId: string;
  readonly backfillId: string;
  readonly from: string;
  readonly to: string;
  /** How many scheduled times the range holds: the backfill's runs. */
  readonly runs: number;
  /** How many of them it created; the others existed already. */
  readonly created: number;
  /** The next scheduled time to create a run for, at or after it; null when done creating. */
  readonly cursor: string | null;
  readonly createdAt: string;
  /** The schedule whose times it creates, as it was when asked for: a later change of the DAG's schedule does not move them. */
  readonly cron: string;
  readonly timezone: string;
}

export interface DagRecord {
  readonly dagId: string;
  readonly latestVersion: number;
  readonly paused: boolean;
  readonly deleted: boolean;
  /**
   * How many times the DAG was created: 1 for a new DAG, one more each time a deleted DAG is
   * created again. Idempotency keys are scoped to it, so a key used before a delete names a
   * new run after it.
   */
  readonly incarnation: number;
  /** The DAG file (under `dags/`) the DAG came from, when it was uploaded as one. */
  readonly fileKey?: string;
  /** The runs holding one of its `maxActiveRuns` slots. */
  readonly activeRuns: readonly string[];
  readonly description?: string;
  readonly owner?: string;
  /** The compiled schedule of the latest version, if it has one. */
  readonly schedule?: {
    readonly cron: string;
    readonly timezone: string;
    readonly expression: string;
  };
  readonly updatedAt: string;
}

export interface DagVersionRecord {
  readonly dagId: string;
  readonly version: number;
  /** Where the validated DAG document of this version is stored (see BlobStore). */
  readonly sourceKey: string;
  readonly sha256: string;
  readonly taskCount: number;
  readonly createdAt: string;
}

export interface NewDagVersion {
  readonly dagId: string;
  readonly sourceKey: string;
  readonly sha256: string;
  readonly taskCount: number;
  /** The DAG file it was uploaded as; another file may not take the same dagId. */
  readonly fileKey?: string | undefined;
  readonly description?: string | undefined;
  readonly owner?: string | undefined;
  readonly schedule?: DagRecord['schedule'] | undefined;
  readonly at: Date;
}

export interface ImportErrorRecord {
  /** The object key of the DAG file that failed. */
  readonly key: string;
  readonly dagId?: string;
  readonly errors: readonly Issue[];
  readonly time: string;
}

export interface RunRecord {
  readonly dagId: string;
  readonly runId: string;
  readonly dagVersion: number;
  readonly kind: 'scheduled' | 'manual';
  readonly status: RunStatus;
  readonly logicalDate: string;
  readonly conf: Readonly<Record<string, unknown>>;
  readonly taskCount: number;
  /**
   * False while a large run's task instances are still being written (off the request path,
   * resumable: see StateStore.writeRunTasks). A run starts only once they all exist.
   */
  readonly tasksWritten: boolean;
  readonly createdAt: string;
  readonly startTime: string | null;
  readonly endTime: string | null;
  /** Why the run failed, when it failed for a reason of its own. */
  readonly error?: string;
}

export interface NewRun {
  readonly dagId: string;
  readonly runId: string;
  readonly dagVersion: number;
  readonly kind: RunRecord['kind'];
  readonly logicalDate: Date;
  readonly conf: Readonly<Record<string, unknown>>;
  /** Every task of the DAG version, with how many upstream tasks it has. */
  readonly tasks: readonly {
    readonly taskId: string;
    readonly upstreamCount: number;
    /** Its end is not counted in the run's progress (core/readiness uncountedTasks). */
    readonly uncounted?: boolean;
  }[];
  readonly at: Date;
}

export interface TaskKey {
  readonly dagId: string;
  readonly runId: string;
  readonly taskId: string;
}

export interface TaskInstanceRecord extends TaskKey, TaskInstanceState {
  /** The DAG version its run was created from. */
  readonly dagVersion: number;
  readonly upstreamCount: number;
  /** The attempt count at the last clear (core/state triesSoFar). */
  readonly retryBase: number;
  /**
   * How many times the task was cleared. Each generation ends in a terminal status at most
   * once, so `taskId#generation` names one outcome: events of an older generation (a clear
   * overtook them) are recognized and change nothing.
   */
  readonly generation: number;
  /** Finished upstream tasks by outcome (core/readiness). */
  readonly counts: UpstreamCounts;
  readonly queuedAt: string | null;
  readonly leaseExpiresAt: string | null;
  readonly retryAt: string | null;
  readonly startTime: string | null;
  readonly endTime: string | null;
  readonly error: string | null;
  /** A deferred attempt's external work, JSON (app/deferred.ts), while the attempt runs. */
  readonly deferred: string | null;
  /** The output of the successful attempt: JSON text kept inline, or the key of its blob. */
  readonly output: string | null;
  readonly outputKey: string | null;
  /** Attempts that did not succeed, and attempts a clear set aside (core/state attemptHistory). */
  readonly history?: readonly AttemptSummary[];
  /** A small log kept inline (app/logs.ts), of attempt `logAttempt`; absent when none. */
  readonly log?: string | null;
  readonly logAttempt?: number | null;
  /** The last write was an outcome whose writer advances readiness itself (core/state). */
  /**
   * Its end is not counted in the run's progress unless it fails or a clear reopened it (core/
   * readiness progressEntry). Set at the run's creation; absent on runs created before.
   */
  readonly uncounted?: boolean;
  readonly advanceInline?: boolean;
  /**
   * Claimed by the write that queued it, for the worker that ran its upstream task (a
   * continuation): in no lease index until its next write, a heartbeat or its outcome. Its
   * repair, if that worker dies first, is the return of the worker's message (app/advance.ts).
   */
  readonly continued?: boolean;
  /**
   * A continuation's claim written in the same request as a success of its one upstream task, in
   * which neither write waits for the other (app/tasks.ts): the attempt of that upstream task. A
   * claim only if that attempt's success landed. Its worker runs it once it knows; any other
   * writer that finds it so (a walk, the reaper) settles it first by that attempt
   * (app/leases.ts). Ended by the task's next transition, except the one that puts it in the
   * lease index.
   */
  readonly tentative?: number;
  /**
   * Dynamic mapping (core/mapping). On a mapped task's own instance: the attempt that expanded
   * it, how many instances it has, over how many count shards, and once it has ended, their
   * outcomes. On an instance: the mapped task's attempt that created it.
   */
  readonly mapAttempt?: number;
  readonly mapLength?: number;
  readonly mapShards?: number;
  readonly mapCounts?: UpstreamCounts;
  /** On a mapped task's own instance: how many count shards of `mapAttempt` are complete. */
  readonly mapDone?: number;
  /** On an instance: its item as JSON, when small enough to keep (core/mapping MAX_INLINE_ITEM_BYTES). */
  readonly mapItem?: string;
  /**
   * On a mapped task's own instance: how many times one of its instances was cleared alone. Its
   * end is written only if this has not moved since its counts were read.
   */
  readonly mapEpoch?: number;
}

/** A pool (DESIGN.md section 11) as listed: `used` slots held by running attempts, `queued` waiting. */
export interface PoolRecord {
  readonly pool: string;
  /** null: tasks wait for this pool, but it does not exist (they start once it is created). */
  readonly slots: number | null;
  readonly used: number;
  readonly queued: number;
}

/** A gate (core/pools) with its first waiters, oldest first. */
export interface GateView extends GateState {
  readonly waiters: readonly {
    /** Where it waits (core/pools waiterOf), as its task instance's `parked` says. */
    readonly waiter: string;
    readonly message: TaskMessage;
  }[];
}

/** The single source of truth. Every state change is one conditional write. */
export interface StateStore {
  /**
   * Stores a new version unless the latest has the same sha256, in which case returns it.
   * Throws ConflictError when another DAG file already declares the dagId.
   */
  putDagVersion(input: NewDagVersion): Promise<{ version: DagVersionRecord; created: boolean }>;
  getDag(dagId: string): Promise<DagRecord | undefined>;
  listDags(page?: PageRequest): Promise<Page<DagRecord>>;
  listDagVersions(dagId: string, page?: PageRequest): Promise<Page<DagVersionRecord>>;
  getDagVersion(dagId: string, version: number): Promise<DagVersionRecord | undefined>;
  setDagPaused(dagId: string, paused: boolean, at: Date): Promise<DagRecord>;
  markDagDeleted(dagId: string, at: Date): Promise<void>;
  /** The dagId last registered from a DAG file, deleted or not. */
  dagOfFile(fileKey: string): Promise<string | undefined>;

  putImportError(record: ImportErrorRecord): Promise<void>;
  clearImportError(key: string): Promise<void>;
  listImportErrors(page?: PageRequest): Promise<Page<ImportErrorRecord>>;

  /**
   * Creates the run once: a second call with the same dagId and runId returns the existing run
   * with `created: false` and writes nothing. A small run (its items fit one transaction, about
   * 100) is written whole, task instances (`pending`) included, before this returns
   * `tasksWritten: true`; its stored flag may stay unset until the run starts or
   * confirmRunTasks sets it, and a creator that died before writing every item leaves it to
   * writeRunTasks after the creation lease. A large run is written as the run item alone, with
   * `tasksWritten: false`: writeRunTasks finishes it.
   */
  createRun(input: NewRun): Promise<{ run: RunRecord; created: boolean }>;
  /**
   * Sets the stored `tasksWritten` of a small run whose creator wrote its tasks but has not
   * started it (no slot, a paused DAG, a repeated trigger). With `verify`, only if every item
   * is there: for a caller that did not write them. Answers whether the flag is set.
   */
  confirmRunTasks(dagId: string, runId: string, verify: boolean): Promise<boolean>;
  /**
   * Writes the task instances of a run created with `tasksWritten: false`, then sets the flag.
   * Resumable and safe to repeat: the writer holds a creation lease of `leaseSeconds`, longer
   * than any writer can live, so a writer that died is replaced and a live one is never
   * overwritten. Answers `written` once the flag is set (now or before), `busy` when another
   * writer holds the lease.
   */
  writeRunTasks(
    input: NewRun,
    lease: { readonly token: string; readonly seconds: number; readonly now: Date },
  ): Promise<'written' | 'busy'>;
  /** Runs whose task instances are still unwritten, created before `before`. */
  findUnwrittenRuns(before: Date, limit: number): Promise<RunRecord[]>;
  /** Runs waiting `queued` since before `before`, across every DAG (the reaper's view). */
  findQueuedRunsBefore(before: Date, limit: number): Promise<RunRecord[]>;
  getRun(dagId: string, runId: string): Promise<RunRecord | undefined>;
  /** Newest logical date first; only those with a logical date in `[from, to]` if given. */
  listRuns(
    dagId: string,
    page?: PageRequest,
    range?: { readonly from: string; readonly to: string },
  ): Promise<Page<RunRecord>>;
  /** Creates a backfill; ConflictError if one has its id. */
  putBackfill(backfill: BackfillRecord): Promise<void>;
  getBackfill(dagId: string, backfillId: string): Promise<BackfillRecord | undefined>;
  /**
   * Moves a backfill's cursor on from `expected` (ConflictError if it moved meanwhile: another
   * worker on the same backfill), adding the runs it created; a null cursor ends its creating.
   */
  advanceBackfill(
    dagId: string,
    backfillId: string,
    expected: string,
    cursor: string | null,
    created: number,
  ): Promise<BackfillRecord>;
  /** Backfills still creating runs, oldest first, across every DAG (the reaper's view). */
  listCreatingBackfills(limit: number): Promise<BackfillRecord[]>;
  transitionRun(
    dagId: string,
    runId: string,
    from: readonly RunStatus[],
    to: RunStatus,
    at: Date,
    options?: {
      /** Why a run failed when no task's outcome says so (it could not be processed). */
      readonly reason?: string;
      /** Only if no clear has touched the run since its progress was read. */
      readonly clears?: number;
    },
  ): Promise<RunRecord>;

  /**
   * Takes one of the DAG's `max` active-run slots for the run; true if it holds one (now or
   * already). Refused while the DAG is paused or deleted: its runs wait `queued`. Written once
   * per run start, never per task.
   */
  acquireRunSlot(dagId: string, runId: string, max: number): Promise<boolean>;
  /**
   * Gives the run's slot back once it has ended (or does not exist). A run that is live again
   * (a clear reopened it after its end was read) keeps its slot. Harmless to repeat.
   */
  releaseRunSlot(dagId: string, runId: string): Promise<void>;
  /**
   * The DAG's runs waiting in `queued` (their task instances written), oldest logical date
   * first, from a sparse index of queued runs: the cost does not grow with the DAG's history.
   */
  listQueuedRuns(dagId: string, limit: number): Promise<RunRecord[]>;

  listTaskInstances(dagId: string, runId: string): Promise<TaskInstanceRecord[]>;
  getTaskInstance(key: TaskKey): Promise<TaskInstanceRecord | undefined>;
  /** Applies a core/state transition; throws ConflictError when the item no longer matches. */
  transitionTask(key: TaskKey, transition: TaskTransition): Promise<TaskInstanceRecord>;
  /**
   * Adds a finished upstream task's outcome to a downstream task's counts, once per upstream
   * task: `counted` is false when it was already added (a duplicate event).
   */
  recordUpstreamOutcome(
    downstream: TaskKey,
    upstreamTaskId: string,
    status: TaskStatus,
    /** The upstream task's generation: an outcome counts once per task and generation. */
    generation: number,
    options?: {
      /**
       * The downstream task has this one upstream task and its rule queues it on this outcome:
       * in the same write, move it `pending → queued` with its next attempt, as queueTask would
       * (one write per chain edge instead of two). Only if it is `pending` with nothing counted
       * yet; otherwise the outcome is only counted, and the caller decides as usual.
       */
      readonly queueAt?: Date;
      /**
       * With `queueAt`: the caller runs the task itself (a worker continuing a chain), so the
       * same write also claims it, `pending → running` under this lease, as claimTask would: one
       * write where queuing and then claiming take two. The claim's start time is `queueAt`.
       */
      readonly claim?: {
        readonly leaseToken: string;
        readonly leaseExpiresAt: string;
        /**
         * The claim is tentative (TaskInstanceRecord `tentative`): the attempt of the upstream
         * success it goes with; only with a success. Then the outcome counts only with the
         * claim: where the task cannot be queued and claimed so, nothing is written, and
         * `counted` is false.
         */
        readonly tentative?: number;
      };
      /**
       * The upstream task is a mapped task that has ended (core/mapping): its downstream task
       * counts each instance's outcome, `counts`, in place of one for the task, and has
       * `extraUpstream` more upstream tasks (its instances but one). `status` is ignored.
       */
      readonly weight?: { readonly counts: UpstreamCounts; readonly extraUpstream: number };
    },
  ): Promise<{ task: TaskInstanceRecord; counted: boolean }>;
  /**
   * Settles a tentative claim (TaskInstanceRecord `tentative`), only while the task is running
   * under it, with this lease token. `confirm`: the claim stands, tentative no longer.
   * `withdraw`: the write that counted its one upstream success, queued and claimed it is
   * undone: `pending` again, with nothing counted and its attempt as before. ConflictError with
   * the task as it is (NotFoundError with none) once it is not so.
   */
  settleTentative(
    key: TaskKey,
    leaseToken: string,
    how: 'confirm' | 'withdraw',
    at: Date,
  ): Promise<TaskInstanceRecord>;
  /**
   * Counts a task as finished in the run's progress, once per task, and returns the run's
   * progress when it may be complete (otherwise `undefined`, which saves reading it).
   * `taskCount` is the run's number of tasks, as given to createRun.
   */
  recordTaskFinished(
    key: TaskKey,
    succeeded: boolean,
    taskCount: number,
    generation: number,
    /** An end beyond the total set at creation (progressEntry `extra`): raises the total too. */
    extra?: boolean,
  ): Promise<(RunProgress & { readonly clears: number }) | undefined>;

  /**
   * The `taskId#generation` of every outcome counted in the run's progress (recordTaskFinished):
   * those whose readiness was advanced to the end.
   */
  finishedTasks(dagId: string, runId: string): Promise<ReadonlySet<string>>;

  /**
   * Applies a clear in one atomic write (see ClearPlan): every task change and the run's
   * reopening happen together, or, when anything moved on since it was read, none does
   * (ConflictError). A plan too large for one transaction is applied in several, run first.
   */
  clearTasks(plan: ClearPlan): Promise<void>;

  /**
   * Counts one use of `name`, at most `max` uses in all: true when this use was counted. Fault
   * injection uses it so that a fault fires a bounded number of times across invocations.
   */
  countUse(name: string, max: number): Promise<boolean>;

  /**
   * Remembers which attempt the external work named `name` belongs to (app/deferred.ts): written
   * before the work starts, so that its completion event finds the attempt. Writing the same
   * name again is harmless (the name is a function of the attempt).
   */
  putDeferral(name: string, ref: AttemptRef): Promise<void>;
  getDeferral(name: string): Promise<AttemptRef | undefined>;

  /** Creates a pool or sets its slots; fewer than it uses lets them finish and starts none. */
  putPool(pool: string, slots: number, at: Date): Promise<PoolRecord>;
  /** Every pool, by name, with the slots in use and the attempts waiting. */
  listPools(): Promise<PoolRecord[]>;
  /**
   * Deletes a pool. NotFoundError when there is none; ConflictError while an attempt runs in it
   * or waits for it.
   */
  deletePool(pool: string): Promise<void>;
  /** A gate's slots and use, and its first `waiters` waiting attempts, read consistently. */
  gateView(gate: string, waiters: number): Promise<GateView>;
  /**
   * Up to `limit` gates with an attempt waiting since before `before` (the reaper's view, from
   * the deadline index: its cost grows with the gates that have waiters, not with the waiters
   * or the idle gates, and is bounded by `limit`). Each call goes on after the gate where the
   * last one stopped, wrapping round, so that every gate gets its turn.
   */
  findWaitingGates(before: Date, limit: number): Promise<string[]>;
  /**
   * Claims a queued attempt that passes gates (transition: core/state claimTask) and takes one
   * slot of each gate, in one atomic write: with no room in a gate (or a pool that does not
   * exist), nothing is written and the answer names that gate. ConflictError when the task
   * instance moved on.
   */
  claimGated(
    key: TaskKey,
    transition: TaskTransition,
    gates: readonly Gate[],
  ): Promise<{ readonly claimed: TaskInstanceRecord } | { readonly full: string }>;
  /**
   * Parks a queued attempt at a gate until a slot frees: in one atomic write, the task instance
   * leaves the reaper's index of queued attempts (it waits on purpose) and the gate's waiters
   * gain it, ordered by `since` (when it became ready). One waiting elsewhere moves. False when
   * the task instance moved on; parking where it waits already changes nothing.
   */
  parkTask(ti: TaskInstanceRecord, waiter: string, message: TaskMessage): Promise<boolean>;

  /**
   * Expands a mapped task's running attempt into `length` instances (core/mapping), each
   * `queued` with its first attempt (or, where an earlier expansion left one, its next), and
   * the count shards of this attempt, in batches. Safe to repeat for the same attempt: what this
   * attempt wrote already is left as it is. Answers the instances of this attempt as they stand.
   * `items` holds each item as JSON to keep with its instance, or null for one too large to keep.
   * `listed`: the mapped task's instances as the caller just read them (listMapInstances), to
   * save reading them again; only their attempts, generations, history and logs are used.
   */
  expandMap(
    parent: TaskInstanceRecord,
    items: readonly (string | null)[],
    at: Date,
    listed?: readonly TaskInstanceRecord[],
  ): Promise<TaskInstanceRecord[]>;
  /**
   * Counts a finished instance's outcome on its count shard, once per instance and generation:
   * true when the shard's instances have all finished (now or before).
   */
  recordMapOutcome(
    instance: TaskKey,
    mapIndex: number,
    mapAttempt: number,
    mapLength: number,
    status: TaskStatus,
    generation: number,
  ): Promise<boolean>;
  /**
   * Marks a complete count shard on the mapped task's own instance (harmless to repeat), and
   * answers that instance as it stands; undefined when it does not exist.
   */
  markMapShardDone(
    parent: TaskKey,
    mapAttempt: number,
    shard: number,
  ): Promise<TaskInstanceRecord | undefined>;
  /** The outcomes counted on the count shards of a mapped task's attempt, summed. */
  mapOutcomes(parent: TaskKey, mapAttempt: number): Promise<UpstreamCounts>;
  /** Every instance of a mapped task (of any expansion), by map index. */
  listMapInstances(parent: TaskKey): Promise<TaskInstanceRecord[]>;
  /** Whether an instance's outcome of this generation is counted on its shard (see ClearPlan). */
  mapOutcomeCounted(
    instance: TaskKey,
    mapIndex: number,
    mapAttempt: number,
    mapLength: number,
    generation: number,
  ): Promise<boolean>;

  /** Running attempts whose lease expired before `now`. */
  findExpiredLeases(now: Date, limit: number): Promise<TaskInstanceRecord[]>;
  /** Attempts queued before `before` and still not claimed. */
  findQueuedBefore(before: Date, limit: number): Promise<TaskInstanceRecord[]>;
  /** Attempts waiting to retry whose time has come. */
  findRetriesDue(now: Date, limit: number): Promise<TaskInstanceRecord[]>;
}

/** One task attempt to run. Small on purpose: the worker reads the rest from the store. */
export interface TaskMessage extends TaskKey {
  readonly attempt: number;
  readonly dagVersion: number;
  /** Which workers run it (DESIGN.md section 9); `lambda` when absent. */
  readonly executor?: 'lambda' | 'fargate';
  /**
   * Sent to wake an attempt waiting at a gate (core/pools): where it waits, and a new id for
   * each wake, so that the queue does not drop a second wake of the same attempt as a duplicate.
   */
  readonly waiter?: string;
  readonly wake?: string;
}

export interface TaskDispatcher {
  /** Sends each message once per attempt; resending the same attempt is harmless. */
  dispatch(messages: readonly TaskMessage[]): Promise<void>;
}

export interface AttemptRef extends TaskKey {
  readonly attempt: number;
}

export interface BlobStore {
  /**
   * Writes an attempt's log. With `ifAbsent`, only if it has none yet (the worker's own write,
   * which must not replace what the reaper wrote after taking the attempt back): answers
   * undefined, writing nothing, when one exists.
   */
  putLog(
    ref: AttemptRef,
    text: string,
    options?: { readonly ifAbsent?: boolean },
  ): Promise<string | undefined>;
  getLog(ref: AttemptRef): Promise<string | undefined>;
  /** A DAG file as users upload it, under `dags/`. */
  putDagFile(name: string, text: string): Promise<string>;
  getDagFile(key: string): Promise<string | undefined>;
  /**
   * The validated document of a DAG version, stored by content (its sha256) so that it can be
   * written before the store numbers the version. Returns its key.
   */
  putDagDocument(dagId: string, sha256: string, text: string): Promise<string>;
  getDagDocument(key: string): Promise<string | undefined>;
  putArtifact(ref: AttemptRef, name: string, body: string | Uint8Array): Promise<string>;
  getArtifact(ref: AttemptRef, name: string): Promise<Uint8Array | undefined>;
}

export interface ScheduleSpec {
  readonly dagId: string;
  /** EventBridge form, `cron(...)` (core/cron). */
  readonly expression: string;
  readonly timezone: string;
  readonly enabled: boolean;
}

export interface ScheduleRegistry {
  /** Creates the DAG's schedule, or replaces it. */
  put(spec: ScheduleSpec): Promise<void>;
  get(dagId: string): Promise<ScheduleSpec | undefined>;
  setEnabled(dagId: string, enabled: boolean): Promise<void>;
  /** Removes the schedule; removing one that does not exist is not an error. */
  delete(dagId: string): Promise<void>;
}

/** A retry waiting for its time: the attempt that failed, and when the next one may start. */
export interface RetryTimer extends TaskKey {
  readonly failedAttempt: number;
  readonly dagVersion: number;
  readonly retryAt: string;
}

/** Puts run events (core/events.ts) where users can route them: EventBridge on AWS. */
export interface EventPublisher {
  /** All of them, or throws: a retryable error when the bus throttled or refused some. */
  publish(events: readonly AirlessEvent[]): Promise<void>;
}

export interface RetryTimers {
  /** Delivers the timer back (to the retrier) at `retryAt`, give or take a second. */
  schedule(timer: RetryTimer, now: Date): Promise<void>;
}

/**
 * One clear, computed from what was read (app/clear.ts) and applied atomically by the store.
 * Progress stays exact without knowing whether a cleared task's old outcome was counted yet:
 * each cleared terminal task adds one to its shard's `total`, and one to `succeeded` unless its
 * old outcome was a success. Its old outcome, counted whenever its event is handled, then
 * balances as one extra successful task, and the new outcome is counted as the task's own.
 */
export interface ClearPlan {
  readonly dagId: string;
  readonly runId: string;
  readonly taskCount: number;
  /** The run's status as read: a finished run reopens to `running`. */
  readonly runStatus: RunStatus;
  /**
   * A finished run reopening: the DAG's maxActiveRuns. The run's slot, taken before the clear,
   * is held again in the same write, so that a release of its slot by its earlier end, landing
   * between that take and the reopening, cannot leave it running without one (and if another
   * run took the slot meanwhile, the clear is refused).
   */
  readonly slot?: number;
  readonly at: Date;
  readonly tasks: readonly {
    readonly taskId: string;
    /**
     * As read: the write is conditional on it, counts and generation included, so that an
     * outcome counted meanwhile, or another clear of the same read, refuses the whole clear.
     */
    readonly expect: {
      readonly status: TaskStatus;
      readonly attempt: number;
      readonly generation: number;
      readonly counts: UpstreamCounts;
    };
    /**
     * The cleared status: pending, or decided at once (queued with the next attempt, …); or
     * `running` for a mapped task reopened to wait for an instance cleared alone.
     */
    readonly status: 'pending' | 'queued' | 'skipped' | 'upstream_failed' | 'running';
    readonly attempt: number;
    /** Whether this is a new generation (the task had finished) or a pending task re-counted. */
    readonly newGeneration: boolean;
    readonly generation: number;
    readonly counts: UpstreamCounts;
    /**
     * Its upstream tasks as `counts` counts them: a mapped upstream task that has ended counts
     * each of its instances (core/mapping). Absent: left as it is.
     */
    readonly upstreamCount?: number;
    /** `upstreamId#generation` of outcomes already in `counts`, and of the cleared ones. */
    readonly counted: readonly string[];
    /** A cleared task that had finished: whether its old outcome was a success. */
    readonly oldSucceeded?: boolean;
    /**
     * A cleared task's attempt history with the attempt the clear sets aside, when it had not
     * kept it yet (a success, a cancel), its oldest entries dropped past MAX_HISTORY: written
     * as it is.
     */
    readonly history?: readonly AttemptSummary[];
  }[];
  /**
   * Clearing one instance of a mapped task (core/mapping): it is queued again with its next
   * attempt, its old outcome taken off its count shard (or, not counted yet, marked counted so
   * that its late event changes nothing), and its shard no longer done on the mapped task. The
   * mapped task is in `tasks` (reopened `running`, with its downstream tasks) when it had
   * ended, or `waiting` when it still waits for its instances.
   */
  readonly instance?: {
    readonly taskId: string;
    readonly parentTaskId: string;
    readonly expect: {
      readonly status: TaskStatus;
      readonly attempt: number;
      readonly generation: number;
    };
    readonly attempt: number;
    readonly generation: number;
    readonly history?: readonly AttemptSummary[];
    readonly mapAttempt: number;
    readonly mapLength: number;
    readonly mapIndex: number;
    /** Its old outcome as counted on its shard; undefined when it is not counted there yet. */
    readonly counted?: keyof UpstreamCounts;
    readonly waiting: boolean;
  };
}
