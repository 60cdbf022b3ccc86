import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  BatchExecuteStatementCommand,
  type BatchExecuteStatementCommandOutput,
  BatchWriteCommand,
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  type QueryCommandInput,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import {
  ConflictError,
  NotFoundError,
  ThrottledError,
  ValidationError,
} from '../../core/errors.ts';
import {
  baseTaskId,
  instanceId,
  mapShard,
  mapShardCount,
  mapShardSize,
  parseInstance,
  sumCounts,
} from '../../core/mapping/index.ts';
import { type Gate, parseWaiter, poolGate, poolOfGate } from '../../core/pools/index.ts';
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
  counterFor,
  progressShard,
  progressShardCount,
  type RunProgress,
  type UpstreamCounts,
} from '../../core/readiness/index.ts';
import {
  type AttemptSummary,
  CREATION_LEASE_SECONDS,
  checkRunTransition,
  isTerminalRun,
  type RunStatus,
  type TaskStatus,
  type TaskTransition,
} from '../../core/state/index.ts';
import { countWriteUnits } from './clients.ts';
import { Batcher, Coalescer, settle } from './coalesce.ts';
import { aws, decodeToken, encodeToken, PASSING_CANCELLATIONS } from './errors.ts';
import { DUE_SHARDS, GSI1, GSI2, GSI3, INDEX_KEYS, tableKeys as keys } from './table.ts';

/** The reaper's index entry of a run waiting to be written (CREATE) or started (RUNQ). */
function runDueKeys(dagId: string, runId: string, kind: 'CREATE' | 'RUNQ', since: string) {
  const shard = progressShard(`${dagId}#${runId}`, DUE_SHARDS);
  return { gsi2pk: `DUE#${kind}#${shard}`, gsi2sk: since };
}

/** The DAG's queue of waiting runs, oldest logical date first. */
function queuedRunKeys(dagId: string, logicalDate: string, runId: string) {
  return { gsi3pk: `QUEUED#${dagId}`, gsi3sk: `${logicalDate}#${runId}` };
}

type Item = Record<string, unknown>;
/** An item's primary key. */
type Key = { readonly pk: string; readonly sk: string };
/** How the document client writes values (clients.ts): undefined members left out. */
const MARSHALL = { removeUndefinedValues: true };

/**
 * At most this many writes to one item go out as one (Coalescer): each adds a condition and a
 * value, well within DynamoDB's expression limits.
 * https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-expression-parameters
 */
const COALESCE_MAX = 25;
/** BatchExecuteStatement takes at most 25 statements. */
const BATCH_MAX = 25;
/**
 * At most this many BatchExecuteStatement requests out at once from a process (Batcher): the
 * rest wait their turn rather than queue for a socket past the connection timeout
 * (DYNAMODB_TIMEOUTS). A 10,000-task fan-out's root queues its tasks in 400 requests: 16 at a
 * time, about 25 rounds.
 */
const BATCHES_IN_FLIGHT = 16;
type BatchStatementResponse = NonNullable<BatchExecuteStatementCommandOutput['Responses']>[number];

/** An update waiting to go out with others (DynamoStateStore #batched). */
interface BatchedUpdate {
  readonly input: ReturnType<Update['input']>;
  readonly statement: Statement;
  readonly what: string;
  readonly current: (i: Item) => unknown;
}
/** One upstream outcome counted into a task instance (recordUpstreamOutcome). */
interface CountOp {
  readonly counter: keyof UpstreamCounts;
  /** `upstreamTaskId#generation`. */
  readonly entry: string;
}
/** One task's end counted into a progress shard (recordTaskFinished). */
interface FinishOp {
  /** `taskId#generation`. */
  readonly entry: string;
  readonly succeeded: boolean;
  readonly extra: boolean;
}

/** The indexes of the first op with each entry: the others repeat an earlier one (duplicates). */
function firstOfEach<T>(ops: readonly T[], entry: (op: T) => string): ReadonlySet<number> {
  const seen = new Set<string>();
  const first = new Set<number>();
  ops.forEach((op, i) => {
    const e = entry(op);
    if (!seen.has(e)) first.add(i);
    seen.add(e);
  });
  return first;
}

/** The write that counts upstream outcomes (distinct entries) on a task instance, once each. */
function countWrite(ops: readonly CountOp[]): { u: Update; cond: string } {
  const u = new Update();
  const sums = new Map<keyof UpstreamCounts, number>();
  for (const { counter } of ops) sums.set(counter, (sums.get(counter) ?? 0) + 1);
  for (const [c, n] of sums) u.add(COUNTER[c], n);
  return {
    u,
    cond: u.addOnce(
      'countedUpstream',
      ops.map((o) => o.entry),
    ),
  };
}

/** The write that counts ends (distinct entries) on a progress shard, once each. */
function finishWrite(ops: readonly FinishOp[]): { u: Update; cond: string } {
  const u = new Update();
  const extras = ops.filter((o) => o.extra).length;
  if (extras) u.add('total', extras);
  u.add('finished', ops.length).add('succeeded', ops.filter((o) => o.succeeded).length);
  return {
    u,
    cond: u.addOnce(
      'doneTasks',
      ops.map((o) => o.entry),
    ),
  };
}

/** TransactWriteItems takes at most 100 actions; larger runs are written in batches. */
const MAX_TRANSACTION_ITEMS = 100;
/** The creation lease's holder while a small run's creator writes its tasks (createRun). */
const EAGER_CREATOR = 'creator';
const COUNTER: Record<keyof UpstreamCounts, string> = {
  success: 'cSuccess',
  failed: 'cFailed',
  upstreamFailed: 'cUpstreamFailed',
  skipped: 'cSkipped',
};
const DUE_KIND: Partial<Record<TaskStatus, string>> = {
  queued: 'QUEUED',
  running: 'LEASE',
  up_for_retry: 'RETRY',
};

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);

function toDag(i: Item): DagRecord {
  return {
    dagId: i.dagId as string,
    latestVersion: num(i.latestVersion),
    paused: i.paused === true,
    deleted: i.deleted === true,
    incarnation: Math.max(1, num(i.incarnation)),
    ...(typeof i.fileKey === 'string' ? { fileKey: i.fileKey } : {}),
    activeRuns: i.activeRuns instanceof Set ? [...(i.activeRuns as Set<string>)] : [],
    ...(typeof i.description === 'string' ? { description: i.description } : {}),
    ...(typeof i.owner === 'string' ? { owner: i.owner } : {}),
    ...(i.schedule ? { schedule: i.schedule as NonNullable<DagRecord['schedule']> } : {}),
    updatedAt: i.updatedAt as string,
  };
}

function toVersion(i: Item): DagVersionRecord {
  return {
    dagId: i.dagId as string,
    version: num(i.version),
    sourceKey: i.sourceKey as string,
    sha256: i.sha256 as string,
    taskCount: num(i.taskCount),
    createdAt: i.createdAt as string,
  };
}

/** A run item (a stored one, or a stream image unmarshalled) as a record. */
export function toRun(i: Item): RunRecord {
  return {
    dagId: i.dagId as string,
    runId: i.runId as string,
    dagVersion: num(i.dagVersion),
    kind: i.kind as RunRecord['kind'],
    status: i.status as RunStatus,
    logicalDate: i.logicalDate as string,
    // Stored as JSON text: a DynamoDB map would refuse numbers past 38 digits and nesting past
    // 32 levels, both of which the API accepts.
    conf: (typeof i.confJson === 'string' ? JSON.parse(i.confJson) : (i.conf ?? {})) as Record<
      string,
      unknown
    >,
    taskCount: num(i.taskCount),
    // A small run's item says nothing until its start confirms its tasks (createRun).
    tasksWritten: i.tasksWritten === true || (i.tasksWritten === undefined && i.eager !== true),
    createdAt: i.createdAt as string,
    startTime: str(i.startTime),
    endTime: str(i.endTime),
    ...(typeof i.error === 'string' ? { error: i.error } : {}),
  };
}

/** A task instance item (a stored one, or a stream image unmarshalled) as a record. */
function toBackfill(i: Item): BackfillRecord {
  return {
    dagId: i.dagId as string,
    backfillId: i.backfillId as string,
    from: i.from as string,
    to: i.to as string,
    runs: num(i.runs),
    created: num(i.created),
    cursor: str(i.cursor),
    createdAt: i.createdAt as string,
    cron: i.cron as string,
    timezone: i.timezone as string,
  };
}

export function toTask(i: Item): TaskInstanceRecord {
  return {
    dagId: i.dagId as string,
    runId: i.runId as string,
    taskId: i.taskId as string,
    dagVersion: num(i.dagVersion),
    status: i.status as TaskStatus,
    attempt: num(i.attempt),
    leaseToken: str(i.leaseToken),
    upstreamCount: num(i.upstreamCount),
    retryBase: num(i.retryBase),
    generation: num(i.generation),
    counts: {
      success: num(i.cSuccess),
      failed: num(i.cFailed),
      upstreamFailed: num(i.cUpstreamFailed),
      skipped: num(i.cSkipped),
    },
    queuedAt: str(i.queuedAt),
    leaseExpiresAt: str(i.leaseExpiresAt),
    retryAt: str(i.retryAt),
    startTime: str(i.startTime),
    endTime: str(i.endTime),
    error: str(i.error),
    deferred: str(i.deferred),
    output: str(i.output),
    outputKey: str(i.outputKey),
    ...(typeof i.log === 'string' ? { log: i.log, logAttempt: num(i.logAttempt) } : {}),
    ...(i.advanceInline === true ? { advanceInline: true } : {}),
    ...(i.continued === true ? { continued: true } : {}),
    ...(typeof i.tentative === 'number' ? { tentative: i.tentative } : {}),
    ...(i.uncounted === true ? { uncounted: true } : {}),
    ...(Array.isArray(i.history) ? { history: i.history as AttemptSummary[] } : {}),
    ...(Array.isArray(i.gates) && i.gates.length > 0 ? { gates: i.gates as string[] } : {}),
    ...(typeof i.parked === 'string' ? { parked: i.parked } : {}),
    ...(typeof i.mapAttempt === 'number' ? { mapAttempt: i.mapAttempt } : {}),
    ...(typeof i.mapLength === 'number' ? { mapLength: i.mapLength } : {}),
    ...(typeof i.mapShards === 'number'
      ? {
          mapShards: i.mapShards,
          mapDone: [...((i.mapDone as Set<string> | undefined) ?? [])].filter((d) =>
            d.startsWith(`${i.mapAttempt}#`),
          ).length,
        }
      : {}),
    ...(typeof i.mapItem === 'string' ? { mapItem: i.mapItem } : {}),
    ...(typeof i.mapEpoch === 'number' ? { mapEpoch: i.mapEpoch } : {}),
    ...(i.mapCounts && typeof i.mapCounts === 'object'
      ? { mapCounts: i.mapCounts as UpstreamCounts }
      : {}),
  };
}

/** The sort key of a count shard of a mapped task's attempt (core/mapping). */
function mapShardKey(dagId: string, runId: string, taskId: string, attempt: number, shard: number) {
  return {
    pk: `RUN#${dagId}#${runId}`,
    sk: `MAP#${taskId}#${String(attempt).padStart(6, '0')}#${String(shard).padStart(2, '0')}`,
  };
}

/** The most pools that do not exist, but that tasks wait for, the pool list shows. */
const MISSING_POOLS = 100;

/** Tries of a transaction that DynamoDB cancels for load or for a concurrent one. */
const TRANSACT_TRIES = 6;

/**
 * Whether a transaction was cancelled only for a concurrent one or for load (no condition
 * failed): the SDK retries neither, and a repeat is harmless, its conditions being the same.
 */
function passing(e: ThrottledError): boolean {
  const reasons =
    (e.cause as { CancellationReasons?: { Code?: string }[] } | undefined)?.CancellationReasons ??
    [];
  return (
    reasons.some((r) => PASSING_CANCELLATIONS.has(r.Code ?? '')) &&
    reasons.every((r) => PASSING_CANCELLATIONS.has(r.Code ?? '') || r.Code === 'None' || !r.Code)
  );
}

/**
 * A task instance as a transition leaves it, from the item as its writer read it: what a
 * transaction (which returns nothing) wrote, without reading it again (a read could see a later
 * write, a clear say, instead of this one).
 */
function applied(before: TaskInstanceRecord, t: TaskTransition): TaskInstanceRecord {
  const s = t.set;
  const keep = <T>(v: T | undefined, old: T): T => (v === undefined ? old : v);
  const next: Record<string, unknown> = {
    ...before,
    status: s.status,
    attempt: s.attempt,
    leaseToken: s.leaseToken,
    leaseExpiresAt: keep(s.leaseExpiresAt, before.leaseExpiresAt),
    retryAt: keep(s.retryAt, before.retryAt),
    startTime: keep(s.startTime, before.startTime),
    endTime: keep(s.endTime, before.endTime),
    error: keep(s.error, before.error),
    retryBase: keep(s.retryBase, before.retryBase),
    deferred: keep(s.deferred, before.deferred),
    output: keep(s.output, before.output),
    outputKey: keep(s.outputKey, before.outputKey),
    queuedAt: s.status === 'queued' ? t.at : before.queuedAt,
  };
  if (s.log === null) {
    delete next.log;
    delete next.logAttempt;
  } else if (s.log !== undefined) {
    next.log = s.log;
    next.logAttempt = s.logAttempt ?? 0;
  }
  if (s.advanceInline) next.advanceInline = true;
  else delete next.advanceInline;
  delete next.continued;
  if (!t.whileContinued) delete next.tentative;
  if (s.past) next.history = [...(before.history ?? []), s.past];
  if (t.release !== undefined) delete next.gates;
  if (t.unpark !== undefined) delete next.parked;
  return next as unknown as TaskInstanceRecord;
}

