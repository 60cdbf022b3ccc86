import { createHash } from 'node:crypto';
import { compileSchedule } from '../core/cron/index.ts';
import type { TaskGraph } from '../core/dag/graph.ts';
import { type Dag, ID_PATTERN, LAMBDA_MAX_TIMEOUT_SECONDS } from '../core/dag/schema.ts';
import { type ValidationResult, validateDagText } from '../core/dag/validate.ts';
import { type Issue, NotFoundError, ValidationError } from '../core/errors.ts';
import type { DagVersionRecord } from '../core/ports.ts';
import { uncountedTasks } from '../core/readiness/index.ts';
import { catchUp } from './catchup.ts';
import type { Deps } from './deps.ts';
import { missingPools, type Warning } from './pools.ts';

export interface LoadedDag {
  readonly version: DagVersionRecord;
  readonly dag: Dag;
  readonly graph: TaskGraph;
  readonly tasks: ReadonlyMap<string, Dag['tasks'][number]>;
  /** The tasks whose success its runs' progress does not count (core/readiness). */
  readonly uncounted: ReadonlySet<string>;
}

// A DAG version never changes, so a container keeps each one it has read. Bounded, oldest out.
const cache = new Map<string, LoadedDag>();
const CACHE_SIZE = 200;

/** A stored DAG version, validated and indexed; read once per container. */
export async function loadDag(deps: Deps, dagId: string, version: number): Promise<LoadedDag> {
  const id = `${dagId}@${version}`;
  const hit = cache.get(id);
  if (hit) return hit;
  const record = await deps.store.getDagVersion(dagId, version);
  if (!record) throw new NotFoundError(`DAG ${dagId} has no version ${version}`);
  const text = await deps.blobs.getDagDocument(record.sourceKey);
  if (text === undefined)
    throw new NotFoundError(`DAG ${dagId} version ${version} document is missing`);
  // Registration checked the upload's size; the stored, normalized form may be larger.
  const r = validateDagText(text, {
    operators: deps.operators.schemas(),
    maxBytes: Number.POSITIVE_INFINITY,
    stored: true,
  });
  if (!r.ok) throw new ValidationError(r.issues);
  const loaded = {
    version: record,
    dag: r.dag,
    graph: r.graph,
    tasks: new Map(r.dag.tasks.map((t) => [t.taskId, t])),
    uncounted: uncountedTasks(r.dag.tasks, r.graph),
  };
  cache.set(id, loaded);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  return loaded;
}

/** The latest version of a DAG that exists and is not deleted. */
export async function loadLatestDag(deps: Deps, dagId: string): Promise<LoadedDag> {
  const meta = await deps.store.getDag(dagId);
  if (!meta || meta.deleted) throw new NotFoundError(`DAG ${dagId} not found`);
  return loadDag(deps, dagId, meta.latestVersion);
}

/** Validates a DAG document against this deployment's operators; writes nothing. */
export function validateDocument(deps: Deps, text: string): ValidationResult {
  const r = validateDagText(text, { operators: deps.operators.schemas() });
  if (!r.ok) return r;
  const issues = unrunnableIssues(deps, r.dag);
  return issues.length > 0 ? { ok: false, issues } : r;
}

/**
 * What the format accepts but this deployment cannot run: an operator with no runner here, a
 * `fargate` task where there are no Fargate workers. Refused at registration, with a message,
 * instead of failing every attempt at run time. One issue per operator or executor, at its
 * first task, with the count: a 10,000-task DAG gets one line, not 10,000.
 */
function unrunnableIssues(deps: Deps, dag: Dag): Issue[] {
  const runs = `it runs ${deps.operators.names().join(', ')}`;
  const noFargate = `it has no Fargate workers; use "lambda" with a timeoutSeconds of at most ${LAMBDA_MAX_TIMEOUT_SECONDS}`;
  // By what cannot run: its first task, and how many tasks ask for it.
  const first = new Map<string, { path: string; why: string; count: number }>();
  const note = (what: string, path: string, why: string) => {
    const seen = first.get(what);
    if (seen) seen.count++;
    else first.set(what, { path, why, count: 1 });
  };
  dag.tasks.forEach((t, i) => {
    const operator = deps.operators.get(t.operator);
    if (!operator) {
      note(`operator "${t.operator}"`, `$.tasks[${i}].operator`, runs);
    } else if (operator.refuses) {
      // What this deployment may touch: a state machine or task definition it was not granted.
      const config = operator.config.safeParse(t.config);
      const why = config.success ? operator.refuses(config.data) : undefined;
      if (why) note(`${t.operator} config`, `$.tasks[${i}].config`, why);
    }
    if (t.executor === 'fargate' && !deps.fargate) {
      note('executor "fargate"', `$.tasks[${i}].executor`, noFargate);
    }
  });
  return [...first].map(([what, { path, why, count }]) => ({
    path,
    message: `${what} cannot run in this deployment${count > 1 ? ` (${count} tasks)` : ''}: ${why}`,
  }));
}

