/**
 * The ports through which the core's callers reach the outside world. `adapters/aws` implements
 * each one on an AWS service; the contract tests in `test/integration` hold every implementation
 * to the same behaviour.
 */
import type { Issue } from './errors.ts';
import type { RunProgress, UpstreamCounts } from './readiness/index.ts';
import type { RunStatus, TaskInstanceState, TaskStatus, TaskTransition } from './state/index.ts';

export interface Page<T> {
  readonly items: T[];
  /** Pass back to get the next page; absent on the last page. */
  readonly nextToken?: string;
}

export interface PageRequest {
  readonly limit?: number;
  readonly nextToken?: string | undefined;
}

export interface DagRecord {
  readonly dagId: string;
  readonly latestVersion: number;
  readonly paused: boolean;
  readonly deleted: boolean;
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
  readonly createdAt: string;
  readonly startTime: string | null;
  readonly endTime: string | null;
}

export interface NewRun {
  readonly dagId: string;
  readonly runId: string;
  readonly dagVersion: number;
  readonly kind: RunRecord['kind'];
  readonly logicalDate: Date;
  readonly conf: Readonly<Record<string, unknown>>;
  /** Every task of the DAG version, with how many upstream tasks it has. */
  readonly tasks: readonly { readonly taskId: string; readonly upstreamCount: number }[];
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
  /** Finished upstream tasks by outcome (core/readiness). */
  readonly counts: UpstreamCounts;
  readonly queuedAt: string | null;
  readonly leaseExpiresAt: string | null;
  readonly retryAt: string | null;
  readonly startTime: string | null;
  readonly endTime: string | null;
  readonly error: string | null;
}

/** The single source of truth. Every state change is one conditional write. */
export interface StateStore {
  /** Stores a new version unless the latest has the same sha256, in which case returns it. */
  putDagVersion(input: NewDagVersion): Promise<{ version: DagVersionRecord; created: boolean }>;
  getDag(dagId: string): Promise<DagRecord | undefined>;
  listDags(page?: PageRequest): Promise<Page<DagRecord>>;
  listDagVersions(dagId: string, page?: PageRequest): Promise<Page<DagVersionRecord>>;
  getDagVersion(dagId: string, version: number): Promise<DagVersionRecord | undefined>;
  setDagPaused(dagId: string, paused: boolean, at: Date): Promise<DagRecord>;
  markDagDeleted(dagId: string, at: Date): Promise<void>;

  putImportError(record: ImportErrorRecord): Promise<void>;
  clearImportError(key: string): Promise<void>;
  listImportErrors(page?: PageRequest): Promise<Page<ImportErrorRecord>>;

  /**
   * Creates the run and its task instances, all `pending`, once: a second call with the same
   * dagId and runId returns the existing run with `created: false` and writes nothing.
   */
  createRun(input: NewRun): Promise<{ run: RunRecord; created: boolean }>;
  getRun(dagId: string, runId: string): Promise<RunRecord | undefined>;
  /** Newest logical date first. */
  listRuns(dagId: string, page?: PageRequest): Promise<Page<RunRecord>>;
  transitionRun(
    dagId: string,
    runId: string,
    from: readonly RunStatus[],
    to: RunStatus,
    at: Date,
  ): Promise<RunRecord>;

  /**
   * Takes one of the DAG's `max` active-run slots for the run; true if it holds one (now or
   * already). Written once per run start, never per task.
   */
  acquireRunSlot(dagId: string, runId: string, max: number): Promise<boolean>;
  /** Gives the run's slot back (once it has ended). Harmless to repeat. */
  releaseRunSlot(dagId: string, runId: string): Promise<void>;
  /** The DAG's runs still waiting in `queued`, oldest logical date first. */
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
  ): Promise<{ task: TaskInstanceRecord; counted: boolean }>;
  /**
   * Counts a task as finished in the run's progress, once per task, and returns the run's
   * progress when it may be complete (otherwise `undefined`, which saves reading it).
   * `taskCount` is the run's number of tasks, as given to createRun.
   */
  recordTaskFinished(
    key: TaskKey,
    succeeded: boolean,
    taskCount: number,
  ): Promise<RunProgress | undefined>;

  /**
   * Undoes recordTaskFinished for a task being cleared, once: `succeeded` is whether it had
   * counted as a success.
   */
  unrecordTaskFinished(key: TaskKey, succeeded: boolean, taskCount: number): Promise<void>;
  /**
   * Replaces a pending task's readiness counts with those of its upstream tasks as they stand
   * (after a clear), and which upstream tasks they count.
   */
  resetUpstreamCounts(
    key: TaskKey,
    counts: UpstreamCounts,
    counted: readonly string[],
  ): Promise<TaskInstanceRecord>;

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
}

export interface TaskDispatcher {
  /** Sends each message once per attempt; resending the same attempt is harmless. */
  dispatch(messages: readonly TaskMessage[]): Promise<void>;
}

export interface AttemptRef extends TaskKey {
  readonly attempt: number;
}

export interface BlobStore {
  putLog(ref: AttemptRef, text: string): Promise<string>;
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

export interface RetryTimers {
  /** Delivers the timer back (to the retrier) at `retryAt`, give or take a second. */
  schedule(timer: RetryTimer, now: Date): Promise<void>;
}