/**
 * Whether the stream has no use for a task instance written into this state (its filter drops
 * it: lib/airless-scheduler.ts): queued or running, or a success its writer advances from.
 */
function unstreamed(s: TaskTransition['set']): boolean {
  return (
    s.status === 'queued' ||
    s.status === 'running' ||
    (s.status === 'success' && s.advanceInline === true)
  );
}

/** The writer's read of the task instance, if the transition carries a whole one. */
function before(t: TaskTransition): TaskInstanceRecord | undefined {
  const f = t.from as Partial<TaskInstanceRecord> | undefined;
  return f && typeof f.dagId === 'string' && typeof f.generation === 'number'
    ? (f as TaskInstanceRecord)
    : undefined;
}

/** A gate's waiter item's sort key: ordered by when the attempt became ready, then by task. */
function waiterKey(waiter: string, key: TaskKey) {
  const { gate, since } = parseWaiter(waiter);
  return { pk: `GATE#${gate}`, sk: `WAIT#${since}#${key.dagId}#${key.runId}#${key.taskId}` };
}

/** Builds an UpdateExpression from SET, REMOVE, ADD and DELETE parts with placeholder names. */
class Update {
  readonly names: Record<string, string> = {};
  readonly values: Record<string, unknown> = {};
  readonly #set: string[] = [];
  readonly #remove: string[] = [];
  readonly #add: string[] = [];
  readonly #delete: string[] = [];
  /** The same changes in PartiQL's words (statement), while every part has them. */
  #partiql: { clauses: string[]; changes: Change[] } | undefined = { clauses: [], changes: [] };
  #n = 0;

  name(attr: string): string {
    const k = `#${attr}`;
    this.names[k] = attr;
    return k;
  }

  value(v: unknown): string {
    const k = `:v${this.#n++}`;
    this.values[k] = v;
    return k;
  }

  /** SET for a value, REMOVE for null: absent attributes are how the table spells null. */
  set(attr: string, v: unknown): this {
    if (v === null) {
      this.#remove.push(this.name(attr));
      this.#inPartiql(`REMOVE "${attr}"`, { attr, to: null });
    } else if (v !== undefined) {
      const value = this.value(v);
      this.#set.push(`${this.name(attr)} = ${value}`);
      this.#inPartiql(`SET "${attr}" = ${value}`, { attr, to: v });
    }
    return this;
  }