export type RegisterResult =
  | {
      readonly ok: true;
      readonly dagId: string;
      readonly version: number;
      readonly created: boolean;
      /** What was accepted but will not run as it stands (a pool that does not exist). */
      readonly warnings: readonly Warning[];
    }
  | { readonly ok: false; readonly dagId?: string; readonly issues: ValidationError['issues'] };

/** The most issues an import error keeps: the list must fit in one item, whatever the file. */
export const MAX_IMPORT_ISSUES = 50;

/** The first issues, each bounded, and a last line that counts the rest. */
export function boundIssues(issues: readonly Issue[]): Issue[] {
  const cut = (t: string, n: number) => (t.length <= n ? t : `${t.slice(0, n - 1)}…`);
  const kept = issues
    .slice(0, MAX_IMPORT_ISSUES)
    .map((i) => ({ path: cut(i.path, 300), message: cut(i.message, 500) }));
  if (issues.length > MAX_IMPORT_ISSUES) {
    kept.push({ path: '$', message: `and ${issues.length - MAX_IMPORT_ISSUES} more problems` });
  }
  return kept;
}

/** The `dagId` of a document that failed validation, if it has a readable one. */
function dagIdOf(text: string): string | undefined {
  try {
    const v = JSON.parse(text) as { dagId?: unknown };
    return typeof v?.dagId === 'string' && ID_PATTERN.test(v.dagId) ? v.dagId : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Validates a DAG document and, if valid, stores it as a new version (unless it is unchanged)
 * and creates, updates or removes its schedule. The registrar (for files under `dags/`) and
 * `POST /v1/dags` both come here. Nothing is written for an invalid document.
 */
export async function registerDag(
  deps: Deps,
  text: string,
  r: ValidationResult = validateDocument(deps, text),
  /** The DAG file it comes from (`dags/…`): two files may not declare one dagId. */
  fileKey?: string,
): Promise<RegisterResult> {
  if (!r.ok) {
    const dagId = dagIdOf(text);
    return { ok: false, ...(dagId ? { dagId } : {}), issues: r.issues };
  }
  const { dag } = r;
  // Store the normalized document: workers then read exactly what was validated.
  const document = JSON.stringify({ ...dag });
  const sha256 = createHash('sha256').update(document).digest('hex');
  const sourceKey = await deps.blobs.putDagDocument(dag.dagId, sha256, document);
  const compiled = dag.schedule
    ? compileSchedule(dag.schedule.cron, dag.schedule.timezone)
    : undefined;
  if (compiled && !compiled.ok) throw new ValidationError(compiled.issues);
  const schedule =
    compiled && dag.schedule
      ? { cron: dag.schedule.cron, timezone: compiled.timezone, expression: compiled.expression }
      : undefined;
  const { version, created } = await deps.store.putDagVersion({
    dagId: dag.dagId,
    sourceKey,
    sha256,
    taskCount: dag.tasks.length,
    fileKey,
    description: dag.description,
    owner: dag.owner,
    schedule,
    at: deps.clock(),
  });
  if (schedule) {
    const spec = { dagId: dag.dagId, expression: schedule.expression, timezone: schedule.timezone };
    const paused = (await deps.store.getDag(dag.dagId))?.paused ?? false;
    await deps.schedules.put({ ...spec, enabled: !paused });
    // A pause can land between that read and the put (the registrar runs on its own after an
    // upload, beside the API), and the put would undo it. Reading again afterwards settles it:
    // a pause written after this read also disables the schedule after this put.
    const now = (await deps.store.getDag(dag.dagId))?.paused ?? false;
    if (now !== paused) await deps.schedules.setEnabled(dag.dagId, !now);
  } else {
    await deps.schedules.delete(dag.dagId);
  }
  // The scheduled times it missed (app/catchup.ts): a new DAG with a start date in the past,
  // or a new version after times its schedule did not fire.
  // Best effort: the version is registered whatever becomes of it (a failure is logged, and an
  // unpause catches up again).
  if (created && schedule) {
    await catchUp(deps, dag.dagId).catch((e: unknown) => {
      console.error(`could not catch up ${dag.dagId}: ${(e as Error).message}`);
    });
  }
  // Best effort too: the version is registered, whatever a look at its pools meets.
  const warnings = await missingPools(deps, dag, text).catch((e: unknown) => {
    console.error(`could not look at the pools of ${dag.dagId}: ${(e as Error).message}`);
    return [];
  });
  return { ok: true, dagId: dag.dagId, version: version.version, created, warnings };
}

/**
 * A DAG file was removed from `dags/`: its DAG goes, as with DELETE (history kept), unless the
 * DAG has since come from elsewhere. Answers the DAG removed, if any.
 */
export async function unregisterDagFile(deps: Deps, fileKey: string): Promise<string | undefined> {
  const dagId = await deps.store.dagOfFile(fileKey);
  if (!dagId) return undefined;
  const dag = await deps.store.getDag(dagId);
  if (!dag || dag.deleted || dag.fileKey !== fileKey) return undefined;
  await deleteDag(deps, dagId);
  return dagId;
}

/** Removes a DAG and its schedule; its versions and runs are kept. */
export async function deleteDag(deps: Deps, dagId: string): Promise<void> {
  await deps.schedules.delete(dagId);
  await deps.store.markDagDeleted(dagId, deps.clock());
}
