import { ConflictError, NotFoundError, ValidationError } from '../../core/errors.ts';
import {
  baseTaskId,
  instanceId,
  mapShard,
  mapShardCount,
  mapShardSize,
  parseInstance,
} from '../../core/mapping/index.ts';
import { type Gate, hasRoom, parseWaiter, poolGate, poolOfGate } from '../../core/pools/index.ts';
import type {
  AttemptRef,
  BackfillRecord,
  ClearPlan,
  DagRecord,
  DagVersionRecord,
  GateView,
  ImportErrorRecord,
  NewDagVersion,
  NewRun,
  Page,
  PageRequest,
  PoolRecord,
  RunRecord,
  StateStore,
  TaskInstanceRecord,
  TaskKey,
  TaskMessage,
} from '../../core/ports.ts';
import {
  addCounts,
  counterFor,
  NO_COUNTS,
  progressShard,
  progressShardCount,
  type RunProgress,
  type UpstreamCounts,
} from '../../core/readiness/index.ts';
import {
  type AttemptSummary,
  checkRunTransition,
  isTerminalRun,
  type RunStatus,
  type TaskStatus,
  type TaskTransition,
} from '../../core/state/index.ts';

/** As in the table: the deadline index is spread over 8 shards, and read shard by shard. */
const DUE_SHARDS = 8;
/** TransactWriteItems takes at most 100 actions: a larger clear is applied in several. */
const MAX_TRANSACTION_ITEMS = 100;

type DueKind = 'QUEUED' | 'LEASE' | 'RETRY';
const DUE_KIND: Partial<Record<TaskStatus, DueKind>> = {
  queued: 'QUEUED',
  running: 'LEASE',
  up_for_retry: 'RETRY',
};

interface DagState {
  dagId: string;
  latestVersion: number;
  latestSha256: string | undefined;
  paused: boolean;
  deleted: boolean;
  incarnation: number;
  fileKey: string | undefined;
  activeRuns: Set<string>;
  description: string | undefined;
  owner: string | undefined;
  schedule: DagRecord['schedule'] | undefined;
  updatedAt: string;
}

interface RunState {
  readonly dagId: string;
  readonly runId: string;
  readonly dagVersion: number;
  readonly kind: RunRecord['kind'];
  readonly logicalDate: string;
  /** As JSON text, as the table keeps it: what comes back is what JSON round-trips. */
  readonly confJson: string;
  readonly taskCount: number;
  readonly createdAt: string;
  status: RunStatus;
  tasksWritten: boolean;
  startTime: string | null;
  endTime: string | null;
  error: string | undefined;
  clears: number;
  /** The writer of a large run's task instances, and until when it holds them. */
  creator: { token: string; until: string } | undefined;
  /** The reaper's index of waiting runs (`DUE#CREATE` / `DUE#RUNQ`, gsi2 in the table). */
  due: { kind: 'CREATE' | 'RUNQ'; since: string } | undefined;
  /** The DAG's queue of waiting runs (gsi3 in the table). */
  inQueue: boolean;
}

interface TaskState {
  readonly dagId: string;
  readonly runId: string;
  readonly taskId: string;
  readonly dagVersion: number;
  upstreamCount: number;
  status: TaskStatus;
  attempt: number;
  leaseToken: string | null;
  retryBase: number;
  generation: number;
  counts: UpstreamCounts;
  /** `upstreamId#generation` of every outcome already in `counts`. */
  counted: Set<string>;
  queuedAt: string | null;
  leaseExpiresAt: string | null;
  retryAt: string | null;
  startTime: string | null;
  endTime: string | null;
  error: string | null;
  deferred: string | null;
  output: string | null;
  outputKey: string | null;
  log?: string | null;
  logAttempt?: number | null;
  advanceInline?: boolean;
  continued?: boolean;
  tentative?: number | undefined;
  uncounted?: boolean;
  history?: AttemptSummary[];
  /** The deadline index (gsi2 in the table): present exactly while the task waits for one. */
  due: { kind: DueKind; at: string } | undefined;
  /** The gates whose slots the running attempt holds (core/pools). */
  gates?: string[] | null;
  /** Where the queued attempt waits for a slot. */
  parked?: string | null;
  /** Dynamic mapping (see TaskInstanceRecord). */
  mapAttempt?: number;
  mapLength?: number;
  mapShards?: number;
  mapCounts?: UpstreamCounts;
  /** `{mapAttempt}#{shard}` of each complete count shard. */
  mapDone?: Set<string>;
  mapItem?: string;
  mapEpoch?: number;
}

/** One count shard of a mapped task's attempt (core/mapping). */
interface MapShard {
  total: number;
  /** Outcomes counted, less those a clear took off (their entries stay in `counted`). */
  finished: number;
  counts: UpstreamCounts;
  counted: Set<string>;
}

interface GateCount {
  /** A pool's slots, or a DAG cap's as its last claim said; null for a pool not defined. */
  slots: number | null;
  used: number;
}

interface ProgressShard {
  total: number;
  finished: number;
  succeeded: number;
  /** `taskId#generation` of every outcome counted. */
  done: Set<string>;
}

const runKey = (dagId: string, runId: string) => `${dagId}#${runId}`;
const notFound = (what: string) => new NotFoundError(`${what}: not found`);
const conflict = (what: string, current?: unknown) =>
  new ConflictError(`${what}: the item changed first`, current);

function toDag(d: DagState): DagRecord {
  return {
    dagId: d.dagId,
    latestVersion: d.latestVersion,
    paused: d.paused,
    deleted: d.deleted,
    incarnation: d.incarnation,
    ...(d.fileKey !== undefined ? { fileKey: d.fileKey } : {}),
    activeRuns: [...d.activeRuns],
    ...(d.description !== undefined ? { description: d.description } : {}),
    ...(d.owner !== undefined ? { owner: d.owner } : {}),
    ...(d.schedule ? { schedule: { ...d.schedule } } : {}),
    updatedAt: d.updatedAt,
  };
}

function toRun(r: RunState): RunRecord {
  return {
    dagId: r.dagId,
    runId: r.runId,
    dagVersion: r.dagVersion,
    kind: r.kind,
    status: r.status,
    logicalDate: r.logicalDate,
    conf: JSON.parse(r.confJson) as Record<string, unknown>,
    taskCount: r.taskCount,
    tasksWritten: r.tasksWritten,
    createdAt: r.createdAt,
    startTime: r.startTime,
    endTime: r.endTime,
    ...(r.error !== undefined ? { error: r.error } : {}),
  };
}