  /** The same change as a PartiQL clause, unless a part already had none. */
  #inPartiql(clause: string, change: Change): void {
    this.#partiql?.clauses.push(clause);
    this.#partiql?.changes.push(change);
  }

  setIfAbsent(attr: string, v: unknown): this {
    const n = this.name(attr);
    this.#set.push(`${n} = if_not_exists(${n}, ${this.value(v)})`);
    this.#partiql = undefined;
    return this;
  }

  /** Appends items to a list attribute, creating it if absent. */
  append(attr: string, items: readonly unknown[]): this {
    const n = this.name(attr);
    this.#set.push(
      `${n} = list_append(if_not_exists(${n}, ${this.value([])}), ${this.value(items)})`,
    );
    this.#partiql = undefined;
    return this;
  }

  add(attr: string, v: unknown): this {
    const value = this.value(v);
    this.#add.push(`${this.name(attr)} ${value}`);
    // A number only, to an attribute the item has: PartiQL has no ADD, and its `+` refuses a
    // missing operand (the write then goes on its own, as UpdateItem).
    if (typeof v === 'number')
      this.#inPartiql(`SET "${attr}" = "${attr}" + ${value}`, { attr, add: v });
    else this.#partiql = undefined;
    return this;
  }

  /**
   * Adds `entries` to the string set `attr`, and returns the condition under which that counts
   * them once: the item exists and holds none of them yet.
   */
  addOnce(attr: string, entries: readonly string[]): string {
    this.add(attr, new Set(entries));
    const n = this.name(attr);
    const none = entries.map((e) => `NOT contains(${n}, ${this.value(e)})`).join(' AND ');
    return `attribute_exists(pk) AND (attribute_not_exists(${n}) OR (${none}))`;
  }

  /** Removes elements from a set attribute. */
  delete(attr: string, v: unknown): this {
    this.#delete.push(`${this.name(attr)} ${this.value(v)}`);
    this.#partiql = undefined;
    return this;
  }

  expression(): string {
    return [
      this.#set.length ? `SET ${this.#set.join(', ')}` : '',
      this.#remove.length ? `REMOVE ${this.#remove.join(', ')}` : '',
      this.#add.length ? `ADD ${this.#add.join(', ')}` : '',
      this.#delete.length ? `DELETE ${this.#delete.join(', ')}` : '',
    ]
      .filter(Boolean)
      .join(' ');
  }

  input(table: string, key: Item, condition?: string) {
    return {
      TableName: table,
      Key: key,
      UpdateExpression: this.expression(),
      ...(condition ? { ConditionExpression: condition } : {}),
      ExpressionAttributeNames: this.names,
      ...(Object.keys(this.values).length ? { ExpressionAttributeValues: this.values } : {}),
    };
  }

  /**
   * The write as one PartiQL UPDATE statement, which answers with the item as it was (the new
   * one is `changes` applied to it), or undefined if a part of it has no PartiQL equivalent: a
   * function of an attribute, a set's ADD or DELETE, a condition that is not a conjunction of
   * comparisons and existence checks.
   * https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ql-reference.update.html
   */
  statement(table: string, key: Key, condition: string): Statement | undefined {
    const where = partiqlCondition(condition, this.names);
    if (!this.#partiql || where === undefined) return undefined;
    const text = `UPDATE "${table}" ${this.#partiql.clauses.join(' ')} WHERE "pk" = :pk AND "sk" = :sk AND ${where} RETURNING ALL OLD *`;
    const parameters: unknown[] = [];
    const statement = text.replace(/:(v\d+|pk|sk)\b/g, (m) => {
      parameters.push(m === ':pk' ? key.pk : m === ':sk' ? key.sk : this.values[m]);
      return '?';
    });
    return { statement, parameters, key, changes: this.#partiql.changes };
  }
}

/** One change a PartiQL statement makes: an attribute set (removed for null) or added to. */
type Change =
  | { readonly attr: string; readonly to: unknown }
  | { readonly attr: string; readonly add: number };

/** A conditional update in PartiQL, for BatchExecuteStatement (Update.statement). */
interface Statement {
  readonly statement: string;
  readonly parameters: unknown[];
  readonly key: Key;
  readonly changes: readonly Change[];
}

/**
 * An UpdateItem condition in PartiQL's words, or undefined if it has a part PartiQL may read
 * otherwise: anything but `=`, `<`, `<=`, `>`, `>=` comparisons and existence checks
 * (`attribute_exists`, `attribute_not_exists`, which a PartiQL UPDATE's WHERE takes as they
 * are) joined by AND. (`<>` is left out: true of a missing attribute in a condition expression,
 * not in PartiQL.)
 */
export function partiqlCondition(
  condition: string,
  names: Record<string, string>,
): string | undefined {
  const exists = /attribute_(not_)?exists\((#?\w+)\)/g;
  const rest = condition.replace(exists, '');
  if (/[()]|<>|\b(OR|NOT|BETWEEN|IN|contains|size|begins_with|attribute_type)\b/i.test(rest)) {
    return undefined;
  }
  let unknown = false;
  const out = condition
    .replace(/#\w+/g, (n) => {
      const name = names[n];
      if (name === undefined || !/^\w+$/.test(name)) unknown = true;
      return `"${name}"`;
    })
    .replace(/(attribute_(?:not_)?exists)\((\w+)\)/g, '$1("$2")');
  return unknown ? undefined : out;
}

/**
 * The write units DynamoDB bills for updating `before` into `after`: the larger image, by
 * started KB, and each index's entry as inserted, deleted, moved (both) or rewritten (the
 * larger); every index projects all attributes (table.ts).
 * https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html
 */
function writeUnits(before: Item, after: Item): { table: number; index: number } {
  const kb = (i: Item) => Math.max(1, Math.ceil(itemBytes(i) / 1024));
  let index = 0;
  for (const [pk, sk] of Object.values(INDEX_KEYS)) {
    const was = before[pk] !== undefined && before[sk] !== undefined;
    const is = after[pk] !== undefined && after[sk] !== undefined;
    if (was && is && before[pk] === after[pk] && before[sk] === after[sk]) {
      index += Math.max(kb(before), kb(after));
    } else index += (was ? kb(before) : 0) + (is ? kb(after) : 0);
  }
  return { table: Math.max(kb(before), kb(after)), index };
}

/** An item's size as DynamoDB counts it: names and values, in bytes (near enough for KBs). */
function itemBytes(item: Item): number {
  let n = 0;
  for (const [name, v] of Object.entries(item)) n += Buffer.byteLength(name) + valueBytes(v);
  return n;
}

function valueBytes(v: unknown): number {
  if (typeof v === 'string') return Buffer.byteLength(v);
  if (typeof v === 'number')
    return 1 + Math.ceil(String(Math.abs(v)).replace(/[.-]/g, '').length / 2);
  if (v instanceof Uint8Array) return v.byteLength;
  if (v instanceof Set) return [...v].reduce((a: number, e) => a + valueBytes(e), 0);
  if (Array.isArray(v)) return 3 + v.reduce((a: number, e) => a + 1 + valueBytes(e), 0);
  if (v !== null && typeof v === 'object') return 3 + itemBytes(v as Item) + Object.keys(v).length;
  return 1;
}

const warned = new Set<string>();
/** Logs why batched updates went out one at a time, once a process for each kind of reason. */
function warnOnce(reason: string, detail: string | undefined): void {
  if (warned.has(reason)) return;
  warned.add(reason);
  console.warn(`${reason}: ${detail ?? ''}; its updates went out one at a time`);
}

/** The item after `changes`, from the item before them. */
function changed(before: Item, changes: readonly Change[]): Item {
  const next: Item = { ...before };
  for (const c of changes) {
    if ('add' in c) next[c.attr] = Number(before[c.attr]) + c.add;
    else if (c.to === null) delete next[c.attr];
    // As the table would hand it back (undefined members dropped, as the client writes it).
    else next[c.attr] = unmarshall(marshall({ v: c.to }, MARSHALL)).v;
  }
  return next;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The state store on one DynamoDB table (see table.ts for its keys and indexes). Every
 * transition is one conditional update whose condition is the expected status, attempt and lease
 * token: an UpdateItem, or a statement of a BatchExecuteStatement (#batched).
 */
export class DynamoStateStore implements StateStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async putDagVersion(
    input: NewDagVersion,
  ): Promise<{ version: DagVersionRecord; created: boolean }> {
    // Two registrations of one DAG race on the DAG item's version number; the loser re-reads.
    for (let tries = 0; tries < 5; tries++) {
      const meta = await this.#get(keys.dag(input.dagId));
      const latest = num(meta?.latestVersion);
      const live = meta !== undefined && meta.deleted !== true;
      // Two files may not declare one dagId (Airflow's duplicate DAG id): the first keeps it.
      if (
        live &&
        input.fileKey &&
        typeof meta.fileKey === 'string' &&
        meta.fileKey !== input.fileKey
      ) {
        throw new ConflictError(
          `dagId ${input.dagId} is already declared by ${meta.fileKey}; a DAG id must be unique`,
        );
      }
      if (
        live &&
        meta.latestSha256 === input.sha256 &&
        meta.fileKey === (input.fileKey ?? meta.fileKey)
      ) {
        const current = await this.getDagVersion(input.dagId, latest);
        if (current) return { version: current, created: false };
      }
      const next = latest + 1;
      const at = input.at.toISOString();
      const version: DagVersionRecord = {
        dagId: input.dagId,
        version: next,
        sourceKey: input.sourceKey,
        sha256: input.sha256,
        taskCount: input.taskCount,
        createdAt: at,
      };
      const u = new Update()
        .set('dagId', input.dagId)
        .set('latestVersion', next)
        .set('latestSha256', input.sha256)
        .set('deleted', false)
        .set('description', input.description ?? null)
        .set('owner', input.owner ?? null)
        .set('schedule', input.schedule ?? null)
        .set('updatedAt', at)
        .set('gsi1pk', 'DAGS')
        .set('gsi1sk', input.dagId);
      if (input.fileKey) u.set('fileKey', input.fileKey);
      if (!meta) u.set('incarnation', 1).set('paused', false);
      // A DAG created again after a delete starts afresh, as a new DAG: unpaused, with new
      // idempotency keys.
      else if (!live)
        u.set('incarnation', Math.max(1, num(meta.incarnation)) + 1).set('paused', false);
      const expected = u.value(latest);
      const condition = `(attribute_not_exists(pk) OR ${u.name('latestVersion')} = ${expected}) AND (attribute_not_exists(pk) OR ${u.name('deleted')} = ${u.value(!live)})`;
      try {
        await aws('putDagVersion', () =>
          this.db.send(
            new TransactWriteCommand({
              TransactItems: [
                { Update: u.input(this.table, keys.dag(input.dagId), condition) },
                {
                  Put: {
                    TableName: this.table,
                    Item: {
                      ...keys.dagVersion(input.dagId, next),
                      type: 'DAG_VERSION',
                      ...version,
                    },
                    ConditionExpression: 'attribute_not_exists(pk)',
                  },
                },
                ...(input.fileKey
                  ? [
                      {
                        Put: {
                          TableName: this.table,
                          Item: {
                            ...keys.dagFile(input.fileKey),
                            type: 'DAG_FILE',
                            dagId: input.dagId,
                          },
                        },
                      },
                    ]
                  : []),
              ],
            }),
          ),
        );
        return { version, created: true };
      } catch (e) {
        if (!(e instanceof ConflictError)) throw e;
      }
    }
    throw new ConflictError(`putDagVersion: ${input.dagId} is being changed by others; try again`);
  }

  async getDag(dagId: string): Promise<DagRecord | undefined> {
    const i = await this.#get(keys.dag(dagId));
    return i ? toDag(i) : undefined;
  }

  async listDags(page: PageRequest = {}): Promise<Page<DagRecord>> {
    return this.#page(
      {
        IndexName: GSI1,
        KeyConditionExpression: 'gsi1pk = :p',
        ExpressionAttributeValues: { ':p': 'DAGS' },
      },
      page,
      toDag,
    );
  }

  async listDagVersions(dagId: string, page: PageRequest = {}): Promise<Page<DagVersionRecord>> {
    return this.#page(
      {
        KeyConditionExpression: 'pk = :p AND begins_with(sk, :v)',
        ExpressionAttributeValues: { ':p': keys.dag(dagId).pk, ':v': 'V#' },
        ScanIndexForward: false,
      },
      page,
      toVersion,
    );
  }

  async getDagVersion(dagId: string, version: number): Promise<DagVersionRecord | undefined> {
    const i = await this.#get(keys.dagVersion(dagId, version));
    return i ? toVersion(i) : undefined;
  }

  async setDagPaused(dagId: string, paused: boolean, at: Date): Promise<DagRecord> {
    const u = new Update().set('paused', paused).set('updatedAt', at.toISOString());
    const cond = `attribute_exists(pk) AND ${u.name('deleted')} = ${u.value(false)}`;
    try {
      return toDag(await this.#update(u.input(this.table, keys.dag(dagId), cond), `DAG ${dagId}`));
    } catch (e) {
      // A deleted DAG is as good as gone.
      if (e instanceof ConflictError)
        throw new NotFoundError(`DAG ${dagId} was deleted`, { cause: e });
      throw e;
    }
  }

  async dagOfFile(fileKey: string): Promise<string | undefined> {
    const i = await this.#get(keys.dagFile(fileKey));
    return typeof i?.dagId === 'string' ? i.dagId : undefined;
  }

  async markDagDeleted(dagId: string, at: Date): Promise<void> {
    // Leaves the versions and runs: history is kept. The DAG leaves the listing index, and
    // its file name is free again.
    const u = new Update()
      .set('deleted', true)
      .set('fileKey', null)
      .set('updatedAt', at.toISOString())
      .set('gsi1pk', null)
      .set('gsi1sk', null);
    await this.#update(
      u.input(this.table, keys.dag(dagId), 'attribute_exists(pk)'),
      `DAG ${dagId}`,
    );
  }

  async putImportError(record: ImportErrorRecord): Promise<void> {
    await aws('putImportError', () =>
      this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { ...keys.importError(record.key), type: 'IMPORT_ERROR', ...record },
        }),
      ),
    );
  }

  async clearImportError(key: string): Promise<void> {
    await aws('clearImportError', () =>
      this.db.send(new DeleteCommand({ TableName: this.table, Key: keys.importError(key) })),
    );
  }

  async listImportErrors(page: PageRequest = {}): Promise<Page<ImportErrorRecord>> {
    return this.#page(
      { KeyConditionExpression: 'pk = :p', ExpressionAttributeValues: { ':p': 'IMPORT_ERRORS' } },
      page,
      (i) => ({
        key: i.key as string,
        ...(typeof i.dagId === 'string' ? { dagId: i.dagId } : {}),
        errors: (i.errors ?? []) as ImportErrorRecord['errors'],
        time: i.time as string,
      }),
    );
  }

  async createRun(input: NewRun): Promise<{ run: RunRecord; created: boolean }> {
    const at = input.at.toISOString();
    const children = this.#runChildren(input);
    // Small runs are written at once by their creator; large ones off the request path.
    const eager = children.length + 1 <= MAX_TRANSACTION_ITEMS;
    const run: RunRecord = {
      dagId: input.dagId,
      runId: input.runId,
      dagVersion: input.dagVersion,
      kind: input.kind,
      status: 'queued',
      logicalDate: input.logicalDate.toISOString(),
      conf: input.conf,
      taskCount: input.tasks.length,
      tasksWritten: eager,
      createdAt: at,
      startTime: null,
      endTime: null,
    };
    const { startTime: _s, endTime: _e, conf, tasksWritten: _w, ...stored } = run;
    const runItem = {
      ...keys.run(input.dagId, input.runId),
      type: 'RUN',
      // Absent, not NULL: `if_not_exists(startTime, …)` must see no start time yet.
      ...stored,
      confJson: JSON.stringify(conf),
      progressShards: progressShardCount(input.tasks.length),
      gsi1pk: `RUNS#${input.dagId}`,
      gsi1sk: `${run.logicalDate}#${input.runId}`,
      // Until its tasks are known to be written, a run is in the reaper's creation index.
      ...runDueKeys(input.dagId, input.runId, 'CREATE', at),
      // A small run: its creator writes its tasks next, under a creation lease taken here, and
      // its start (or confirmRunTasks) sets `tasksWritten`. No `tasksWritten: false`, so the
      // stream does not hand it to the large runs' writer. A large run: writeRunTasks writes
      // the rest, off the request path.
      ...(eager
        ? {
            eager: true,
            creatorToken: EAGER_CREATOR,
            creatorUntil: new Date(
              input.at.getTime() + CREATION_LEASE_SECONDS * 1000,
            ).toISOString(),
          }
        : { tasksWritten: false }),
    };
    try {
      // The one conditional write that decides who creates the run.
      await aws('createRun', () =>
        this.db.send(
          new PutCommand({
            TableName: this.table,
            Item: runItem,
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        ),
      );
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      const existing = await this.getRun(input.dagId, input.runId);
      if (!existing) throw e;
      return { run: existing, created: false };
    }
    // Plain puts: a transaction would bill every item twice, and nothing else writes these items
    // while the creation lease holds. A creator that dies here leaves the run to the reaper,
    // whose repair writes only the items still missing (writeRunTasks).
    if (eager) await this.#batchPut(children);
    return { run, created: true };
  }

  async confirmRunTasks(dagId: string, runId: string, verify: boolean): Promise<boolean> {
    const key = keys.run(dagId, runId);
    const run = await this.#get(key);
    if (!run) return false;
    if (run.tasksWritten !== undefined || run.eager !== true) return run.tasksWritten !== false;
    if (verify) {
      // Every task instance and progress shard its creator meant to write, or more (instances
      // of mapped tasks, if the run has started).
      const wanted = num(run.taskCount) + num(run.progressShards);
      let found = 0;
      let start: Record<string, unknown> | undefined;
      do {
        const res = await aws('confirmRunTasks', () =>
          this.db.send(
            new QueryCommand({
              TableName: this.table,
              KeyConditionExpression: 'pk = :p',
              FilterExpression: 'begins_with(sk, :t) OR begins_with(sk, :g)',
              ExpressionAttributeValues: { ':p': key.pk, ':t': 'TI#', ':g': 'PROGRESS#' },
              Select: 'COUNT',
              ConsistentRead: true,
              ExclusiveStartKey: start,
            }),
          ),
        );
        found += res.Count ?? 0;
        start = res.LastEvaluatedKey;
      } while (start);
      if (found < wanted) return false;
    }
    return (
      (await this.#markWritten(
        dagId,
        runId,
        run.status as RunStatus,
        String(run.logicalDate),
        // It has waited for a slot since its creation.
        String(run.createdAt),
      )) === 'written'
    );
  }

  /** Sets `tasksWritten` of a run whose tasks are written, and moves it to the queued index. */
  async #markWritten(
    dagId: string,
    runId: string,
    status: RunStatus,
    logicalDate: string,
    since: string,
    token?: string,
  ): Promise<'written' | 'busy'> {
    const key = keys.run(dagId, runId);
    const done = new Update()
      .set('tasksWritten', true)
      .set('eager', null)
      .set('creatorToken', null)
      .set('creatorUntil', null);
    if (status === 'queued') {
      for (const [k, v] of Object.entries({
        ...runDueKeys(dagId, runId, 'RUNQ', since),
        ...queuedRunKeys(dagId, logicalDate, runId),
      }))
        done.set(k, v);
    } else {
      done.set('gsi2pk', null).set('gsi2sk', null);
    }
    const held =
      token === undefined
        ? `attribute_not_exists(${done.name('tasksWritten')}) AND ${done.name('eager')} = ${done.value(true)}`
        : `${done.name('creatorToken')} = ${done.value(token)}`;
    // The queue's entries only for a run still queued: one cancelled since it was read must not
    // wait in the DAG's queue, ahead of the runs that do.
    const cond =
      status === 'queued' ? `${held} AND ${done.name('status')} = ${done.value('queued')}` : held;
    try {
      await this.#update(done.input(this.table, key, cond), `tasks written ${runId}`);
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      const current = e.current as Item | undefined;
      if (current?.tasksWritten === true) return 'written';
      const stillHeld =
        token === undefined
          ? current?.tasksWritten === undefined && current?.eager === true
          : current?.creatorToken === token;
      if (status === 'queued' && stillHeld && current && current.status !== 'queued') {
        return this.#markWritten(
          dagId,
          runId,
          current.status as RunStatus,
          logicalDate,
          since,
          token,
        );
      }
      return 'busy';
    }
    return 'written';
  }

  async writeRunTasks(
    input: NewRun,
    lease: { readonly token: string; readonly seconds: number; readonly now: Date },
  ): Promise<'written' | 'busy'> {
    const key = keys.run(input.dagId, input.runId);
    const now = lease.now.toISOString();
    const take = new Update()
      .set('creatorToken', lease.token)
      .set('creatorUntil', new Date(lease.now.getTime() + lease.seconds * 1000).toISOString());
    const until = take.name('creatorUntil');
    const written = take.name('tasksWritten');
    const unwritten = `(${written} = ${take.value(false)} OR (attribute_not_exists(${written}) AND ${take.name('eager')} = ${take.value(true)}))`;
    const cond = `${unwritten} AND (attribute_not_exists(${until}) OR ${until} < ${take.value(now)})`;
    let taken: Item;
    try {
      taken = await this.#update(
        take.input(this.table, key, cond),
        `creation lease ${input.runId}`,
      );
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      const current = e.current as Item | undefined;
      return current?.tasksWritten === false || current?.eager === true ? 'busy' : 'written';
    }
    const children = this.#runChildren(input);
    if (taken.eager === true) {
      // A small run whose creator died: it may have written some items, and the run may even
      // have started, so only the missing items are put.
      await this.#putMissing(children);
    } else {
      // Plain puts are safe here: no one else writes these items until the flag is set, and a
      // writer that outlived its lease cannot exist (the lease is longer than its function's
      // timeout).
      await this.#batchPut(children);
    }
    // Read again: the run may have been cancelled meanwhile, and leaves the queued index then.
    const status = ((await this.#get(key))?.status ?? taken.status) as RunStatus;
    return this.#markWritten(
      input.dagId,
      input.runId,
      status,
      String(taken.logicalDate),
      now,
      lease.token,
    );
  }

  async findUnwrittenRuns(before: Date, limit: number): Promise<RunRecord[]> {
    return (await this.#dueItems('CREATE', before, limit)).map(toRun);
  }

  async findQueuedRunsBefore(before: Date, limit: number): Promise<RunRecord[]> {
    return (await this.#dueItems('RUNQ', before, limit)).map(toRun);
  }

  /** The task instances and progress shards of a new run. */
  #runChildren(input: NewRun): Item[] {
    const at = input.at.toISOString();
    const shards = progressShardCount(input.tasks.length);
    const totals = new Array<number>(shards).fill(0);
    const children: Item[] = input.tasks.map((t) => {
      const shard = progressShard(t.taskId, shards);
      if (!t.uncounted) totals[shard] = (totals[shard] ?? 0) + 1;
      return {
        ...keys.task(input.dagId, input.runId, t.taskId),
        type: 'TI',
        dagId: input.dagId,
        runId: input.runId,
        taskId: t.taskId,
        dagVersion: input.dagVersion,
        status: 'pending',
        attempt: 0,
        upstreamCount: t.upstreamCount,
        cSuccess: 0,
        cFailed: 0,
        cUpstreamFailed: 0,
        cSkipped: 0,
        ...(t.uncounted ? { uncounted: true } : {}),
        createdAt: at,
      };
    });
    totals.forEach((total, shard) => {
      children.push({
        ...keys.progress(input.dagId, input.runId, shard),
        type: 'PROGRESS',
        total,
        finished: 0,
        succeeded: 0,
      });
    });
    return children;
  }

  async getRun(dagId: string, runId: string): Promise<RunRecord | undefined> {
    const i = await this.#get(keys.run(dagId, runId));
    return i ? toRun(i) : undefined;
  }

  async listRuns(
    dagId: string,
    page: PageRequest = {},
    range?: { readonly from: string; readonly to: string },
  ): Promise<Page<RunRecord>> {
    return this.#page(
      {
        IndexName: GSI1,
        KeyConditionExpression: range ? 'gsi1pk = :p AND gsi1sk BETWEEN :a AND :b' : 'gsi1pk = :p',
        ExpressionAttributeValues: {
          ':p': `RUNS#${dagId}`,
          // The sort key is `{logicalDate}#{runId}`: every run id sorts below U+FFFF.
          ...(range ? { ':a': range.from, ':b': `${range.to}#\uffff` } : {}),
        },
        ScanIndexForward: false,
      },
      page,
      toRun,
    );
  }

  async putBackfill(b: BackfillRecord): Promise<void> {
    await aws(`backfill ${b.backfillId}`, () =>
      this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            ...keys.backfill(b.dagId, b.backfillId),
            type: 'BACKFILL',
            ...b,
            // In the sparse index of backfills still creating runs, for the reaper.
            ...(b.cursor !== null ? { gsi3pk: 'BACKFILLS', gsi3sk: b.createdAt } : {}),
          },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      ),
    );
  }

  async getBackfill(dagId: string, backfillId: string): Promise<BackfillRecord | undefined> {
    const i = await this.#get(keys.backfill(dagId, backfillId));
    return i ? toBackfill(i) : undefined;
  }

  async advanceBackfill(
    dagId: string,
    backfillId: string,
    expected: string,
    cursor: string | null,
    created: number,
  ): Promise<BackfillRecord> {
    const u = new Update().set('cursor', cursor).add('created', created);
    // Done creating: out of the reaper's index.
    if (cursor === null) u.set('gsi3pk', null).set('gsi3sk', null);
    const cond = `${u.name('cursor')} = ${u.value(expected)}`;
    return toBackfill(
      await this.#update(
        u.input(this.table, keys.backfill(dagId, backfillId), cond),
        `backfill ${backfillId}`,
        toBackfill,
      ),
    );
  }

  async listCreatingBackfills(limit: number): Promise<BackfillRecord[]> {
    const res = await aws('listCreatingBackfills', () =>
      this.db.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: GSI3,
          KeyConditionExpression: 'gsi3pk = :p',
          ExpressionAttributeValues: { ':p': 'BACKFILLS' },
          Limit: limit,
        }),
      ),
    );
    // The index is eventually consistent: one done a moment ago may still be listed.
    return (res.Items ?? []).map(toBackfill).filter((b) => b.cursor !== null);
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
    const u = new Update().set('status', to).set('updatedAt', at.toISOString());
    u.set('error', options.reason ? options.reason.slice(0, 2000) : null);
    // A run leaves the queued-run indexes when it leaves `queued`.
    if (to !== 'queued')
      u.set('gsi2pk', null).set('gsi2sk', null).set('gsi3pk', null).set('gsi3sk', null);
    if (to === 'running') u.setIfAbsent('startTime', at.toISOString()).set('endTime', null);
    // Only a run whose tasks are written starts, or ends counted by its progress (`clears`): the
    // write that says so confirms a small run's tasks (createRun) at no cost of its own.
    if (to === 'running' || options.clears !== undefined) {
      u.set('tasksWritten', true)
        .set('eager', null)
        .set('creatorToken', null)
        .set('creatorUntil', null);
    }
    if (isTerminalRun(to)) u.set('endTime', at.toISOString());
    let cond = `${u.name('status')} IN (${from.map((s) => u.value(s)).join(', ')})`;
    if (options.clears !== undefined) {
      const clears = u.name('clears');
      cond +=
        options.clears === 0
          ? ` AND (attribute_not_exists(${clears}) OR ${clears} = ${u.value(0)})`
          : ` AND ${clears} = ${u.value(options.clears)}`;
    }
    return toRun(
      await this.#update(u.input(this.table, keys.run(dagId, runId), cond), `run ${runId}`),
    );
  }

  async acquireRunSlot(dagId: string, runId: string, max: number): Promise<boolean> {
    const u = new Update().add('activeRuns', new Set([runId]));
    const active = u.name('activeRuns');
    const run = u.value(runId);
    const open = `${u.name('paused')} = ${u.value(false)} AND ${u.name('deleted')} = ${u.value(false)}`;
    const cond = `attribute_exists(pk) AND ${open} AND (attribute_not_exists(${active}) OR (size(${active}) < ${u.value(max)} AND NOT contains(${active}, ${run})))`;
    try {
      await this.#update(u.input(this.table, keys.dag(dagId), cond), `slot for ${runId}`);
      return true;
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      // Refused: either every slot is taken, or this run holds one already (a repeat).
      const held = (e.current as Item | undefined)?.activeRuns;
      return held instanceof Set && held.has(runId);
    }
  }

  async releaseRunSlot(dagId: string, runId: string): Promise<void> {
    // Conditional on the run having ended, in one transaction: a clear may have reopened the run
    // (taking the slot it still held) after its end was read, and must keep that slot.
    const u = new Update().delete('activeRuns', new Set([runId]));
    try {
      await aws(`release ${runId}`, () =>
        this.db.send(
          new TransactWriteCommand({
            TransactItems: [
              {
                ConditionCheck: {
                  TableName: this.table,
                  Key: keys.run(dagId, runId),
                  ConditionExpression: 'attribute_not_exists(pk) OR #s IN (:s, :f, :c)',
                  ExpressionAttributeNames: { '#s': 'status' },
                  ExpressionAttributeValues: { ':s': 'success', ':f': 'failed', ':c': 'cancelled' },
                },
              },
              { Update: u.input(this.table, keys.dag(dagId), 'attribute_exists(pk)') },
            ],
          }),
        ),
      );
    } catch (e) {
      // The run is live again (it keeps its slot), or the DAG is gone (nothing to give back).
      if (!(e instanceof ConflictError)) throw e;
    }
  }

  async listQueuedRuns(dagId: string, limit: number): Promise<RunRecord[]> {
    const res = await aws('listQueuedRuns', () =>
      this.db.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: GSI3,
          KeyConditionExpression: 'gsi3pk = :p',
          ExpressionAttributeValues: { ':p': `QUEUED#${dagId}` },
          ScanIndexForward: true,
          Limit: limit,
        }),
      ),
    );
    // The index is eventually consistent: a run started a moment ago may still be listed.
    return (res.Items ?? []).map(toRun).filter((r) => r.status === 'queued');
  }

  async listTaskInstances(dagId: string, runId: string): Promise<TaskInstanceRecord[]> {
    // A 10,000-task run is a few 1 MB pages; the bound only guards against a runaway loop.
    const items = await this.#queryAll('listTaskInstances', 1000, {
      KeyConditionExpression: 'pk = :p AND begins_with(sk, :t)',
      ExpressionAttributeValues: { ':p': keys.run(dagId, runId).pk, ':t': 'TI#' },
      ConsistentRead: true,
    });
    return items.map(toTask);
  }

  async getTaskInstance(key: TaskKey): Promise<TaskInstanceRecord | undefined> {
    const i = await this.#get(keys.task(key.dagId, key.runId, key.taskId));
    return i ? toTask(i) : undefined;
  }

  async transitionTask(key: TaskKey, t: TaskTransition): Promise<TaskInstanceRecord> {
    const { u, cond } = this.#taskUpdate(key, t);
    const what = `${t.event} ${key.runId}/${key.taskId}`;
    const item = keys.task(key.dagId, key.runId, key.taskId);
    const input = u.input(this.table, item, cond);
    const gates = t.release ?? [];
    if (gates.length === 0 && !t.unpark) {
      const statement = unstreamed(t.set) ? u.statement(this.table, item, cond) : undefined;
      return toTask(await this.#update(input, what, toTask, statement));
    }
    // A slot given back, or a waiter's place left, goes in the same transaction as the change.
    await this.#transact(what, [
      { Update: input },
      ...gates.map((g) => ({
        Update: new Update().add('used', -1).input(this.table, keys.gate(g)),
      })),
      ...(t.unpark ? [{ Delete: { TableName: this.table, Key: waiterKey(t.unpark, key) } }] : []),
    ]);
    const read = before(t);
    return read ? applied(read, t) : this.#readTask(key, what);
  }

  /** The update of a task-instance transition and its condition (see transitionTask). */
  #taskUpdate(key: TaskKey, t: TaskTransition) {
    const u = new Update()
      .set('status', t.set.status)
      .set('attempt', t.set.attempt)
      .set('leaseToken', t.set.leaseToken)
      .set('leaseExpiresAt', t.set.leaseExpiresAt)
      .set('retryAt', t.set.retryAt)
      .set('startTime', t.set.startTime)
      .set('endTime', t.set.endTime)
      .set('error', t.set.error)
      .set('retryBase', t.set.retryBase)
      .set('deferred', t.set.deferred)
      .set('output', t.set.output)
      .set('outputKey', t.set.outputKey)
      .set('log', t.set.log)
      .set('logAttempt', t.set.logAttempt)
      .set('advanceInline', t.set.advanceInline ? true : null)
      .set('continued', null)
      .set('updatedAt', t.at);
    // Putting it in the lease index leaves a tentative claim to be settled (TaskInstanceRecord).
    if (!t.whileContinued) u.set('tentative', null);
    if (t.set.past) u.append('history', [t.set.past]);
    if (t.set.mapped) {
      u.set('mapAttempt', t.set.attempt)
        .set('mapLength', t.set.mapped.length)
        .set('mapShards', t.set.mapped.shards)
        .set('mapCounts', null);
    }
    if (t.set.mapCounts) u.set('mapCounts', t.set.mapCounts);
    if (t.set.status === 'queued') u.set('queuedAt', t.at);
    // Keep the deadline index in step: an item is in it only while it waits for a deadline.
    // Except at a claim: moving the entry from the queued key to the lease key costs the index
    // two writes, for every task, most of which end long before their lease. The entry stays
    // under the queued key, and the reaper's look moves it (#moveClaimedToLease).
    const kind = DUE_KIND[t.set.status];
    const due =
      t.set.status === 'queued'
        ? t.at
        : t.set.status === 'running'
          ? t.set.leaseExpiresAt
          : t.set.retryAt;
    if (t.event === 'claim') {
      // left as it is
    } else if (kind && due) {
      const shard = progressShard(`${key.dagId}#${key.runId}#${key.taskId}`, DUE_SHARDS);
      u.set('gsi2pk', `DUE#${kind}#${shard}`).set('gsi2sk', due);
    } else {
      u.set('gsi2pk', null).set('gsi2sk', null);
    }
    if (t.release !== undefined) u.set('gates', null);
    if (t.unpark !== undefined) u.set('parked', null);
    const status = u.name('status');
    const attempt = u.name('attempt');
    const lease = u.name('leaseToken');
    const cond = [
      `${status} = ${u.value(t.expect.status)}`,
      `${attempt} = ${u.value(t.expect.attempt)}`,
      t.expect.leaseToken === null
        ? `attribute_not_exists(${lease})`
        : `${lease} = ${u.value(t.expect.leaseToken)}`,
      ...(t.leaseExpiredBy ? [`${u.name('leaseExpiresAt')} < ${u.value(t.leaseExpiredBy)}`] : []),
      ...(t.whileContinued ? [`${u.name('continued')} = ${u.value(true)}`] : []),
      ...(t.mapEpoch === undefined
        ? []
        : t.mapEpoch === 0
          ? [`attribute_not_exists(${u.name('mapEpoch')})`]
          : [`${u.name('mapEpoch')} = ${u.value(t.mapEpoch)}`]),
      // The slots it gives back are the ones it holds; the place it leaves is the one it has.
      ...(t.release === undefined
        ? []
        : t.release.length === 0
          ? [`attribute_not_exists(${u.name('gates')})`]
          : [`${u.name('gates')} = ${u.value(t.release)}`]),
      ...(t.unpark === undefined
        ? []
        : t.unpark === null
          ? [`attribute_not_exists(${u.name('parked')})`]
          : [`${u.name('parked')} = ${u.value(t.unpark)}`]),
    ].join(' AND ');
    return { u, cond };
  }

  /**
   * One TransactWriteItems whose first action writes a task instance: a failed condition on it
   * throws ConflictError with the task instance as it is (NotFoundError when there is none); on
   * another action, ConflictError with `{ index }` of that action.
   */
  async #transact(
    what: string,
    actions: NonNullable<ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']>,
  ): Promise<void> {
    const [first, ...rest] = actions;
    const items = [
      first?.Update
        ? { Update: { ...first.Update, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const } }
        : first,
      ...rest,
    ];
    try {
      await this.#sendTransaction(what, items as typeof actions);
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      const reasons =
        (e.cause as { CancellationReasons?: { Code?: string; Item?: unknown }[] })
          ?.CancellationReasons ?? [];
      const index = reasons.findIndex((r) => r.Code === 'ConditionalCheckFailed');
      if (index > 0) throw new ConflictError(e.message, { index }, { cause: e.cause });
      const item = reasons[0]?.Item as Record<string, AttributeValue> | undefined;
      if (!item) throw new NotFoundError(`${what}: not found`, { cause: e });
      throw new ConflictError(e.message, toTask(unmarshall(item)), { cause: e.cause });
    }
  }

  async #readTask(key: TaskKey, what: string): Promise<TaskInstanceRecord> {
    const i = await this.#get(keys.task(key.dagId, key.runId, key.taskId));
    if (!i) throw new NotFoundError(`${what}: not found`);
    return toTask(i);
  }

  async putPool(pool: string, slots: number, at: Date): Promise<PoolRecord> {
    const id = poolGate(pool);
    const u = new Update()
      .set('slots', slots)
      .set('gsi3pk', 'GATES')
      .set('gsi3sk', id)
      .set('updatedAt', at.toISOString());
    const item = await this.#update(u.input(this.table, keys.gate(id)), `pool ${pool}`);
    return { pool, slots, used: num(item.used), queued: await this.#waiting(id) };
  }

  async listPools(): Promise<PoolRecord[]> {
    const items = await this.#queryAll('list pools', 10, {
      IndexName: GSI3,
      KeyConditionExpression: 'gsi3pk = :p AND begins_with(gsi3sk, :pool)',
      ExpressionAttributeValues: { ':p': 'GATES', ':pool': 'pool:' },
    });
    const pools = items.filter((i) => typeof i.slots === 'number');
    const defined = await Promise.all(
      pools.map(async (i) => {
        const id = i.gsi3sk as string;
        return {
          pool: poolOfGate(id) as string,
          slots: num(i.slots) as number | null,
          used: num(i.used),
          queued: await this.#waiting(id),
        };
      }),
    );
    // Pools that tasks wait for but that do not exist: found by their waiters in the deadline
    // index, from `pool:` on in each shard (DAG caps sort before it), the shards at once.
    const known = new Set(pools.map((i) => i.gsi3sk as string));
    const missing: string[] = [];
    await Promise.all(
      Array.from({ length: DUE_SHARDS }, (_, shard) =>
        this.#walkGates(shard, 'pool:', { reads: MISSING_POOLS + known.size + 1 }, (gate) => {
          if (poolOfGate(gate) === undefined) return false;
          if (!known.has(gate)) missing.push(gate);
          return missing.length < MISSING_POOLS;
        }),
      ),
    );
    const undefinedPools = await Promise.all(
      missing.slice(0, MISSING_POOLS).map(async (id) => ({
        pool: poolOfGate(id) as string,
        slots: null,
        used: 0,
        queued: await this.#waiting(id),
      })),
    );
    return [...defined, ...undefinedPools.filter((p) => p.queued > 0)].sort((a, b) =>
      a.pool < b.pool ? -1 : 1,
    );
  }

  /** How many attempts wait at a gate. */
  async #waiting(gate: string): Promise<number> {
    let count = 0;
    let start: Record<string, unknown> | undefined;
    for (let page = 0; page < 100; page++) {
      const res = await aws('count waiters', () =>
        this.db.send(
          new QueryCommand({
            TableName: this.table,
            KeyConditionExpression: 'pk = :p AND begins_with(sk, :w)',
            ExpressionAttributeValues: { ':p': keys.gate(gate).pk, ':w': 'WAIT#' },
            Select: 'COUNT',
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        ),
      );
      count += res.Count ?? 0;
      start = res.LastEvaluatedKey;
      if (!start) break;
    }
    return count;
  }

  async deletePool(pool: string): Promise<void> {
    const id = poolGate(pool);
    const item = await this.#get(keys.gate(id));
    if (!item || typeof item.slots !== 'number') throw new NotFoundError(`pool ${pool}: not found`);
    const waiting = await this.#waiting(id);
    if (waiting > 0 || num(item.used) > 0) {
      throw new ConflictError(
        `pool ${pool} has ${num(item.used)} running and ${waiting} waiting tasks`,
      );
    }
    await aws(`delete pool ${pool}`, () =>
      this.db.send(
        new DeleteCommand({
          TableName: this.table,
          Key: keys.gate(id),
          ConditionExpression:
            'attribute_exists(slots) AND (attribute_not_exists(used) OR used = :z)',
          ExpressionAttributeValues: { ':z': 0 },
        }),
      ),
    ).catch((e: unknown) => {
      if (e instanceof ConflictError) {
        throw new ConflictError(`pool ${pool}: a task took one of its slots meanwhile`);
      }
      throw e;
    });
  }

  async gateView(gate: string, waiters: number): Promise<GateView> {
    // The gate item (`GATE`) sorts before its waiters (`WAIT#…`): one strongly consistent read.
    const res = await aws('gate', () =>
      this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :p',
          ExpressionAttributeValues: { ':p': keys.gate(gate).pk },
          ConsistentRead: true,
          Limit: waiters + 1,
        }),
      ),
    );
    const items = res.Items ?? [];
    const head = items[0]?.sk === 'GATE' ? items[0] : undefined;
    return {
      slots: typeof head?.slots === 'number' ? head.slots : null,
      used: num(head?.used),
      waiters: items
        .filter((i) => String(i.sk).startsWith('WAIT#'))
        .slice(0, waiters)
        .map((i) => ({
          waiter: i.waiter as string,
          message: {
            dagId: i.dagId as string,
            runId: i.runId as string,
            taskId: i.taskId as string,
            attempt: num(i.attempt),
            dagVersion: num(i.dagVersion),
            ...(i.executor === 'fargate' ? { executor: 'fargate' as const } : {}),
          },
        })),
    };
  }

  async findWaitingGates(before: Date, limit: number): Promise<string[]> {
    // A gate's waiters sit together in its shard of the deadline index, oldest first
    // (`{gate}#{since}`, parkTask): one read is one gate (#walkGates), however many wait at it,
    // so a busy pool cannot hide the others. Each look goes on where the last one stopped (the
    // wake cursor), shard after shard, wrapping round: however many gates have old waiters,
    // each gets its turn. Reads are bounded (gates whose waiters are all recent cost one each).
    const at = before.toISOString();
    const found = new Set<string>();
    const budget = { reads: 2 * limit + 2 * DUE_SHARDS };
    const cursor = await this.#get(keys.wakeCursor(), false);
    let shard = typeof cursor?.shard === 'number' ? cursor.shard % DUE_SHARDS : 0;
    let after = typeof cursor?.after === 'string' && cursor.after !== '' ? cursor.after : undefined;
    // Every shard once, and the first again (from its start: gates seen twice count once).
    for (let n = 0; n <= DUE_SHARDS && found.size < limit && budget.reads > 0; n++) {
      const stopped = await this.#walkGates(shard, after, budget, (gate, since) => {
        if (since < at) found.add(gate);
        return found.size < limit;
      });
      if (stopped !== undefined) {
        after = stopped;
        break;
      }
      shard = (shard + 1) % DUE_SHARDS;
      after = undefined;
    }
    await aws('wake cursor', () =>
      this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { ...keys.wakeCursor(), shard, ...(after !== undefined ? { after } : {}) },
        }),
      ),
    );
    return [...found];
  }

  /**
   * Walks one shard of the waiters' deadline index a gate at a time: each Query (Limit 1)
   * answers the next gate's oldest waiter, and the next starts past that gate's waiters ('$'
   * sorts just after '#' and before every character of an id). From after `from`, while `take`
   * says go on and the budget lasts. Returns where it stopped (undefined: at the shard's end).
   */
  async #walkGates(
    shard: number,
    from: string | undefined,
    budget: { reads: number },
    take: (gate: string, since: string) => boolean,
  ): Promise<string | undefined> {
    let after = from;
    for (;;) {
      // Out of reads: stopped here (at the shard's start, that is before its first key, '!').
      if (budget.reads-- <= 0) return after ?? '!';
      const res = await aws('find waiting gates', () =>
        this.db.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: GSI2,
            KeyConditionExpression: `gsi2pk = :p${after === undefined ? '' : ' AND gsi2sk > :a'}`,
            ExpressionAttributeValues: {
              ':p': `DUE#WAIT#${shard}`,
              ...(after === undefined ? {} : { ':a': after }),
            },
            ProjectionExpression: 'waiter',
            Limit: 1,
          }),
        ),
      );
      const item = res.Items?.[0];
      if (!item) return undefined;
      const { gate, since } = parseWaiter(item.waiter as string);
      after = `${gate}$`;
      if (!take(gate, since)) return after;
    }
  }

  async claimGated(
    key: TaskKey,
    t: TaskTransition,
    gates: readonly Gate[],
  ): Promise<{ readonly claimed: TaskInstanceRecord } | { readonly full: string }> {
    const what = `${t.event} ${key.runId}/${key.taskId}`;
    const { u, cond } = this.#taskUpdate(key, { ...t, unpark: t.unpark ?? null });
    // Indexed by its lease at once: it is not under the queued key if it waited (parked).
    const shard = progressShard(`${key.dagId}#${key.runId}#${key.taskId}`, DUE_SHARDS);
    u.set('gsi2pk', `DUE#LEASE#${shard}`).set('gsi2sk', t.set.leaseExpiresAt);
    u.set(
      'gates',
      gates.map((g) => g.id),
    );
    const take = (g: Gate) => {
      const gu = new Update().add('used', 1);
      const used = gu.name('used');
      if (g.slots === undefined) {
        // A pool: room under its own slots, and only if it exists.
        const slots = gu.name('slots');
        const c = `attribute_exists(${slots}) AND (attribute_not_exists(${used}) OR ${used} < ${slots})`;
        return { Update: gu.input(this.table, keys.gate(g.id), c) };
      }
      gu.set('slots', g.slots);
      const c = `attribute_not_exists(${used}) OR ${used} < ${gu.value(g.slots)}`;
      return { Update: gu.input(this.table, keys.gate(g.id), c) };
    };
    try {
      await this.#transact(what, [
        { Update: u.input(this.table, keys.task(key.dagId, key.runId, key.taskId), cond) },
        ...gates.map(take),
        ...(t.unpark ? [{ Delete: { TableName: this.table, Key: waiterKey(t.unpark, key) } }] : []),
      ]);
    } catch (e) {
      const index = (e as ConflictError).current as { index?: number } | undefined;
      if (e instanceof ConflictError && typeof index?.index === 'number') {
        const gate = gates[index.index - 1];
        if (gate) return { full: gate.id };
      }
      throw e;
    }
    const read = before(t);
    if (!read) return { claimed: await this.#readTask(key, what) };
    return {
      claimed: { ...applied(read, { ...t, unpark: null }), gates: gates.map((g) => g.id) },
    };
  }

  async parkTask(ti: TaskInstanceRecord, waiter: string, message: TaskMessage): Promise<boolean> {
    if (ti.parked === waiter) return true;
    const u = new Update().set('parked', waiter).set('gsi2pk', null).set('gsi2sk', null);
    const parked = u.name('parked');
    const cond = [
      `${u.name('status')} = ${u.value('queued')}`,
      `${u.name('attempt')} = ${u.value(ti.attempt)}`,
      `attribute_not_exists(${u.name('leaseToken')})`,
      ti.parked ? `${parked} = ${u.value(ti.parked)}` : `attribute_not_exists(${parked})`,
    ].join(' AND ');
    const w = waiterKey(waiter, ti);
    const { gate, since } = parseWaiter(waiter);
    try {
      await this.#transact(`park ${ti.runId}/${ti.taskId}`, [
        { Update: u.input(this.table, keys.task(ti.dagId, ti.runId, ti.taskId), cond) },
        {
          Put: {
            TableName: this.table,
            Item: {
              ...w,
              // In the deadline index while it waits: the reaper finds gates whose wake was lost.
              gsi2pk: `DUE#WAIT#${progressShard(gate, DUE_SHARDS)}`,
              gsi2sk: `${gate}#${since}`,
              waiter,
              dagId: message.dagId,
              runId: message.runId,
              taskId: message.taskId,
              attempt: message.attempt,
              dagVersion: message.dagVersion,
              ...(message.executor === 'fargate' ? { executor: 'fargate' } : {}),
            },
          },
        },
        ...(ti.parked
          ? [{ Delete: { TableName: this.table, Key: waiterKey(ti.parked, ti) } }]
          : []),
      ]);
      return true;
    } catch (e) {
      if (e instanceof ConflictError || e instanceof NotFoundError) return false;
      throw e;
    }
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
    const entry = `${upstreamTaskId}#${generation}`;
    const key = keys.task(downstream.dagId, downstream.runId, downstream.taskId);
    const { weight } = options;
    if (weight) {
      // A mapped task's instances, counted in one write (core/mapping).
      const u = new Update();
      const cond = u.addOnce('countedUpstream', [entry]);
      for (const [k, attr] of Object.entries(COUNTER)) {
        const n = weight.counts[k as keyof UpstreamCounts];
        if (n) u.add(attr, n);
      }
      if (weight.extraUpstream) u.add('upstreamCount', weight.extraUpstream);
      try {
        const item = await this.#update(u.input(this.table, key, cond), 'count a map', toTask);
        return { task: toTask(item), counted: true };
      } catch (e) {
        if (e instanceof ConflictError && e.current) {
          return { task: e.current as TaskInstanceRecord, counted: false };
        }
        throw e;
      }
    }
    if (!counter) throw new Error('unreachable');
    if (options.queueAt) {
      // Count and queue in one write, as queueTask would: only while the task is pending with
      // nothing counted. Refused, the outcome was counted already (a duplicate) or the task is
      // not in that state (a clear marked old outcomes counted): count it the usual way.
      const at = options.queueAt.toISOString();
      const shard = progressShard(
        `${downstream.dagId}#${downstream.runId}#${downstream.taskId}`,
        DUE_SHARDS,
      );
      const { claim } = options;
      const u = new Update()
        .add(COUNTER[counter], 1)
        // None counted yet (the condition): as an ADD would, and PartiQL can say it.
        .set('countedUpstream', new Set([entry]))
        .add('attempt', 1)
        .set('status', claim ? 'running' : 'queued')
        .set('leaseToken', claim?.leaseToken ?? null)
        .set('retryAt', null)
        .set('advanceInline', null)
        .set('queuedAt', at)
        .set('updatedAt', at);
      // Queued: in the index, for the reaper to send it if its message is lost. Claimed too
      // (a continuation): in no index until its first heartbeat, which puts it under its lease.
      // An entry written now and deleted by the outcome would cost the index two writes for a
      // task that mostly ends in milliseconds; until then, the repair of a worker that dies in
      // it is the return of its continuation's first message (app/advance.ts).
      if (claim) {
        u.set('leaseExpiresAt', claim.leaseExpiresAt).set('startTime', at).set('continued', true);
        u.set('tentative', claim.tentative);
      } else u.set('gsi2pk', `DUE#QUEUED#${shard}`).set('gsi2sk', at);
      const cond = `attribute_exists(pk) AND ${u.name('status')} = ${u.value('pending')} AND attribute_not_exists(${u.name('countedUpstream')})`;
      try {
        const task = toTask(
          await this.#update(
            u.input(this.table, key, cond),
            claim ? 'count, queue and claim' : 'count and queue',
            toTask,
            u.statement(this.table, key, cond),
          ),
        );
        return { task, counted: true };
      } catch (e) {
        if (!(e instanceof ConflictError)) throw e;
        // A tentative claim counts in that write or not at all: its success may not have landed.
        if (claim?.tentative !== undefined) {
          return { task: e.current as TaskInstanceRecord, counted: false };
        }
      }
    }
    // Counted together with the other outcomes this process counts into the task meanwhile.
    return this.#counts.run(`${key.pk}\n${key.sk}`, key, { counter, entry });
  }

  async settleTentative(
    key: TaskKey,
    leaseToken: string,
    how: 'confirm' | 'withdraw',
    at: Date,
  ): Promise<TaskInstanceRecord> {
    const u = new Update().set('tentative', null).set('updatedAt', at.toISOString());
    if (how === 'withdraw') {
      // The counting write undone: what it set, removed (the task had none of it while pending
      // with nothing counted, its condition); what it added, taken off.
      u.set('status', 'pending')
        .set('leaseToken', null)
        .set('leaseExpiresAt', null)
        .set('startTime', null)
        .set('queuedAt', null)
        .set('continued', null)
        .set('countedUpstream', null)
        // Out of the lease index, if a clear or a run's end put it there (indexLeaseTask).
        .set('gsi2pk', null)
        .set('gsi2sk', null)
        .add('attempt', -1)
        .add(COUNTER.success, -1);
    }
    const cond = [
      `${u.name('status')} = ${u.value('running')}`,
      `${u.name('leaseToken')} = ${u.value(leaseToken)}`,
      `attribute_exists(${u.name('tentative')})`,
    ].join(' AND ');
    const item = keys.task(key.dagId, key.runId, key.taskId);
    return toTask(
      await this.#update(
        u.input(this.table, item, cond),
        `${how} ${key.runId}/${key.taskId}`,
        toTask,
      ),
    );
  }

  /** Counts of one task instance, written together (Coalescer): one write for them all. */
  readonly #counts = new Coalescer<Key, CountOp, { task: TaskInstanceRecord; counted: boolean }>(
    (key, ops) => this.#countAll(key, ops),
    COALESCE_MAX,
  );

  async #countAll(
    key: Key,
    ops: readonly CountOp[],
  ): Promise<PromiseSettledResult<{ task: TaskInstanceRecord; counted: boolean }>[]> {
    const first = firstOfEach(ops, (o) => o.entry);
    if (first.size > 1) {
      const { u, cond } = countWrite([...first].map((i) => ops[i] as CountOp));
      try {
        const task = toTask(await this.#update(u.input(this.table, key, cond), 'count outcomes'));
        // Each caller sees the task as if the writes had gone one at a time, in arrival order:
        // with the counts up to its own, so one caller alone sees the last; a duplicate, as
        // counted already by the one before it.
        const results: PromiseSettledResult<{ task: TaskInstanceRecord; counted: boolean }>[] = [];
        let counts = task.counts;
        for (let i = ops.length - 1; i >= 0; i--) {
          results[i] = {
            status: 'fulfilled',
            value: { task: { ...task, counts }, counted: first.has(i) },
          };
          const c = (ops[i] as CountOp).counter;
          if (first.has(i)) counts = { ...counts, [c]: counts[c] - 1 };
        }
        return results;
      } catch (e) {
        if (!(e instanceof ConflictError)) throw e;
        // One of them was counted already (a repeat): one at a time, below.
      }
    }
    // One at a time, in arrival order.
    const results: PromiseSettledResult<{ task: TaskInstanceRecord; counted: boolean }>[] = [];
    for (const op of ops) results.push(await settle(this.#countOne(key, op)));
    return results;
  }

  async #countOne(key: Key, op: CountOp): Promise<{ task: TaskInstanceRecord; counted: boolean }> {
    const { u, cond } = countWrite([op]);
    try {
      return {
        task: toTask(
          await this.#update(u.input(this.table, key, cond), 'recordUpstreamOutcome', toTask),
        ),
        counted: true,
      };
    } catch (e) {
      // Counted already: a duplicate event. Answer with the counts as they stand.
      if (e instanceof ConflictError && e.current) {
        return { task: e.current as TaskInstanceRecord, counted: false };
      }
      throw e;
    }
  }

  async expandMap(
    parent: TaskInstanceRecord,
    items: readonly (string | null)[],
    at: Date,
    listed?: readonly TaskInstanceRecord[],
  ): Promise<TaskInstanceRecord[]> {
    const length = items.length;
    const { dagId, runId, taskId } = parent;
    const mapAttempt = parent.attempt;
    const shards = mapShardCount(length);
    const stamp = at.toISOString();
    const existing = new Map(
      (listed ?? (await this.listMapInstances(parent))).map((t) => [t.taskId, t]),
    );
    // Every write below is fenced by the expanding attempt's lease, checked in the same
    // transaction: a worker that lost its lease (reaped, its next attempt expanding) can no
    // longer write over the instances of that next attempt.
    const fence = new Update();
    const fenceCond = [
      `${fence.name('status')} = ${fence.value('running')}`,
      `${fence.name('attempt')} = ${fence.value(mapAttempt)}`,
      parent.leaseToken === null
        ? `attribute_not_exists(${fence.name('leaseToken')})`
        : `${fence.name('leaseToken')} = ${fence.value(parent.leaseToken)}`,
    ].join(' AND ');
    const check = {
      ConditionCheck: {
        TableName: this.table,
        Key: keys.task(dagId, runId, taskId),
        ConditionExpression: fenceCond,
        ExpressionAttributeNames: fence.names,
        ExpressionAttributeValues: fence.values,
      },
    };
    // 99 puts to a transaction, fewer when they are large: a transaction takes at most 4 MB.
    const fenced = async (what: string, puts: Item[]) => {
      const chunks: Item[][] = [];
      let bytes = 0;
      for (const item of puts) {
        const size = Buffer.byteLength(JSON.stringify(item));
        const last = chunks.at(-1);
        if (!last || last.length >= MAX_TRANSACTION_ITEMS - 1 || bytes + size > 3_000_000) {
          chunks.push([item]);
          bytes = size;
        } else {
          last.push(item);
          bytes += size;
        }
      }
      for (const chunk of chunks) {
        await this.#sendTransaction(what, [
          check,
          ...chunk.map((Item) => ({ Put: { TableName: this.table, Item } })),
        ]);
      }
    };
    // This attempt's shards first, and only those it has not written yet (a repeat after a
    // hand-back must not reset what its instances counted): every instance's shard exists
    // before the instance does.
    const have = new Set(
      (
        await this.#queryAll('map shards', 10, {
          KeyConditionExpression: 'pk = :p AND begins_with(sk, :s)',
          ExpressionAttributeValues: {
            ':p': keys.run(dagId, runId).pk,
            ':s': `MAP#${taskId}#${String(mapAttempt).padStart(6, '0')}#`,
          },
          ProjectionExpression: 'sk',
          ConsistentRead: true,
        })
      ).map((i) => String(i.sk)),
    );
    const shardItems = Array.from({ length: shards }, (_, sh) => ({
      ...mapShardKey(dagId, runId, taskId, mapAttempt, sh),
      type: 'MAP',
      total: mapShardSize(length, shards, sh),
      finished: 0,
      cSuccess: 0,
      cFailed: 0,
      cUpstreamFailed: 0,
      cSkipped: 0,
    })).filter((i) => !have.has(i.sk));
    await fenced('expand: count shards', shardItems);
    const writes: Item[] = [];
    const out: TaskInstanceRecord[] = [];
    for (let i = 0; i < length; i++) {
      const id = instanceId(taskId, i);
      const old = existing.get(id);
      if (old?.mapAttempt === mapAttempt) {
        out.push(old);
        continue;
      }
      // An earlier expansion's instance (the mapped task was cleared or retried, and the caller
      // stopped what of it was live): its attempt numbers go on, and its inline log stays, so
      // that its logs and history stay its own.
      const item: Item = {
        ...keys.task(dagId, runId, id),
        type: 'TI',
        dagId,
        runId,
        taskId: id,
        dagVersion: parent.dagVersion,
        status: 'queued',
        attempt: (old?.attempt ?? 0) + 1,
        retryBase: old?.attempt ?? 0,
        generation: old ? old.generation + 1 : 0,
        upstreamCount: 0,
        cSuccess: 0,
        cFailed: 0,
        cUpstreamFailed: 0,
        cSkipped: 0,
        queuedAt: stamp,
        createdAt: stamp,
        updatedAt: stamp,
        mapAttempt,
        mapLength: length,
        ...(typeof items[i] === 'string' ? { mapItem: items[i] } : {}),
        ...(old?.history ? { history: old.history } : {}),
        ...(typeof old?.log === 'string' ? { log: old.log, logAttempt: old.logAttempt ?? 0 } : {}),
        gsi2pk: `DUE#QUEUED#${progressShard(`${dagId}#${runId}#${id}`, DUE_SHARDS)}`,
        gsi2sk: stamp,
      };
      writes.push(item);
      out.push(toTask(item));
    }
    await fenced('expand: instances', writes);
    return out;
  }

  /**
   * One TransactWriteItems, sent again while DynamoDB cancels it only for a concurrent
   * transaction on one of its items (TransactionConflict: a busy gate) or for load
   * (ThrottlingError: a hot item). The SDK retries neither; the conditions make a repeat
   * harmless. A failed condition throws ConflictError.
   */
  async #sendTransaction(
    what: string,
    actions: NonNullable<ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']>,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await aws(what, () => this.db.send(new TransactWriteCommand({ TransactItems: actions })));
        return;
      } catch (e) {
        if (!(e instanceof ThrottledError) || !passing(e) || attempt >= TRANSACT_TRIES) throw e;
        await sleep(Math.random() * 25 * 2 ** attempt);
      }
    }
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
    const key = mapShardKey(
      instance.dagId,
      instance.runId,
      baseTaskId(instance.taskId),
      mapAttempt,
      shard,
    );
    const entry = `${mapIndex}#${generation}`;
    const u = new Update().add(COUNTER[counter], 1).add('finished', 1);
    const cond = u.addOnce('counted', [entry]);
    let item: Item;
    try {
      item = await this.#update(u.input(this.table, key, cond), 'recordMapOutcome');
    } catch (e) {
      if (!(e instanceof ConflictError) || !e.current) throw e;
      item = e.current as Item;
    }
    return num(item.finished) >= num(item.total);
  }

  async markMapShardDone(
    parent: TaskKey,
    mapAttempt: number,
    shard: number,
  ): Promise<TaskInstanceRecord | undefined> {
    const u = new Update().add('mapDone', new Set([`${mapAttempt}#${shard}`]));
    try {
      return toTask(
        await this.#update(
          u.input(
            this.table,
            keys.task(parent.dagId, parent.runId, parent.taskId),
            'attribute_exists(pk)',
          ),
          'markMapShardDone',
        ),
      );
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async mapOutcomes(parent: TaskKey, mapAttempt: number): Promise<UpstreamCounts> {
    const items = await this.#queryAll(
      'mapOutcomes',
      100,
      {
        KeyConditionExpression: 'pk = :p AND begins_with(sk, :s)',
        ExpressionAttributeValues: {
          ':p': keys.run(parent.dagId, parent.runId).pk,
          ':s': `MAP#${parent.taskId}#${String(mapAttempt).padStart(6, '0')}#`,
        },
        ProjectionExpression: 'cSuccess, cFailed, cUpstreamFailed, cSkipped',
        ConsistentRead: true,
      },
      true,
    );
    return sumCounts(
      items.map((i) => ({
        success: num(i.cSuccess),
        failed: num(i.cFailed),
        upstreamFailed: num(i.cUpstreamFailed),
        skipped: num(i.cSkipped),
      })),
    );
  }

  async listMapInstances(parent: TaskKey): Promise<TaskInstanceRecord[]> {
    const items = await this.#queryAll(
      'listMapInstances',
      1000,
      {
        KeyConditionExpression: 'pk = :p AND begins_with(sk, :t)',
        ExpressionAttributeValues: {
          ':p': keys.run(parent.dagId, parent.runId).pk,
          ':t': `TI#${parent.taskId}[`,
        },
        ConsistentRead: true,
      },
      true,
    );
    const index = (t: TaskInstanceRecord) => parseInstance(t.taskId)?.mapIndex ?? 0;
    return items
      .map(toTask)
      .filter((t) => parseInstance(t.taskId)?.taskId === parent.taskId)
      .sort((a, b) => index(a) - index(b));
  }

  async recordTaskFinished(
    key: TaskKey,
    succeeded: boolean,
    taskCount: number,
    generation: number,
    extra = false,
  ): Promise<(RunProgress & { clears: number }) | undefined> {
    // The same pure function createRun used: no read of the run item needed.
    const shard = progressShard(key.taskId, progressShardCount(taskCount));
    const item = keys.progress(key.dagId, key.runId, shard);
    // Counted together with the other ends this process counts into the shard meanwhile.
    return this.#finishes.run(
      `${item.pk}\n${item.sk}`,
      { dagId: key.dagId, runId: key.runId, item },
      { entry: `${key.taskId}#${generation}`, succeeded, extra },
    );
  }

  /** Ends counted into one progress shard, written together (Coalescer). */
  readonly #finishes = new Coalescer<
    { dagId: string; runId: string; item: Key },
    FinishOp,
    (RunProgress & { clears: number }) | undefined
  >((key, ops) => this.#finishAll(key, ops), COALESCE_MAX);

  async #finishAll(
    key: { dagId: string; runId: string; item: Key },
    ops: readonly FinishOp[],
  ): Promise<PromiseSettledResult<(RunProgress & { clears: number }) | undefined>[]> {
    const first = firstOfEach(ops, (o) => o.entry);
    /** Per op: whether the shard's count was complete once it was counted, or why it failed. */
    let complete: PromiseSettledResult<boolean>[] | undefined;
    if (first.size > 1) {
      const { u, cond } = finishWrite([...first].map((i) => ops[i] as FinishOp));
      try {
        const item = await this.#update(u.input(this.table, key.item, cond), 'count ends');
        // As if the writes had gone one at a time, in arrival order (see #countAll).
        complete = [];
        let finished = num(item.finished);
        let total = num(item.total);
        for (let i = ops.length - 1; i >= 0; i--) {
          complete[i] = { status: 'fulfilled', value: finished >= total };
          if (!first.has(i)) continue;
          finished -= 1;
          if ((ops[i] as FinishOp).extra) total -= 1;
        }
      } catch (e) {
        if (!(e instanceof ConflictError)) throw e;
        // One of them was counted already (a repeat): one at a time, below.
      }
    }
    if (!complete) {
      // One at a time, in arrival order.
      complete = [];
      for (const op of ops) complete.push(await settle(this.#finishOne(key.item, op)));
    }
    // The run's progress, read once for every end that may have completed it: like a read after
    // one's own write, it may include ends counted after that write.
    const progress = complete.some((c) => c.status === 'fulfilled' && c.value)
      ? await settle(this.#progress(key.dagId, key.runId))
      : undefined;
    return complete.map((c) => {
      if (c.status === 'rejected') return c;
      if (!c.value) return { status: 'fulfilled', value: undefined };
      return progress as PromiseSettledResult<RunProgress & { clears: number }>;
    });
  }

  /** One end counted on its own: whether the shard's count is complete. */
  async #finishOne(item: Key, op: FinishOp): Promise<boolean> {
    const { u, cond } = finishWrite([op]);
    let after: Item;
    try {
      after = await this.#update(u.input(this.table, item, cond), 'recordTaskFinished');
    } catch (e) {
      // Counted already (a duplicate event): answer as the first call did.
      if (!(e instanceof ConflictError) || !e.current) throw e;
      after = e.current as Item;
    }
    return num(after.finished) >= num(after.total);
  }

  async clearTasks(plan: ClearPlan): Promise<void> {
    const at = plan.at.toISOString();
    const shards = progressShardCount(plan.taskCount);
    const taskUpdates = plan.tasks.map((t) => {
      const u = new Update()
        .set('status', t.status)
        .set('attempt', t.attempt)
        .set('generation', t.generation)
        .set(COUNTER.success, t.counts.success)
        .set(COUNTER.failed, t.counts.failed)
        .set(COUNTER.upstreamFailed, t.counts.upstreamFailed)
        .set(COUNTER.skipped, t.counts.skipped)
        .set('upstreamCount', t.upstreamCount)
        // An empty string set is not allowed: none counted is an absent attribute.
        .set('countedUpstream', t.counted.length > 0 ? new Set(t.counted) : null)
        // The clear's own writes are advanced by the stream: a status it resolves at once
        // (skipped, upstream_failed) must reach it, whoever wrote the task before.
        .set('advanceInline', null)
        .set('updatedAt', at);
      if (t.newGeneration) {
        u.set('retryBase', t.expect.attempt)
          .set('leaseExpiresAt', null)
          .set('retryAt', null)
          .set('startTime', null)
          .set('error', null)
          .set('deferred', null)
          .set('output', null)
          .set('outputKey', null)
          // A mapped task runs again: its next attempt expands it afresh.
          .set('mapCounts', null);
      }
      u.set('endTime', t.status === 'skipped' || t.status === 'upstream_failed' ? at : null);
      if (t.history) u.set('history', t.history);
      if (t.status === 'queued') {
        const shard = progressShard(`${plan.dagId}#${plan.runId}#${t.taskId}`, DUE_SHARDS);
        u.set('queuedAt', at).set('gsi2pk', `DUE#QUEUED#${shard}`).set('gsi2sk', at);
      }
      const gen = u.name('generation');
      const cond = [
        `${u.name('status')} = ${u.value(t.expect.status)}`,
        `${u.name('attempt')} = ${u.value(t.expect.attempt)}`,
        `attribute_not_exists(${u.name('leaseToken')})`,
        t.expect.generation === 0
          ? `(attribute_not_exists(${gen}) OR ${gen} = ${u.value(0)})`
          : `${gen} = ${u.value(t.expect.generation)}`,
        ...(Object.keys(COUNTER) as (keyof UpstreamCounts)[]).map(
          (k) => `${u.name(COUNTER[k])} = ${u.value(t.expect.counts[k])}`,
        ),
      ].join(' AND ');
      // A mapped task reopened for one instance: that instance's shard is no longer done.
      const inst = plan.instance;
      if (inst && t.taskId === inst.parentTaskId) {
        const shard = mapShard(inst.mapIndex, mapShardCount(inst.mapLength));
        u.delete('mapDone', new Set([`${inst.mapAttempt}#${shard}`])).add('mapEpoch', 1);
      }
      return { Update: u.input(this.table, keys.task(plan.dagId, plan.runId, t.taskId), cond) };
    });
    const instanceUpdates = plan.instance ? this.#clearInstance(plan) : [];
    const bumps = new Map<number, { total: number; succeeded: number }>();
    for (const t of plan.tasks) {
      if (t.oldSucceeded === undefined) continue;
      const shard = progressShard(t.taskId, shards);
      const b = bumps.get(shard) ?? { total: 0, succeeded: 0 };
      b.total += 1;
      b.succeeded += t.oldSucceeded ? 0 : 1;
      bumps.set(shard, b);
    }
    const progressUpdates = [...bumps].map(([shard, b]) => ({
      Update: new Update()
        .add('total', b.total)
        .add('succeeded', b.succeeded)
        .input(this.table, keys.progress(plan.dagId, plan.runId, shard), 'attribute_exists(pk)'),
    }));
    const ru = new Update().set('updatedAt', at).add('clears', 1);
    if (plan.runStatus !== 'running') {
      checkRunTransition([plan.runStatus], 'running');
      ru.set('status', 'running').set('endTime', null).set('error', null);
    }
    const runUpdate = {
      Update: ru.input(
        this.table,
        keys.run(plan.dagId, plan.runId),
        `${ru.name('status')} = ${ru.value(plan.runStatus)}`,
      ),
    };
    // A reopened run holds its slot in the same write (see ClearPlan.slot).
    const slotUpdates = [];
    if (plan.slot !== undefined) {
      const su = new Update().add('activeRuns', new Set([plan.runId]));
      const active = su.name('activeRuns');
      const cond = `attribute_exists(pk) AND (attribute_not_exists(${active}) OR contains(${active}, ${su.value(plan.runId)}) OR size(${active}) < ${su.value(plan.slot)})`;
      slotUpdates.push({ Update: su.input(this.table, keys.dag(plan.dagId), cond) });
    }
    // One transaction when it fits (100 actions); otherwise the run and progress first, then
    // the tasks in chunks (a documented gap: a failure midway leaves part of the clear applied).
    const actions = [
      runUpdate,
      ...slotUpdates,
      ...progressUpdates,
      ...taskUpdates,
      ...instanceUpdates,
    ];
    const chunks: (typeof actions)[] = [];
    for (let i = 0; i < actions.length; i += MAX_TRANSACTION_ITEMS) {
      chunks.push(actions.slice(i, i + MAX_TRANSACTION_ITEMS));
    }
    for (const chunk of chunks) {
      await aws('clearTasks', () =>
        this.db.send(new TransactWriteCommand({ TransactItems: chunk as never })),
      );
    }
  }

  /** The writes of a ClearPlan's one instance: the instance, its shard, its waiting task. */
  #clearInstance(plan: ClearPlan) {
    const inst = plan.instance;
    if (!inst) return [];
    const at = plan.at.toISOString();
    const { mapIndex, mapAttempt, mapLength } = inst;
    const iu = new Update()
      .set('status', 'queued')
      .set('attempt', inst.attempt)
      .set('generation', inst.generation)
      .set('retryBase', inst.expect.attempt)
      .set('leaseExpiresAt', null)
      .set('retryAt', null)
      .set('startTime', null)
      .set('endTime', null)
      .set('error', null)
      .set('deferred', null)
      .set('output', null)
      .set('outputKey', null)
      .set('advanceInline', null)
      .set('queuedAt', at)
      .set('updatedAt', at)
      .set(
        'gsi2pk',
        `DUE#QUEUED#${progressShard(`${plan.dagId}#${plan.runId}#${inst.taskId}`, DUE_SHARDS)}`,
      )
      .set('gsi2sk', at);
    if (inst.history) iu.set('history', inst.history);
    const icond = [
      `${iu.name('status')} = ${iu.value(inst.expect.status)}`,
      `${iu.name('attempt')} = ${iu.value(inst.expect.attempt)}`,
      `${iu.name('generation')} = ${iu.value(inst.expect.generation)}`,
      `${iu.name('mapAttempt')} = ${iu.value(mapAttempt)}`,
      `attribute_not_exists(${iu.name('leaseToken')})`,
    ].join(' AND ');
    const shard = mapShard(mapIndex, mapShardCount(mapLength));
    const entry = `${mapIndex}#${inst.expect.generation}`;
    const su = new Update();
    const counted = su.name('counted');
    let scond: string;
    if (inst.counted) {
      su.add('finished', -1).add(COUNTER[inst.counted], -1);
      scond = `contains(${counted}, ${su.value(entry)})`;
    } else {
      // Not counted yet: marked counted, so that its late event counts nothing.
      scond = su.addOnce('counted', [entry]);
    }
    const actions: { Update: ReturnType<Update['input']> }[] = [
      {
        Update: iu.input(this.table, keys.task(plan.dagId, plan.runId, inst.taskId), icond),
      },
      {
        Update: su.input(
          this.table,
          mapShardKey(plan.dagId, plan.runId, inst.parentTaskId, mapAttempt, shard),
          scond,
        ),
      },
    ];
    if (inst.waiting) {
      const pu = new Update()
        .delete('mapDone', new Set([`${mapAttempt}#${shard}`]))
        // An end of the mapped task computed from counts read before this is refused.
        .add('mapEpoch', 1)
        .set('updatedAt', at);
      const pcond = [
        `${pu.name('status')} = ${pu.value('running')}`,
        `${pu.name('attempt')} = ${pu.value(mapAttempt)}`,
        `${pu.name('mapAttempt')} = ${pu.value(mapAttempt)}`,
        `attribute_not_exists(${pu.name('leaseToken')})`,
      ].join(' AND ');
      actions.push({
        Update: pu.input(this.table, keys.task(plan.dagId, plan.runId, inst.parentTaskId), pcond),
      });
    }
    return actions;
  }

  async mapOutcomeCounted(
    instance: TaskKey,
    mapIndex: number,
    mapAttempt: number,
    mapLength: number,
    generation: number,
  ): Promise<boolean> {
    const shard = mapShard(mapIndex, mapShardCount(mapLength));
    const item = await this.#get(
      mapShardKey(instance.dagId, instance.runId, baseTaskId(instance.taskId), mapAttempt, shard),
    );
    const counted = item?.counted as Set<string> | undefined;
    return counted?.has(`${mapIndex}#${generation}`) === true;
  }

  async countUse(name: string, max: number): Promise<boolean> {
    const u = new Update().add('uses', 1);
    const uses = u.name('uses');
    const cond = `attribute_not_exists(${uses}) OR ${uses} < ${u.value(max)}`;
    try {
      await this.#update(u.input(this.table, keys.use(name), cond), `use ${name}`);
      return true;
    } catch (e) {
      if (e instanceof ConflictError) return false;
      throw e;
    }
  }

  async putDeferral(name: string, ref: AttemptRef): Promise<void> {
    const { dagId, runId, taskId, attempt } = ref;
    await aws('putDeferral', () =>
      this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { ...keys.deferral(name), type: 'DEFERRAL', dagId, runId, taskId, attempt },
        }),
      ),
    );
  }

  async getDeferral(name: string): Promise<AttemptRef | undefined> {
    const i = await this.#get(keys.deferral(name));
    return i
      ? {
          dagId: i.dagId as string,
          runId: i.runId as string,
          taskId: i.taskId as string,
          attempt: num(i.attempt),
        }
      : undefined;
  }

  async findExpiredLeases(now: Date, limit: number): Promise<TaskInstanceRecord[]> {
    // Attempts claimed since they were queued are still under the queued key (a claim leaves
    // the index alone): move them to their lease first, so that none is missed, however many
    // attempts wait queued ahead of them.
    await this.#moveClaimedToLease(await this.#claimedUnderQueuedKey(now));
    return this.#due('LEASE', now, limit);
  }

  async findQueuedBefore(before: Date, limit: number): Promise<TaskInstanceRecord[]> {
    const items = await this.#dueItems('QUEUED', before, limit);
    await this.#moveClaimedToLease(items);
    return items.filter((i) => i.status === 'queued').map(toTask);
  }

  /**
   * The claimed attempts still under the queued key, queued before `now`: every shard read
   * through, filtered on the status (a bounded number of pages a shard, each up to 1 MB).
   */
  async #claimedUnderQueuedKey(now: Date): Promise<Item[]> {
    const out: Item[] = [];
    for (let shard = 0; shard < DUE_SHARDS; shard++) {
      const items = await this.#queryAll('find claimed attempts', 10, {
        IndexName: GSI2,
        KeyConditionExpression: 'gsi2pk = :p AND gsi2sk < :t',
        FilterExpression: '#s = :running',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: {
          ':p': `DUE#QUEUED#${shard}`,
          ':t': now.toISOString(),
          ':running': 'running',
        },
      });
      out.push(...items);
    }
    return out;
  }

  /**
   * Moves the index entries of attempts that were claimed (and so left under the queued key)
   * to their lease expiry, where the reaper looks for dead workers. Conditional on the claim
   * still holding: an attempt that moved on meanwhile has its entry set by that write.
   */
  async #moveClaimedToLease(items: readonly Item[]): Promise<void> {
    for (const i of items) {
      if (i.status !== 'running' || typeof i.leaseExpiresAt !== 'string') continue;
      const ti = toTask(i);
      const shard = progressShard(`${ti.dagId}#${ti.runId}#${ti.taskId}`, DUE_SHARDS);
      const u = new Update().set('gsi2pk', `DUE#LEASE#${shard}`).set('gsi2sk', i.leaseExpiresAt);
      const cond = [
        `${u.name('status')} = ${u.value('running')}`,
        `${u.name('leaseToken')} = ${u.value(i.leaseToken)}`,
        `${u.name('gsi2pk')} = ${u.value(i.gsi2pk)}`,
      ].join(' AND ');
      await this.#update(
        u.input(this.table, keys.task(ti.dagId, ti.runId, ti.taskId), cond),
        'index a claimed attempt by its lease',
      ).catch((e: unknown) => {
        if (!(e instanceof ConflictError) && !(e instanceof NotFoundError)) throw e;
      });
    }
  }

  async findRetriesDue(now: Date, limit: number): Promise<TaskInstanceRecord[]> {
    return this.#due('RETRY', now, limit);
  }

  async #due(kind: string, before: Date, limit: number): Promise<TaskInstanceRecord[]> {
    return (await this.#dueItems(kind, before, limit)).map(toTask);
  }

  async #dueItems(kind: string, before: Date, limit: number): Promise<Item[]> {
    const out: Item[] = [];
    for (let shard = 0; shard < DUE_SHARDS && out.length < limit; shard++) {
      const res = await aws(`find ${kind}`, () =>
        this.db.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: GSI2,
            KeyConditionExpression: 'gsi2pk = :p AND gsi2sk < :t',
            ExpressionAttributeValues: { ':p': `DUE#${kind}#${shard}`, ':t': before.toISOString() },
            Limit: limit - out.length,
          }),
        ),
      );
      out.push(...(res.Items ?? []));
    }
    return out;
  }

  async finishedTasks(dagId: string, runId: string): Promise<ReadonlySet<string>> {
    // At most 32 shards: a few pages of 1 MB even for the largest run.
    const items = await this.#queryAll('finished tasks', 100, {
      KeyConditionExpression: 'pk = :p AND begins_with(sk, :s)',
      ExpressionAttributeValues: { ':p': keys.run(dagId, runId).pk, ':s': 'PROGRESS#' },
      ProjectionExpression: 'doneTasks',
      ConsistentRead: true,
    });
    return new Set(items.flatMap((i) => [...((i.doneTasks as Set<string> | undefined) ?? [])]));
  }

  /** Every item a query answers, page after page, at most `maxPages` pages of 1 MB. */
  async #queryAll(
    what: string,
    maxPages: number,
    query: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>,
    /** Throw rather than answer part of the items when there are more than `maxPages` pages. */
    strict = false,
  ): Promise<Item[]> {
    const out: Item[] = [];
    let start: Record<string, unknown> | undefined;
    for (let page = 0; page < maxPages; page++) {
      const res = await aws(what, () =>
        this.db.send(
          new QueryCommand({
            TableName: this.table,
            ...query,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        ),
      );
      out.push(...(res.Items ?? []));
      start = res.LastEvaluatedKey;
      if (!start) break;
    }
    if (start && strict) throw new Error(`${what}: more than ${maxPages} pages`);
    return out;
  }

  async #progress(dagId: string, runId: string): Promise<RunProgress & { clears: number }> {
    // The progress shards and the run item (`PROGRESS#…` < `RUN` < `TI#…`) in one read: the
    // run's clear count goes with the progress it was read with.
    const res = await aws('run progress', () =>
      this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :p AND sk BETWEEN :s AND :r',
          ExpressionAttributeValues: {
            ':p': keys.run(dagId, runId).pk,
            ':s': 'PROGRESS#',
            ':r': 'RUN',
          },
          ProjectionExpression: 'sk, #t, finished, succeeded, clears',
          ExpressionAttributeNames: { '#t': 'total' },
          // Strongly consistent: of two tasks that finish together, the later read sees both.
          ConsistentRead: true,
        }),
      ),
    );
    const p = { total: 0, finished: 0, succeeded: 0, clears: 0 };
    for (const i of res.Items ?? []) {
      if (i.sk === 'RUN') {
        p.clears = num(i.clears);
      } else {
        p.total += num(i.total);
        p.finished += num(i.finished);
        p.succeeded += num(i.succeeded);
      }
    }
    return p;
  }

  async #get(key: Item, consistent = true): Promise<Item | undefined> {
    const res = await aws('get', () =>
      this.db.send(new GetCommand({ TableName: this.table, Key: key, ConsistentRead: consistent })),
    );
    return res.Item;
  }

  /**
   * One UpdateItem returning the new item. A failed condition throws ConflictError carrying the
   * item as it is now (mapped by `current`), or NotFoundError when there is no item at all.
   */
  async #update(
    input: ReturnType<Update['input']>,
    what: string,
    current: (i: Item) => unknown = (i) => i,
    statement?: Statement,
  ): Promise<Item> {
    if (statement) return this.#batched.run({ input, statement, what, current });
    return this.#updateItem(input, what, current);
  }

  /**
   * Updates made in one turn of the event loop, to different items, whose records the stream
   * has no use for (its filter drops them: lib/airless-scheduler.ts), go out together
   * (Batcher): a worker's claims of a batch's tasks, then their successes; a fan-out's root
   * queueing its downstream tasks. The emulator emits no stream record for a PartiQL write.
   */
  readonly #batched = new Batcher<BatchedUpdate, Item>(
    (ops) => this.#updateAll(ops),
    BATCH_MAX,
    BATCHES_IN_FLIGHT,
  );

  async #updateAll(ops: readonly BatchedUpdate[]): Promise<PromiseSettledResult<Item>[]> {
    const results: PromiseSettledResult<Item>[] = [];
    const alone = async (i: number) => {
      const op = ops[i] as BatchedUpdate;
      results[i] = await settle(this.#updateItem(op.input, op.what, op.current));
    };
    // One statement a request for an item: a second write to it goes on its own.
    const items = new Set<string>();
    const together: number[] = [];
    const rest: number[] = [];
    ops.forEach(({ statement: { key } }, i) => {
      const id = `${key.pk}\n${key.sk}`;
      (items.has(id) ? rest : together).push(i);
      items.add(id);
    });
    if (together.length < 2) {
      await Promise.all(ops.map((_, i) => alone(i)));
      return results;
    }
    let answers: BatchStatementResponse[];
    try {
      const res = await aws('batch of updates', () =>
        this.db.send(
          new BatchExecuteStatementCommand({
            Statements: together.map((i) => {
              const { statement } = ops[i] as BatchedUpdate;
              return {
                Statement: statement.statement,
                Parameters: statement.parameters,
                ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
              };
            }),
          }),
        ),
      );
      answers = res.Responses ?? [];
      if (answers.length !== together.length) throw new Error('an answer for each statement');
    } catch (e) {
      // Each on its own then (the SDK retried the request already). One that did land is
      // refused by its condition, and answered with the item as it is, as a retry of it would be.
      warnOnce(`a batch of updates failed (${(e as Error).name})`, (e as Error).message);
      await Promise.all(ops.map((_, i) => alone(i)));
      return results;
    }
    /** Written, but the answer gives no item to work from: the item as it now is. */
    const read = async (i: number, op: BatchedUpdate) => {
      const item = await settle(this.#get(op.statement.key));
      results[i] =
        item.status === 'rejected'
          ? item
          : item.value
            ? { status: 'fulfilled', value: item.value }
            : { status: 'rejected', reason: new NotFoundError(`${op.what}: not found`) };
    };
    await Promise.all([
      ...rest.map(alone),
      ...together.map(async (i, n) => {
        const op = ops[i] as BatchedUpdate;
        const { Error: error, Item: before } = answers[n] as BatchStatementResponse;
        if (error?.Code === 'ConditionalCheckFailed') {
          results[i] = {
            status: 'rejected',
            reason: error.Item
              ? new ConflictError(`${op.what}: the item changed first`, op.current(error.Item))
              : new NotFoundError(`${op.what}: not found`),
          };
        } else if (error) {
          // Throttled, or anything else that did not write: on its own, with the SDK's retries;
          // worse but right, so say why, once a reason.
          warnOnce(`a batched update was refused (${error.Code})`, error.Message);
          await alone(i);
        } else if (before) {
          try {
            const after = changed(before, op.statement.changes);
            const units = writeUnits(before, after);
            countWriteUnits(op.statement.key, units.table, units.index);
            results[i] = { status: 'fulfilled', value: after };
          } catch {
            await read(i, op);
          }
        } else await read(i, op);
      }),
    ]);
    return results;
  }

  async #updateItem(
    input: ReturnType<Update['input']>,
    what: string,
    current: (i: Item) => unknown,
  ): Promise<Item> {
    const res = await aws(what, () =>
      this.db.send(
        new UpdateCommand({
          ...input,
          ReturnValues: 'ALL_NEW',
          ...(input.ConditionExpression ? { ReturnValuesOnConditionCheckFailure: 'ALL_OLD' } : {}),
        }),
      ),
    ).catch((e: unknown) => {
      if (!(e instanceof ConflictError)) throw e;
      if (e.current === undefined) throw new NotFoundError(`${what}: not found`, { cause: e });
      // The document client leaves the item of a failed condition marshalled.
      const item = unmarshall(e.current as Record<string, AttributeValue>);
      throw new ConflictError(e.message, current(item), { cause: e.cause });
    });
    return res.Attributes as Item;
  }

  async #page<T>(
    query: Omit<QueryCommandInput, 'TableName'>,
    page: PageRequest,
    map: (i: Item) => T,
  ): Promise<Page<T>> {
    const limit = Math.min(Math.max(page.limit ?? 50, 1), 1000);
    const start = decodeToken(page.nextToken);
    const res = await aws('query', () =>
      this.db.send(
        new QueryCommand({
          ...query,
          TableName: this.table,
          Limit: limit,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      ),
    ).catch((e: unknown) => {
      // A token that decodes but names another query's keys: DynamoDB refuses the start key.
      if (start && (e as Error).name === 'ValidationException') {
        throw new ValidationError([
          { path: 'nextToken', message: 'is not a token this API returned' },
        ]);
      }
      throw e;
    });
    const nextToken = encodeToken(res.LastEvaluatedKey);
    return { items: (res.Items ?? []).map(map), ...(nextToken ? { nextToken } : {}) };
  }

  /** Puts each item that does not exist yet, leaving those that do as they are. */
  async #putMissing(items: Item[]): Promise<void> {
    for (let i = 0; i < items.length; i += 10) {
      await Promise.all(
        items.slice(i, i + 10).map(async (Item) => {
          try {
            await aws('put missing', () =>
              this.db.send(
                new PutCommand({
                  TableName: this.table,
                  Item,
                  ConditionExpression: 'attribute_not_exists(pk)',
                }),
              ),
            );
          } catch (e) {
            if (!(e instanceof ConflictError)) throw e;
          }
        }),
      );
    }
  }

  async #batchPut(items: Item[]): Promise<void> {
    const chunks: Item[][] = [];
    for (let i = 0; i < items.length; i += 25) chunks.push(items.slice(i, i + 25));
    // A few batches at a time: enough to be quick, few enough not to provoke throttling.
    for (let i = 0; i < chunks.length; i += 4) {
      await Promise.all(chunks.slice(i, i + 4).map((c) => this.#batchPutChunk(c)));
    }
  }

  async #batchPutChunk(items: Item[]): Promise<void> {
    let pending = items.map((Item) => ({ PutRequest: { Item } }));
    // BatchWriteItem may leave items unprocessed under load; retry those with backoff.
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt >= 8) throw new Error(`createRun: ${pending.length} items stayed unprocessed`);
      if (attempt > 0) await sleep(Math.min(1000, 50 * 2 ** attempt));
      const res = await aws('createRun batch', () =>
        this.db.send(new BatchWriteCommand({ RequestItems: { [this.table]: pending } })),
      );
      pending = (res.UnprocessedItems?.[this.table] ?? []) as typeof pending;
    }
  }
}