function toTask(t: TaskState): TaskInstanceRecord {
  return {
    dagId: t.dagId,
    runId: t.runId,
    taskId: t.taskId,
    dagVersion: t.dagVersion,
    status: t.status,
    attempt: t.attempt,
    leaseToken: t.leaseToken,
    upstreamCount: t.upstreamCount,
    retryBase: t.retryBase,
    generation: t.generation,
    counts: { ...t.counts },
    queuedAt: t.queuedAt,
    leaseExpiresAt: t.leaseExpiresAt,
    retryAt: t.retryAt,
    startTime: t.startTime,
    endTime: t.endTime,
    error: t.error,
    deferred: t.deferred,
    output: t.output,
    outputKey: t.outputKey,
    ...(typeof t.log === 'string' ? { log: t.log, logAttempt: t.logAttempt ?? 0 } : {}),
    ...(t.advanceInline ? { advanceInline: true } : {}),
    ...(t.continued ? { continued: true } : {}),
    ...(t.tentative !== undefined ? { tentative: t.tentative } : {}),
    ...(t.uncounted ? { uncounted: true } : {}),
    ...(t.history ? { history: t.history.map((h) => ({ ...h })) } : {}),
    ...(t.gates ? { gates: [...t.gates] } : {}),
    ...(t.parked ? { parked: t.parked } : {}),
    ...(t.mapAttempt !== undefined ? { mapAttempt: t.mapAttempt } : {}),
    ...(t.mapLength !== undefined ? { mapLength: t.mapLength } : {}),
    ...(t.mapShards !== undefined ? { mapShards: t.mapShards } : {}),
    ...(t.mapCounts ? { mapCounts: { ...t.mapCounts } } : {}),
    ...(t.mapItem !== undefined ? { mapItem: t.mapItem } : {}),
    ...(t.mapEpoch !== undefined ? { mapEpoch: t.mapEpoch } : {}),
    ...(t.mapShards !== undefined
      ? {
          mapDone: [...(t.mapDone ?? [])].filter((d) => d.startsWith(`${t.mapAttempt}#`)).length,
        }
      : {}),
  };
}

const sameList = (
  a: readonly string[] | null | undefined,
  b: readonly string[] | null | undefined,
) => (a ?? []).length === (b ?? []).length && (a ?? []).every((x, i) => x === (b ?? [])[i]);

const byKey = <T>(key: (x: T) => string) => {
  return (a: T, b: T) => {
    const ka = key(a);
    const kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
};

/**
 * The state store in memory, for unit tests and property tests of the application layer. It
 * holds the same behaviour as the DynamoDB store (adapters/aws/dynamodb.ts), which the contract
 * suite in test/contract checks against both: every change is a compare-and-set, a refused one
 * throws ConflictError with the record as it now is, and a missing item is NotFoundError.
 *
 * Each method does all its work without awaiting, so one call is one atomic write, as one
 * conditional DynamoDB request is. Records handed out are copies: nothing a caller does to them
 * reaches the store.
 */
export class MemoryStateStore implements StateStore {
  readonly #dags = new Map<string, DagState>();
  /** dagId → version → record. */
  readonly #versions = new Map<string, Map<number, DagVersionRecord>>();
  /** DAG file key → the dagId last registered from it. */
  readonly #files = new Map<string, string>();
  readonly #importErrors = new Map<string, ImportErrorRecord>();
  readonly #runs = new Map<string, RunState>();
  /** run key → taskId → task instance. */
  readonly #tasks = new Map<string, Map<string, TaskState>>();
  /** run key → shard number → progress shard. */
  readonly #progress = new Map<string, Map<number, ProgressShard>>();
  /** run key → `{taskId}#{mapAttempt}#{shard}` → a mapped task's count shard. */
  readonly #mapShards = new Map<string, Map<string, MapShard>>();
  /** Use counters (countUse): name → uses counted. */
  readonly #uses = new Map<string, number>();
  readonly #deferrals = new Map<string, AttemptRef>();
  readonly #backfills = new Map<string, BackfillRecord>();
  /** Gates by id (core/pools): pools and DAG caps, as the table's `GATE#` items. */
  readonly #gates = new Map<string, GateCount>();
  /** The gate the reaper's last look at gates with waiters stopped at (findWaitingGates). */
  #wakeCursor: string | undefined;
  /** Each gate's waiting attempts, by `since#dagId#runId#taskId` (the table's sort key). */
  readonly #waiters = new Map<string, Map<string, { waiter: string; message: TaskMessage }>>();

  async putDagVersion(
    input: NewDagVersion,
  ): Promise<{ version: DagVersionRecord; created: boolean }> {
    const meta = this.#dags.get(input.dagId);
    const live = meta !== undefined && !meta.deleted;
    // Two files may not declare one dagId (Airflow's duplicate DAG id): the first keeps it.
    if (live && input.fileKey && meta.fileKey !== undefined && meta.fileKey !== input.fileKey) {
      throw new ConflictError(
        `dagId ${input.dagId} is already declared by ${meta.fileKey}; a DAG id must be unique`,
      );
    }
    if (
      live &&
      meta.latestSha256 === input.sha256 &&
      meta.fileKey === (input.fileKey ?? meta.fileKey)
    ) {
      const current = this.#versions.get(input.dagId)?.get(meta.latestVersion);
      if (current) return { version: { ...current }, created: false };
    }
    const at = input.at.toISOString();
    const next = (meta?.latestVersion ?? 0) + 1;
    const version: DagVersionRecord = {
      dagId: input.dagId,
      version: next,
      sourceKey: input.sourceKey,
      sha256: input.sha256,
      taskCount: input.taskCount,
      createdAt: at,
    };
    const dag: DagState = meta ?? {
      dagId: input.dagId,
      latestVersion: 0,
      latestSha256: undefined,
      paused: false,
      deleted: false,
      incarnation: 1,
      fileKey: undefined,
      activeRuns: new Set(),
      description: undefined,
      owner: undefined,
      schedule: undefined,
      updatedAt: at,
    };
    // A DAG created again after a delete starts afresh, as a new DAG: unpaused, with new
    // idempotency keys.
    if (meta && !live) {
      dag.incarnation += 1;
      dag.paused = false;
    }
    dag.latestVersion = next;
    dag.latestSha256 = input.sha256;
    dag.deleted = false;
    dag.description = input.description ?? undefined;
    dag.owner = input.owner ?? undefined;
    dag.schedule = input.schedule ? { ...input.schedule } : undefined;
    dag.updatedAt = at;
    if (input.fileKey) {
      dag.fileKey = input.fileKey;
      this.#files.set(input.fileKey, input.dagId);
    }
    this.#dags.set(input.dagId, dag);
    const versions = this.#versions.get(input.dagId) ?? new Map<number, DagVersionRecord>();
    versions.set(next, version);
    this.#versions.set(input.dagId, versions);
    return { version: { ...version }, created: true };
  }

  async getDag(dagId: string): Promise<DagRecord | undefined> {
    const d = this.#dags.get(dagId);
    return d ? toDag(d) : undefined;
  }

  async listDags(page: PageRequest = {}): Promise<Page<DagRecord>> {
    // Deleted DAGs leave the listing, as they leave the table's index.
    const live = [...this.#dags.values()].filter((d) => !d.deleted);
    return paginate(
      'DAGS',
      live.map((d) => ({ key: d.dagId, item: d })),
      page,
      'ascending',
      toDag,
    );
  }

  async listDagVersions(dagId: string, page: PageRequest = {}): Promise<Page<DagVersionRecord>> {
    const versions = [...(this.#versions.get(dagId)?.values() ?? [])];
    return paginate(
      `VERSIONS#${dagId}`,
      versions.map((v) => ({ key: String(v.version).padStart(9, '0'), item: v })),
      page,
      'descending',
      (v) => ({ ...v }),
    );
  }

  async getDagVersion(dagId: string, version: number): Promise<DagVersionRecord | undefined> {
    const v = this.#versions.get(dagId)?.get(version);
    return v ? { ...v } : undefined;
  }

  async setDagPaused(dagId: string, paused: boolean, at: Date): Promise<DagRecord> {
    const d = this.#dags.get(dagId);
    if (!d) throw notFound(`DAG ${dagId}`);
    // A deleted DAG is as good as gone.
    if (d.deleted) throw new NotFoundError(`DAG ${dagId} was deleted`);
    d.paused = paused;
    d.updatedAt = at.toISOString();
    return toDag(d);
  }

  async markDagDeleted(dagId: string, at: Date): Promise<void> {
    const d = this.#dags.get(dagId);
    if (!d) throw notFound(`DAG ${dagId}`);
    // Versions, runs and the file's record stay: history is kept, and the file name is free.
    d.deleted = true;
    d.fileKey = undefined;
    d.updatedAt = at.toISOString();
  }

  async dagOfFile(fileKey: string): Promise<string | undefined> {
    return this.#files.get(fileKey);
  }

  async putImportError(record: ImportErrorRecord): Promise<void> {
    this.#importErrors.set(record.key, {
      key: record.key,
      ...(record.dagId !== undefined ? { dagId: record.dagId } : {}),
      errors: record.errors.map((e) => ({ ...e })),
      time: record.time,
    });
  }

  async clearImportError(key: string): Promise<void> {
    this.#importErrors.delete(key);
  }

  async listImportErrors(page: PageRequest = {}): Promise<Page<ImportErrorRecord>> {
    return paginate(
      'IMPORT_ERRORS',
      [...this.#importErrors.values()].map((e) => ({ key: e.key, item: e })),
      page,
      'ascending',
      (e) => ({ ...e, errors: e.errors.map((i) => ({ ...i })) }),
    );
  }

  async createRun(input: NewRun): Promise<{ run: RunRecord; created: boolean }> {
    const key = runKey(input.dagId, input.runId);
    const existing = this.#runs.get(key);
    if (existing) return { run: toRun(existing), created: false };
    const at = input.at.toISOString();
    // The run item, each task instance and each progress shard must fit in one transaction.
    const inline = input.tasks.length + progressShardCount(input.tasks.length) + 1;
    const small = inline <= MAX_TRANSACTION_ITEMS;
    const run: RunState = {
      dagId: input.dagId,
      runId: input.runId,
      dagVersion: input.dagVersion,
      kind: input.kind,
      logicalDate: input.logicalDate.toISOString(),
      confJson: JSON.stringify(input.conf),
      taskCount: input.tasks.length,
      createdAt: at,
      status: 'queued',
      tasksWritten: small,
      startTime: null,
      endTime: null,
      error: undefined,
      clears: 0,
      creator: undefined,
      due: { kind: small ? 'RUNQ' : 'CREATE', since: at },
      inQueue: small,
    };
    this.#runs.set(key, run);
    // A large run is the run item alone until writeRunTasks writes the rest.
    if (small) this.#writeChildren(input);
    return { run: toRun(run), created: true };
  }

  async confirmRunTasks(dagId: string, runId: string, _verify: boolean): Promise<boolean> {
    // A small run is written whole at once here: its flag is set from the start.
    return this.#runs.get(runKey(dagId, runId))?.tasksWritten ?? false;
  }

  async writeRunTasks(
    input: NewRun,
    lease: { readonly token: string; readonly seconds: number; readonly now: Date },
  ): Promise<'written' | 'busy'> {
    const run = this.#runs.get(runKey(input.dagId, input.runId));
    if (!run) throw notFound(`creation lease ${input.runId}`);
    const now = lease.now.toISOString();
    // The creation lease: only while unwritten, and only once the last writer's lease is over.
    if (run.tasksWritten) return 'written';
    if (run.creator && !(run.creator.until < now)) return 'busy';
    run.creator = {
      token: lease.token,
      until: new Date(lease.now.getTime() + lease.seconds * 1000).toISOString(),
    };
    this.#writeChildren(input);
    run.tasksWritten = true;
    run.creator = undefined;
    if (run.status === 'queued') {
      run.due = { kind: 'RUNQ', since: now };
      run.inQueue = true;
    } else {
      run.due = undefined;
    }
    return 'written';
  }

  /**
   * What a writer of a large run's task instances leaves when it dies holding the creation
   * lease: the lease, until `until`, and no task instances. For tests of writeRunTasks.
   */
  holdCreationLease(dagId: string, runId: string, token: string, until: Date): void {
    const run = this.#runs.get(runKey(dagId, runId));
    if (!run) throw notFound(`run ${runId}`);
    run.creator = { token, until: until.toISOString() };
  }

  async findUnwrittenRuns(before: Date, limit: number): Promise<RunRecord[]> {
    return this.#dueRuns('CREATE', before, limit);
  }

  async findQueuedRunsBefore(before: Date, limit: number): Promise<RunRecord[]> {
    return this.#dueRuns('RUNQ', before, limit);
  }

  async getRun(dagId: string, runId: string): Promise<RunRecord | undefined> {
    const r = this.#runs.get(runKey(dagId, runId));
    return r ? toRun(r) : undefined;
  }

  async listRuns(
    dagId: string,
    page: PageRequest = {},
    range?: { readonly from: string; readonly to: string },
  ): Promise<Page<RunRecord>> {
    const runs = [...this.#runs.values()].filter(
      (r) =>
        r.dagId === dagId && (!range || (r.logicalDate >= range.from && r.logicalDate <= range.to)),
    );
    return paginate(
      range ? `RUNS#${dagId}#${range.from}#${range.to}` : `RUNS#${dagId}`,
      runs.map((r) => ({ key: `${r.logicalDate}#${r.runId}`, item: r })),
      page,
      'descending',
      toRun,
    );
  }

  async putBackfill(backfill: BackfillRecord): Promise<void> {
    const key = `${backfill.dagId}#${backfill.backfillId}`;
    if (this.#backfills.has(key)) throw conflict(`backfill ${backfill.backfillId}`);
    this.#backfills.set(key, { ...backfill });
  }

  async getBackfill(dagId: string, backfillId: string): Promise<BackfillRecord | undefined> {
    const b = this.#backfills.get(`${dagId}#${backfillId}`);
    return b ? { ...b } : undefined;
  }

  async advanceBackfill(
    dagId: string,
    backfillId: string,
    expected: string,
    cursor: string | null,
    created: number,
  ): Promise<BackfillRecord> {
    const key = `${dagId}#${backfillId}`;
    const b = this.#backfills.get(key);
    if (!b) throw notFound(`backfill ${backfillId}`);
    if (b.cursor !== expected) throw conflict(`backfill ${backfillId}`, { ...b });
    const next = { ...b, cursor, created: b.created + created };
    this.#backfills.set(key, next);
    return { ...next };
  }

  async listCreatingBackfills(limit: number): Promise<BackfillRecord[]> {
    return [...this.#backfills.values()]
      .filter((b) => b.cursor !== null)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .slice(0, limit)
      .map((b) => ({ ...b }));
  }

  async transitionRun(
    dagId: string,
    runId: string,
    from: readonly RunStatus[],
    to: RunStatus,
    at: Date,
    options: { readonly reason?: string; readonly clears?: number } = {},
  ): Promise<RunRecord> {
    checkRunTransition(from, to);
    const run = this.#runs.get(runKey(dagId, runId));
    if (!run) throw notFound(`run ${runId}`);
    const clearsMatch = options.clears === undefined || run.clears === options.clears;
    if (!from.includes(run.status) || !clearsMatch) throw conflict(`run ${runId}`, toRun(run));
    const when = at.toISOString();
    run.status = to;
    run.error = options.reason ? options.reason.slice(0, 2000) : undefined;
    // A run leaves the queued-run indexes when it leaves `queued`.
    if (to !== 'queued') {
      run.due = undefined;
      run.inQueue = false;
    }
    if (to === 'running') {
      run.startTime ??= when;
      run.endTime = null;
    }
    if (isTerminalRun(to)) run.endTime = when;
    return toRun(run);
  }

  async acquireRunSlot(dagId: string, runId: string, max: number): Promise<boolean> {
    const d = this.#dags.get(dagId);
    if (!d) throw notFound(`slot for ${runId}`);
    // A run that holds a slot holds it, paused or not; otherwise a slot must be free and open.
    if (d.activeRuns.has(runId)) return true;
    if (d.paused || d.deleted) return false;
    // As the table's condition: an empty set is an absent attribute, which has no size.
    if (d.activeRuns.size > 0 && d.activeRuns.size >= max) return false;
    d.activeRuns.add(runId);
    return true;
  }

  async releaseRunSlot(dagId: string, runId: string): Promise<void> {
    const d = this.#dags.get(dagId);
    if (!d) return;
    // Only once the run has ended: a run reopened by a clear keeps its slot.
    const run = this.#runs.get(runKey(dagId, runId));
    if (run && !isTerminalRun(run.status)) return;
    d.activeRuns.delete(runId);
  }

  async listQueuedRuns(dagId: string, limit: number): Promise<RunRecord[]> {
    return [...this.#runs.values()]
      .filter((r) => r.dagId === dagId && r.inQueue)
      .sort(byKey((r) => `${r.logicalDate}#${r.runId}`))
      .slice(0, Math.max(0, limit))
      .filter((r) => r.status === 'queued')
      .map(toRun);
  }

  async listTaskInstances(dagId: string, runId: string): Promise<TaskInstanceRecord[]> {
    return [...(this.#tasks.get(runKey(dagId, runId))?.values() ?? [])]
      .sort(byKey((t) => t.taskId))
      .map(toTask);
  }

  async getTaskInstance(key: TaskKey): Promise<TaskInstanceRecord | undefined> {
    const t = this.#task(key);
    return t ? toTask(t) : undefined;
  }

  async transitionTask(key: TaskKey, t: TaskTransition): Promise<TaskInstanceRecord> {
    const what = `${t.event} ${key.runId}/${key.taskId}`;
    const ti = this.#task(key);
    if (!ti) throw notFound(what);
    const matches =
      ti.status === t.expect.status &&
      ti.attempt === t.expect.attempt &&
      ti.leaseToken === t.expect.leaseToken &&
      // The reaper's condition: the lease it read as expired has not been renewed since.
      (!t.leaseExpiredBy || (ti.leaseExpiresAt !== null && ti.leaseExpiresAt < t.leaseExpiredBy)) &&
      (!t.whileContinued || ti.continued === true) &&
      (t.mapEpoch === undefined || (ti.mapEpoch ?? 0) === t.mapEpoch) &&
      (t.release === undefined || sameList(ti.gates, t.release)) &&
      (t.unpark === undefined || (ti.parked ?? null) === t.unpark);
    if (!matches) throw conflict(what, toTask(ti));
    // The slots it held go back, and its place among a gate's waiters goes, in the same write.
    for (const g of t.release ?? []) {
      const gate = this.#gates.get(g);
      if (gate) gate.used -= 1;
    }
    if (t.release) ti.gates = null;
    if (t.unpark) this.#unpark(ti, t.unpark);
    const s = t.set;
    ti.status = s.status;
    ti.attempt = s.attempt;
    ti.leaseToken = s.leaseToken;
    // Absent fields are left as they are; null clears.
    if (s.leaseExpiresAt !== undefined) ti.leaseExpiresAt = s.leaseExpiresAt;
    if (s.retryAt !== undefined) ti.retryAt = s.retryAt;
    if (s.startTime !== undefined) ti.startTime = s.startTime;
    if (s.endTime !== undefined) ti.endTime = s.endTime;
    if (s.error !== undefined) ti.error = s.error;
    if (s.retryBase !== undefined) ti.retryBase = s.retryBase;
    if (s.deferred !== undefined) ti.deferred = s.deferred;
    if (s.output !== undefined) ti.output = s.output;
    if (s.outputKey !== undefined) ti.outputKey = s.outputKey;
    if (s.log !== undefined) ti.log = s.log;
    if (s.logAttempt !== undefined) ti.logAttempt = s.logAttempt;
    ti.advanceInline = s.advanceInline === true;
    ti.continued = false;
    // Putting it in the lease index leaves a tentative claim to be settled (TaskInstanceRecord).
    if (!t.whileContinued) ti.tentative = undefined;
    if (s.past) ti.history = [...(ti.history ?? []), { ...s.past }];
    if (s.mapped) {
      ti.mapAttempt = s.attempt;
      ti.mapLength = s.mapped.length;
      ti.mapShards = s.mapped.shards;
      delete ti.mapCounts;
    }
    if (s.mapCounts) ti.mapCounts = { ...s.mapCounts };
    if (s.status === 'queued') ti.queuedAt = t.at;
    // Keep the deadline index in step: a task is in it only while it waits for a deadline.
    const kind = DUE_KIND[s.status];
    const due =
      s.status === 'queued' ? t.at : s.status === 'running' ? s.leaseExpiresAt : s.retryAt;
    ti.due = kind && due ? { kind, at: due } : undefined;
    return toTask(ti);
  }

  async recordUpstreamOutcome(
    downstream: TaskKey,
    upstreamTaskId: string,
    status: TaskStatus,
    generation: number,
    options: {
      readonly queueAt?: Date;
      readonly claim?: {
        readonly leaseToken: string;
        readonly leaseExpiresAt: string;
        readonly tentative?: number;
      };
      readonly weight?: { readonly counts: UpstreamCounts; readonly extraUpstream: number };
    } = {},
  ): Promise<{ task: TaskInstanceRecord; counted: boolean }> {
    const counter = counterFor(status);
    if (options.claim?.tentative !== undefined && status !== 'success')
      throw new Error('recordUpstreamOutcome: a tentative claim counts a success only');
    if (!counter && !options.weight)
      throw new Error(`recordUpstreamOutcome: "${status}" is not a finished status`);
    const ti = this.#task(downstream);
    if (!ti) throw notFound('recordUpstreamOutcome');
    const entry = `${upstreamTaskId}#${generation}`;
    // Counted already: a duplicate event. Answer with the counts as they stand.
    if (ti.counted.has(entry)) return { task: toTask(ti), counted: false };
    const { weight } = options;
    if (weight) {
      ti.counts = addCounts(ti.counts, weight.counts);
      ti.upstreamCount += weight.extraUpstream;
      ti.counted.add(entry);
      return { task: toTask(ti), counted: true };
    }
    if (!counter) throw new Error('unreachable');
    const queue = options.queueAt && ti.status === 'pending' && ti.counted.size === 0;
    // A tentative claim counts in that write or not at all: its success may not have landed.
    if (options.claim?.tentative !== undefined && !queue)
      return { task: toTask(ti), counted: false };
    ti.counts = { ...ti.counts, [counter]: ti.counts[counter] + 1 };
    ti.counted.add(entry);
    if (queue && options.queueAt) {
      const at = options.queueAt.toISOString();
      ti.status = 'queued';
      ti.attempt += 1;
      ti.leaseToken = null;
      ti.retryAt = null;
      ti.queuedAt = at;
      ti.advanceInline = false;
      ti.due = { kind: 'QUEUED', at };
      if (options.claim) {
        ti.status = 'running';
        ti.leaseToken = options.claim.leaseToken;
        ti.leaseExpiresAt = options.claim.leaseExpiresAt;
        ti.startTime = at;
        // In no index until its first heartbeat, as in DynamoDB.
        ti.due = undefined;
        ti.continued = true;
        ti.tentative = options.claim.tentative;
      }
    }
    return { task: toTask(ti), counted: true };
  }

  async settleTentative(
    key: TaskKey,
    leaseToken: string,
    how: 'confirm' | 'withdraw',
    _at: Date,
  ): Promise<TaskInstanceRecord> {
    const what = `${how} ${key.runId}/${key.taskId}`;
    const ti = this.#task(key);
    if (!ti) throw notFound(what);
    if (!(ti.status === 'running' && ti.leaseToken === leaseToken && ti.tentative !== undefined)) {
      throw conflict(what, toTask(ti));
    }
    ti.tentative = undefined;
    if (how === 'withdraw') {
      // As the table's update does: what the counting write set, removed; what it added, taken off.
      ti.status = 'pending';
      ti.attempt -= 1;
      ti.leaseToken = null;
      ti.leaseExpiresAt = null;
      ti.startTime = null;
      ti.queuedAt = null;
      ti.continued = false;
      ti.counts = { ...ti.counts, success: ti.counts.success - 1 };
      ti.counted = new Set();
      ti.due = undefined;
    }
    return toTask(ti);
  }

  async expandMap(
    parent: TaskInstanceRecord,
    items: readonly (string | null)[],
    at: Date,
    _listed?: readonly TaskInstanceRecord[],
  ): Promise<TaskInstanceRecord[]> {
    const length = items.length;
    const rk = runKey(parent.dagId, parent.runId);
    const tasks = this.#tasks.get(rk);
    if (!tasks) throw notFound('expandMap');
    const mapAttempt = parent.attempt;
    const shards = mapShardCount(length);
    // Fenced by the expanding attempt's lease, as the table's transactions are.
    const own = tasks.get(parent.taskId);
    const holds =
      own?.status === 'running' &&
      own.attempt === mapAttempt &&
      own.leaseToken === parent.leaseToken;
    if (!holds) {
      throw conflict('expandMap', own ? toTask(own) : undefined);
    }
    const byShard = this.#mapShards.get(rk) ?? new Map<string, MapShard>();
    this.#mapShards.set(rk, byShard);
    for (let sh = 0; sh < shards; sh++) {
      const k = `${parent.taskId}#${mapAttempt}#${sh}`;
      if (!byShard.has(k)) {
        byShard.set(k, {
          total: mapShardSize(length, shards, sh),
          finished: 0,
          counts: { ...NO_COUNTS },
          counted: new Set(),
        });
      }
    }
    const stamp = at.toISOString();
    const out: TaskInstanceRecord[] = [];
    for (let i = 0; i < length; i++) {
      const id = instanceId(parent.taskId, i);
      const old = tasks.get(id);
      if (old?.mapAttempt === mapAttempt) {
        out.push(toTask(old));
        continue;
      }
      const t: TaskState = {
        dagId: parent.dagId,
        runId: parent.runId,
        taskId: id,
        dagVersion: parent.dagVersion,
        upstreamCount: 0,
        status: 'queued',
        attempt: (old?.attempt ?? 0) + 1,
        leaseToken: null,
        retryBase: old?.attempt ?? 0,
        generation: old ? old.generation + 1 : 0,
        counts: { ...NO_COUNTS },
        counted: new Set(),
        queuedAt: stamp,
        leaseExpiresAt: null,
        retryAt: null,
        startTime: null,
        endTime: null,
        error: null,
        deferred: null,
        output: null,
        outputKey: null,
        ...(old?.history ? { history: old.history } : {}),
        ...(typeof old?.log === 'string' ? { log: old.log, logAttempt: old.logAttempt ?? 0 } : {}),
        due: { kind: 'QUEUED', at: stamp },
        mapAttempt,
        mapLength: length,
        ...(typeof items[i] === 'string' ? { mapItem: items[i] as string } : {}),
      };
      tasks.set(id, t);
      out.push(toTask(t));
    }
    return out;
  }

  async recordMapOutcome(
    instance: TaskKey,
    mapIndex: number,
    mapAttempt: number,
    mapLength: number,
    status: TaskStatus,
    generation: number,
  ): Promise<boolean> {
    const counter = counterFor(status);
    if (!counter) throw new Error(`recordMapOutcome: "${status}" is not a finished status`);
    const shard = mapShard(mapIndex, mapShardCount(mapLength));
    const parent = baseTaskId(instance.taskId);
    const sh = this.#mapShards
      .get(runKey(instance.dagId, instance.runId))
      ?.get(`${parent}#${mapAttempt}#${shard}`);
    if (!sh) throw notFound('recordMapOutcome');
    const entry = `${mapIndex}#${generation}`;
    if (!sh.counted.has(entry)) {
      sh.counted.add(entry);
      sh.finished += 1;
      sh.counts = { ...sh.counts, [counter]: sh.counts[counter] + 1 };
    }
    return sh.finished >= sh.total;
  }

  async markMapShardDone(
    parent: TaskKey,
    mapAttempt: number,
    shard: number,
  ): Promise<TaskInstanceRecord | undefined> {
    const t = this.#task(parent);
    if (!t) return undefined;
    t.mapDone = t.mapDone ?? new Set();
    t.mapDone.add(`${mapAttempt}#${shard}`);
    return toTask(t);
  }

  async mapOutcomes(parent: TaskKey, mapAttempt: number): Promise<UpstreamCounts> {
    const prefix = `${parent.taskId}#${mapAttempt}#`;
    let sum = { ...NO_COUNTS };
    for (const [k, sh] of this.#mapShards.get(runKey(parent.dagId, parent.runId)) ?? []) {
      if (k.startsWith(prefix)) sum = addCounts(sum, sh.counts);
    }
    return sum;
  }

  async listMapInstances(parent: TaskKey): Promise<TaskInstanceRecord[]> {
    const out: TaskInstanceRecord[] = [];
    for (const t of this.#tasks.get(runKey(parent.dagId, parent.runId))?.values() ?? []) {
      if (parseInstance(t.taskId)?.taskId === parent.taskId) out.push(toTask(t));
    }
    return out.sort(
      (a, b) => (parseInstance(a.taskId)?.mapIndex ?? 0) - (parseInstance(b.taskId)?.mapIndex ?? 0),
    );
  }

  async finishedTasks(dagId: string, runId: string): Promise<ReadonlySet<string>> {
    const out = new Set<string>();
    for (const p of this.#progress.get(runKey(dagId, runId))?.values() ?? []) {
      for (const entry of p.done) out.add(entry);
    }
    return out;
  }

  async recordTaskFinished(
    key: TaskKey,
    succeeded: boolean,
    taskCount: number,
    generation: number,
    extra = false,
  ): Promise<(RunProgress & { clears: number }) | undefined> {
    const shard = progressShard(key.taskId, progressShardCount(taskCount));
    const p = this.#progress.get(runKey(key.dagId, key.runId))?.get(shard);
    if (!p) throw notFound('recordTaskFinished');
    const entry = `${key.taskId}#${generation}`;
    if (!p.done.has(entry)) {
      if (extra) p.total += 1;
      p.finished += 1;
      p.succeeded += succeeded ? 1 : 0;
      p.done.add(entry);
    }
    // Only a shard left complete is worth reading the run's whole progress for.
    if (p.finished < p.total) return undefined;
    return this.#runProgress(key.dagId, key.runId);
  }

  async clearTasks(plan: ClearPlan): Promise<void> {
    const at = plan.at.toISOString();
    const key = runKey(plan.dagId, plan.runId);
    const shards = progressShardCount(plan.taskCount);
    // Each action is one conditional write, as in the table's transaction: a check, then a change.
    type Action = { item: string; check: () => boolean; apply: () => void };

    const taskActions: Action[] = plan.tasks.map((t) => ({
      item: `TI#${t.taskId}`,
      check: () => {
        const ti = this.#task({ dagId: plan.dagId, runId: plan.runId, taskId: t.taskId });
        return (
          ti !== undefined &&
          ti.status === t.expect.status &&
          ti.attempt === t.expect.attempt &&
          ti.generation === t.expect.generation &&
          ti.counts.success === t.expect.counts.success &&
          ti.counts.failed === t.expect.counts.failed &&
          ti.counts.upstreamFailed === t.expect.counts.upstreamFailed &&
          ti.counts.skipped === t.expect.counts.skipped &&
          ti.leaseToken === null
        );
      },
      apply: () => {
        const ti = this.#task({ dagId: plan.dagId, runId: plan.runId, taskId: t.taskId });
        if (!ti) return;
        ti.status = t.status;
        ti.attempt = t.attempt;
        ti.generation = t.generation;
        ti.counts = { ...t.counts };
        if (t.upstreamCount !== undefined) ti.upstreamCount = t.upstreamCount;
        ti.counted = new Set(t.counted);
        ti.advanceInline = false;
        if (t.newGeneration) {
          ti.retryBase = t.expect.attempt;
          ti.leaseExpiresAt = null;
          ti.retryAt = null;
          ti.startTime = null;
          ti.error = null;
          ti.deferred = null;
          ti.output = null;
          ti.outputKey = null;
          delete ti.mapCounts;
        }
        ti.endTime = t.status === 'skipped' || t.status === 'upstream_failed' ? at : null;
        if (t.history) ti.history = t.history.map((h) => ({ ...h }));
        // A mapped task reopened for one instance: that instance's shard is no longer done.
        if (plan.instance?.parentTaskId === t.taskId) this.#reopenForInstance(ti, plan.instance);
        if (t.status === 'queued') {
          ti.queuedAt = at;
          ti.due = { kind: 'QUEUED', at };
        }
      },
    }));

    // Progress stays exact whatever was counted yet (see ClearPlan): a cleared finished task
    // adds one to its shard's total, and one to succeeded unless it had succeeded.
    const bumps = new Map<number, { total: number; succeeded: number }>();
    for (const t of plan.tasks) {
      if (t.oldSucceeded === undefined) continue;
      const shard = progressShard(t.taskId, shards);
      const b = bumps.get(shard) ?? { total: 0, succeeded: 0 };
      b.total += 1;
      b.succeeded += t.oldSucceeded ? 0 : 1;
      bumps.set(shard, b);
    }
    const progressActions: Action[] = [...bumps].map(([shard, b]) => ({
      item: `PROGRESS#${shard}`,
      check: () => this.#progress.get(key)?.has(shard) === true,
      apply: () => {
        const p = this.#progress.get(key)?.get(shard);
        if (!p) return;
        p.total += b.total;
        p.succeeded += b.succeeded;
      },
    }));

    if (plan.runStatus !== 'running') checkRunTransition([plan.runStatus], 'running');
    const runAction: Action = {
      item: 'RUN',
      check: () => this.#runs.get(key)?.status === plan.runStatus,
      apply: () => {
        const run = this.#runs.get(key);
        if (!run) return;
        run.clears += 1;
        if (plan.runStatus !== 'running') {
          run.status = 'running';
          run.endTime = null;
          run.error = undefined;
        }
      },
    };

    // A reopened run holds its slot in the same write (see ClearPlan.slot).
    const slotAction: Action[] =
      plan.slot === undefined
        ? []
        : [
            {
              item: 'DAG',
              check: () => {
                const d = this.#dags.get(plan.dagId);
                return (
                  d !== undefined &&
                  (d.activeRuns.has(plan.runId) || d.activeRuns.size < (plan.slot as number))
                );
              },
              apply: () => {
                this.#dags.get(plan.dagId)?.activeRuns.add(plan.runId);
              },
            },
          ];
    // One transaction when it fits; otherwise the run and progress first, then the tasks, each
    // chunk all or nothing (the table's documented gap for very large clears).
    const actions = [
      runAction,
      ...slotAction,
      ...progressActions,
      ...taskActions,
      ...this.#clearInstance(plan),
    ];
    for (let i = 0; i < actions.length; i += MAX_TRANSACTION_ITEMS) {
      const chunk = actions.slice(i, i + MAX_TRANSACTION_ITEMS);
      if (new Set(chunk.map((a) => a.item)).size < chunk.length) {
        throw new Error('clearTasks: a transaction cannot change one item twice');
      }
      if (!chunk.every((a) => a.check())) throw conflict('clearTasks');
      for (const a of chunk) a.apply();
    }
  }

  /** A ClearPlan's one instance (see ClearPlan.instance), as the table's transaction does it. */
  #clearInstance(plan: ClearPlan): { item: string; check: () => boolean; apply: () => void }[] {
    const inst = plan.instance;
    if (!inst) return [];
    const at = plan.at.toISOString();
    const key = runKey(plan.dagId, plan.runId);
    const shard = mapShard(inst.mapIndex, mapShardCount(inst.mapLength));
    const entry = `${inst.mapIndex}#${inst.expect.generation}`;
    const get = (taskId: string) => this.#task({ dagId: plan.dagId, runId: plan.runId, taskId });
    const sh = () =>
      this.#mapShards.get(key)?.get(`${inst.parentTaskId}#${inst.mapAttempt}#${shard}`);
    const actions = [
      {
        item: `TI#${inst.taskId}`,
        check: () => {
          const t = get(inst.taskId);
          return (
            t !== undefined &&
            t.status === inst.expect.status &&
            t.attempt === inst.expect.attempt &&
            t.generation === inst.expect.generation &&
            t.mapAttempt === inst.mapAttempt &&
            t.leaseToken === null
          );
        },
        apply: () => {
          const t = get(inst.taskId);
          if (!t) return;
          t.status = 'queued';
          t.attempt = inst.attempt;
          t.generation = inst.generation;
          t.retryBase = inst.expect.attempt;
          t.leaseExpiresAt = null;
          t.retryAt = null;
          t.startTime = null;
          t.endTime = null;
          t.error = null;
          t.deferred = null;
          t.output = null;
          t.outputKey = null;
          t.advanceInline = false;
          t.queuedAt = at;
          t.due = { kind: 'QUEUED', at };
          if (inst.history) t.history = inst.history.map((h) => ({ ...h }));
        },
      },
      {
        item: `MAP#${inst.parentTaskId}#${inst.mapAttempt}#${shard}`,
        check: () => {
          const m = sh();
          return m !== undefined && m.counted.has(entry) === (inst.counted !== undefined);
        },
        apply: () => {
          const m = sh();
          if (!m) return;
          // The entry stays counted either way: the old outcome's late event counts nothing.
          if (inst.counted) {
            m.finished -= 1;
            m.counts = { ...m.counts, [inst.counted]: m.counts[inst.counted] - 1 };
          } else m.counted.add(entry);
        },
      },
    ];
    if (inst.waiting) {
      actions.push({
        item: `TI#${inst.parentTaskId}`,
        check: () => {
          const p = get(inst.parentTaskId);
          return (
            p !== undefined &&
            p.status === 'running' &&
            p.attempt === inst.mapAttempt &&
            p.mapAttempt === inst.mapAttempt &&
            p.leaseToken === null
          );
        },
        apply: () => {
          const p = get(inst.parentTaskId);
          if (p) this.#reopenForInstance(p, inst);
        },
      });
    }
    // Otherwise the reopened mapped task is among the plan's tasks, whose write does the same.
    return actions;
  }

  /** The mapped task of an instance cleared alone: its shard is no longer done (ClearPlan). */
  #reopenForInstance(parent: TaskState, inst: NonNullable<ClearPlan['instance']>): void {
    const shard = mapShard(inst.mapIndex, mapShardCount(inst.mapLength));
    parent.mapDone?.delete(`${inst.mapAttempt}#${shard}`);
    parent.mapEpoch = (parent.mapEpoch ?? 0) + 1;
  }

  async mapOutcomeCounted(
    instance: TaskKey,
    mapIndex: number,
    mapAttempt: number,
    mapLength: number,
    generation: number,
  ): Promise<boolean> {
    const shard = mapShard(mapIndex, mapShardCount(mapLength));
    const m = this.#mapShards
      .get(runKey(instance.dagId, instance.runId))
      ?.get(`${baseTaskId(instance.taskId)}#${mapAttempt}#${shard}`);
    return m?.counted.has(`${mapIndex}#${generation}`) === true;
  }

  async countUse(name: string, max: number): Promise<boolean> {
    const uses = this.#uses.get(name);
    // As the table's condition: the first use counts whatever the limit.
    if (uses !== undefined && !(uses < max)) return false;
    this.#uses.set(name, (uses ?? 0) + 1);
    return true;
  }

  async putDeferral(name: string, ref: AttemptRef): Promise<void> {
    const { dagId, runId, taskId, attempt } = ref;
    this.#deferrals.set(name, { dagId, runId, taskId, attempt });
  }

  async getDeferral(name: string): Promise<AttemptRef | undefined> {
    const ref = this.#deferrals.get(name);
    return ref ? { ...ref } : undefined;
  }

  async findExpiredLeases(now: Date, limit: number): Promise<TaskInstanceRecord[]> {
    return this.#dueTasks('LEASE', now, limit);
  }

  async findQueuedBefore(before: Date, limit: number): Promise<TaskInstanceRecord[]> {
    return this.#dueTasks('QUEUED', before, limit);
  }

  async findRetriesDue(now: Date, limit: number): Promise<TaskInstanceRecord[]> {
    return this.#dueTasks('RETRY', now, limit);
  }

  async putPool(pool: string, slots: number, _at: Date): Promise<PoolRecord> {
    const id = poolGate(pool);
    const gate = this.#gates.get(id) ?? { slots, used: 0 };
    gate.slots = slots;
    this.#gates.set(id, gate);
    return { pool, slots, used: gate.used, queued: this.#waiters.get(id)?.size ?? 0 };
  }

  async listPools(): Promise<PoolRecord[]> {
    return [...this.#gates.entries()]
      .flatMap(([id, g]): PoolRecord[] => {
        const pool = poolOfGate(id);
        return pool !== undefined && g.slots !== null
          ? [{ pool, slots: g.slots, used: g.used, queued: this.#waiters.get(id)?.size ?? 0 }]
          : [];
      })
      .concat(
        // Pools that tasks wait for but that do not exist.
        [...this.#waiters.entries()].flatMap(([id, list]): PoolRecord[] => {
          const pool = poolOfGate(id);
          const g = this.#gates.get(id);
          return pool !== undefined && list.size > 0 && (g?.slots ?? null) === null
            ? [{ pool, slots: null, used: g?.used ?? 0, queued: list.size }]
            : [];
        }),
      )
      .sort(byKey((p) => p.pool));
  }

  async deletePool(pool: string): Promise<void> {
    const id = poolGate(pool);
    const gate = this.#gates.get(id);
    if (!gate || gate.slots === null) throw notFound(`pool ${pool}`);
    const waiting = this.#waiters.get(id)?.size ?? 0;
    if (gate.used > 0 || waiting > 0) {
      throw conflict(`pool ${pool} has ${gate.used} running and ${waiting} waiting tasks`);
    }
    this.#gates.delete(id);
  }

  async gateView(gate: string, waiters: number): Promise<GateView> {
    const g = this.#gates.get(gate);
    const list = [...(this.#waiters.get(gate)?.entries() ?? [])]
      .sort(byKey(([k]) => k))
      .slice(0, Math.max(0, waiters))
      .map(([, w]) => ({ waiter: w.waiter, message: { ...w.message } }));
    return { slots: g?.slots ?? null, used: g?.used ?? 0, waiters: list };
  }

  async findWaitingGates(before: Date, limit: number): Promise<string[]> {
    const at = before.toISOString();
    const gates = [...this.#waiters.entries()]
      .filter(([, list]) => [...list.keys()].some((k) => (k.split('#')[0] ?? '') < at))
      .map(([gate]) => gate)
      .sort();
    // Going on after the gate the last look stopped at, wrapping round, as DynamoDB's does.
    const cursor = this.#wakeCursor;
    const next = cursor === undefined ? 0 : gates.findIndex((g) => g > cursor);
    const start = Math.max(next, 0);
    const taken = [...gates.slice(start), ...gates.slice(0, start)].slice(0, limit);
    if (taken.length === limit) this.#wakeCursor = taken[taken.length - 1];
    return taken;
  }

  async claimGated(
    key: TaskKey,
    t: TaskTransition,
    gates: readonly Gate[],
  ): Promise<{ readonly claimed: TaskInstanceRecord } | { readonly full: string }> {
    const what = `${t.event} ${key.runId}/${key.taskId}`;
    const ti = this.#task(key);
    if (!ti) throw notFound(what);
    const matches =
      t.event === 'claim' &&
      ti.status === t.expect.status &&
      ti.attempt === t.expect.attempt &&
      ti.leaseToken === t.expect.leaseToken &&
      (ti.parked ?? null) === (t.unpark ?? null);
    if (!matches) throw conflict(what, toTask(ti));
    for (const g of gates) {
      const gate = this.#gates.get(g.id);
      const slots = g.slots ?? gate?.slots ?? null;
      if (!hasRoom({ slots, used: gate?.used ?? 0 })) return { full: g.id };
    }
    for (const g of gates) {
      const gate = this.#gates.get(g.id);
      if (gate) {
        gate.used += 1;
        if (g.slots !== undefined) gate.slots = g.slots;
      } else this.#gates.set(g.id, { slots: g.slots ?? null, used: 1 });
    }
    if (t.unpark) this.#unpark(ti, t.unpark);
    const claimed = await this.transitionTask(key, { ...t, unpark: null });
    const state = this.#task(key) as TaskState;
    state.gates = gates.map((g) => g.id);
    return { claimed: { ...claimed, gates: [...state.gates] } };
  }

  async parkTask(ti: TaskInstanceRecord, waiter: string, message: TaskMessage): Promise<boolean> {
    const t = this.#task(ti);
    if (t?.status !== 'queued' || t.attempt !== ti.attempt || t.leaseToken !== null) {
      return false;
    }
    if (t.parked === waiter) return true;
    if ((t.parked ?? null) !== (ti.parked ?? null)) return false;
    if (t.parked) this.#unpark(t, t.parked);
    const { gate, since } = parseWaiter(waiter);
    const list = this.#waiters.get(gate) ?? new Map();
    this.#waiters.set(gate, list);
    const { dagId, runId, taskId, attempt, dagVersion, executor } = message;
    list.set(`${since}#${t.dagId}#${t.runId}#${t.taskId}`, {
      waiter,
      message: { dagId, runId, taskId, attempt, dagVersion, ...(executor ? { executor } : {}) },
    });
    t.parked = waiter;
    // Out of the reaper's index of queued attempts: it waits on purpose, woken by a free slot.
    t.due = undefined;
    return true;
  }

  #unpark(t: TaskState, waiter: string): void {
    const { gate, since } = parseWaiter(waiter);
    this.#waiters.get(gate)?.delete(`${since}#${t.dagId}#${t.runId}#${t.taskId}`);
    t.parked = null;
  }

  #task(key: TaskKey): TaskState | undefined {
    return this.#tasks.get(runKey(key.dagId, key.runId))?.get(key.taskId);
  }

  /** The task instances (pending) and progress shards of a run, replacing any there were. */
  #writeChildren(input: NewRun): void {
    const shards = progressShardCount(input.tasks.length);
    const progress = new Map<number, ProgressShard>();
    for (let s = 0; s < shards; s++) {
      progress.set(s, { total: 0, finished: 0, succeeded: 0, done: new Set() });
    }
    const tasks = this.#tasks.get(runKey(input.dagId, input.runId)) ?? new Map<string, TaskState>();
    for (const t of input.tasks) {
      const p = progress.get(progressShard(t.taskId, shards));
      if (p && !t.uncounted) p.total += 1;
      tasks.set(t.taskId, {
        dagId: input.dagId,
        runId: input.runId,
        taskId: t.taskId,
        dagVersion: input.dagVersion,
        upstreamCount: t.upstreamCount,
        status: 'pending',
        attempt: 0,
        leaseToken: null,
        retryBase: 0,
        generation: 0,
        counts: { success: 0, failed: 0, upstreamFailed: 0, skipped: 0 },
        counted: new Set(),
        ...(t.uncounted ? { uncounted: true } : {}),
        queuedAt: null,
        leaseExpiresAt: null,
        retryAt: null,
        startTime: null,
        endTime: null,
        error: null,
        deferred: null,
        output: null,
        outputKey: null,
        due: undefined,
      });
    }
    this.#tasks.set(runKey(input.dagId, input.runId), tasks);
    this.#progress.set(runKey(input.dagId, input.runId), progress);
  }

  #runProgress(dagId: string, runId: string): RunProgress & { clears: number } {
    const p = { total: 0, finished: 0, succeeded: 0, clears: 0 };
    for (const s of this.#progress.get(runKey(dagId, runId))?.values() ?? []) {
      p.total += s.total;
      p.finished += s.finished;
      p.succeeded += s.succeeded;
    }
    p.clears = this.#runs.get(runKey(dagId, runId))?.clears ?? 0;
    return p;
  }

  /** The deadline index, read as the table's is: shard by shard, each in deadline order. */
  #dueTasks(kind: DueKind, before: Date, limit: number): TaskInstanceRecord[] {
    const cutoff = before.toISOString();
    const shardOf = (t: TaskState) =>
      progressShard(`${t.dagId}#${t.runId}#${t.taskId}`, DUE_SHARDS);
    const found: TaskState[] = [];
    for (const tasks of this.#tasks.values()) {
      for (const t of tasks.values()) {
        if (t.due?.kind === kind && t.due.at < cutoff) found.push(t);
      }
    }
    return found
      .sort(byKey((t) => `${shardOf(t)}#${t.due?.at}#${t.dagId}#${t.runId}#${t.taskId}`))
      .slice(0, Math.max(0, limit))
      .map(toTask);
  }

  #dueRuns(kind: 'CREATE' | 'RUNQ', before: Date, limit: number): RunRecord[] {
    const cutoff = before.toISOString();
    const shardOf = (r: RunState) => progressShard(`${r.dagId}#${r.runId}`, DUE_SHARDS);
    return [...this.#runs.values()]
      .filter((r) => r.due?.kind === kind && r.due.since < cutoff)
      .sort(byKey((r) => `${shardOf(r)}#${r.due?.since}#${r.dagId}#${r.runId}`))
      .slice(0, Math.max(0, limit))
      .map(toRun);
  }
}

/**
 * One page of a listing, sorted by `key`. The token names the listing and the last key given,
 * so a token from elsewhere, or not a token at all, is refused as the table refuses it.
 */
function paginate<S, T>(
  listing: string,
  entries: { key: string; item: S }[],
  page: PageRequest,
  order: 'ascending' | 'descending',
  map: (item: S) => T,
): Page<T> {
  const limit = Math.min(Math.max(page.limit ?? 50, 1), 1000);
  const sorted = entries.sort(byKey((e) => e.key));
  if (order === 'descending') sorted.reverse();
  let start = 0;
  if (page.nextToken !== undefined) {
    const after = decodeToken(page.nextToken, listing);
    start = sorted.findIndex((e) => (order === 'ascending' ? e.key > after : e.key < after));
    if (start < 0) start = sorted.length;
  }
  const items = sorted.slice(start, start + limit);
  const last = items.at(-1);
  const more = start + limit < sorted.length && last !== undefined;
  return {
    items: items.map((e) => map(e.item)),
    ...(more ? { nextToken: encodeToken(listing, last.key) } : {}),
  };
}

function encodeToken(listing: string, after: string): string {
  return Buffer.from(JSON.stringify({ listing, after })).toString('base64url');
}

function decodeToken(token: string, listing: string): string {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (
      typeof v === 'object' &&
      v !== null &&
      (v as { listing?: unknown }).listing === listing &&
      typeof (v as { after?: unknown }).after === 'string'
    ) {
      return (v as { after: string }).after;
    }
  } catch {
    // fall through
  }
  throw new ValidationError([{ path: 'nextToken', message: 'is not a token this API returned' }]);
}
