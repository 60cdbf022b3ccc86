import { compileSchedule, nextRuns } from '../core/cron/index.ts';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';
import type { BackfillRecord } from '../core/ports.ts';
import { isTerminalRun, scheduledRunId } from '../core/state/index.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { triggerRun } from './runs.ts';

/** The most runs one backfill may create, unless the deployment says otherwise. */
export const DEFAULT_MAX_BACKFILL_RUNS = 10_000;
/** Runs created in the request that asks for a backfill; the reaper goes on with the rest. */
export const BACKFILL_FIRST_CHUNK = 25;
/** Runs the reaper creates for one backfill in one pass. */
export const BACKFILL_REAPER_CHUNK = 200;

export interface BackfillView {
  readonly backfillId: string;
  readonly dagId: string;
  readonly from: string;
  readonly to: string;
  /** The runs of the range's scheduled times, whether the backfill created them or not. */
  readonly runs: number;
  /** How many of them it created (the others existed already). */
  readonly created: number;
  /** How many of them have ended. */
  readonly done: number;
  /**
   * `running` until every run is created and has ended; then `success`, or `failed` if any run
   * did not succeed; `stopped` if it ended before creating them all (its DAG deleted).
   */
  readonly status: 'running' | 'success' | 'failed' | 'stopped';
}

/** The DAG's schedule, for its scheduled times; a DAG without one has nothing to backfill. */
async function scheduleOf(deps: Deps, dagId: string) {
  const meta = await deps.store.getDag(dagId);
  if (!meta || meta.deleted) throw new NotFoundError(`DAG ${dagId} not found`);
  const { dag } = await loadDag(deps, dagId, meta.latestVersion);
  if (!dag.schedule) {
    throw new ValidationError([
      { path: '$', message: `DAG ${dagId} has no schedule: it has no scheduled times to backfill` },
    ]);
  }
  return compiled(dag.schedule.cron, dag.schedule.timezone);
}

function compiled(cron: string, timezone: string) {
  const c = compileSchedule(cron, timezone);
  if (!c.ok) throw new ValidationError(c.issues);
  return { ...c, cron };
}

/** The scheduled times in `[from, to]`, at most `n` of them, from `from` on. */
function timesIn(
  schedule: { spec: Parameters<typeof nextRuns>[0]; timezone: string },
  from: Date,
  to: Date,
  n: number,
): Date[] {
  return nextRuns(schedule.spec, schedule.timezone, new Date(from.getTime() - 1), n, to);
}

/**
 * Creates a backfill (DESIGN.md section 11): the run of each scheduled time of the DAG in
 * `[from, to]`, under the run id a scheduled run of that time has, so that a time with a run
 * already is left alone and a repeated backfill creates nothing. `maxActiveRuns` holds the runs
 * `queued` and starts them oldest first. The first runs are created here; the reaper creates the
 * rest, a chunk a pass, from the backfill's cursor, so that no invocation runs long and a crash
 * loses nothing.
 */
export async function createBackfill(
  deps: Deps,
  dagId: string,
  range: { readonly from: Date; readonly to: Date },
  maxRuns = DEFAULT_MAX_BACKFILL_RUNS,
): Promise<BackfillRecord> {
  const now = deps.clock();
  if (range.to.getTime() > now.getTime()) {
    // A future time would get its run now, under the id its scheduled fire will find.
    throw new ValidationError([
      { path: '$.to', message: `must not be in the future (it is now ${now.toISOString()})` },
    ]);
  }
  if (range.to.getTime() < range.from.getTime()) {
    throw new ValidationError([
      { path: '$.to', message: `must not be earlier than "from" (${range.from.toISOString()})` },
    ]);
  }
  const schedule = await scheduleOf(deps, dagId);
  const times = timesIn(schedule, range.from, range.to, maxRuns + 1);
  if (times.length > maxRuns) {
    throw new ValidationError([
      {
        path: '$.to',
        message: `the range holds more than ${maxRuns} scheduled times (the most one backfill may create): split it`,
      },
    ]);
  }
  const backfill: BackfillRecord = {
    dagId,
    backfillId: `bf_${now.toISOString().replace(/[-:.]/g, '')}_${deps.newId().slice(0, 8)}`,
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    runs: times.length,
    created: 0,
    cursor: times[0]?.toISOString() ?? null,
    createdAt: now.toISOString(),
    cron: schedule.cron,
    timezone: schedule.timezone,
  };
  await deps.store.putBackfill(backfill);
  return continueBackfill(deps, backfill, BACKFILL_FIRST_CHUNK);
}

/**
 * Creates up to `chunk` more runs of a backfill from its cursor, then moves the cursor on. Safe
 * to repeat and to race: a run created twice is found the second time, and a cursor moved by
 * someone else refuses this one's move (the runs it created stand).
 */
export async function continueBackfill(
  deps: Deps,
  backfill: BackfillRecord,
  chunk: number,
): Promise<BackfillRecord> {
  if (backfill.cursor === null) return backfill;
  const schedule = compiled(backfill.cron, backfill.timezone);
  const to = new Date(backfill.to);
  // One more than the chunk: the time after it is the next cursor.
  const times = timesIn(schedule, new Date(backfill.cursor), to, chunk + 1);
  let created = 0;
  for (const t of times.slice(0, chunk)) {
    if ((await triggerRun(deps, { dagId: backfill.dagId, scheduledTime: t })).created) created++;
  }
  const next = times[chunk]?.toISOString() ?? null;
  try {
    return await deps.store.advanceBackfill(
      backfill.dagId,
      backfill.backfillId,
      backfill.cursor,
      next,
      created,
    );
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return (await deps.store.getBackfill(backfill.dagId, backfill.backfillId)) ?? backfill;
  }
}

/** The reaper's part: goes on with the backfills still creating runs, at most `budget` runs a pass. */
export async function continueBackfills(
  deps: Deps,
  limit: number,
  budget = 2 * BACKFILL_REAPER_CHUNK,
): Promise<number> {
  let created = 0;
  let left = budget;
  for (const listed of await deps.store.listCreatingBackfills(limit)) {
    if (left <= 0) break;
    // The listing is an index, read eventually: read the backfill itself.
    const b = await deps.store.getBackfill(listed.dagId, listed.backfillId);
    if (!b || b.cursor === null) continue;
    const chunk = Math.min(BACKFILL_REAPER_CHUNK, left);
    left -= chunk;
    try {
      const after = await continueBackfill(deps, b, chunk);
      created += after.created - b.created;
    } catch (e) {
      // The DAG deleted since: nothing more to create (the view says the backfill was stopped).
      if (!(e instanceof NotFoundError) && !(e instanceof ValidationError)) throw e;
      await deps.store
        .advanceBackfill(b.dagId, b.backfillId, b.cursor, null, 0)
        .catch((inner: unknown) => {
          if (!(inner instanceof ConflictError)) throw inner;
        });
    }
  }
  return created;
}

/** A backfill as the API shows it: with how many of its runs have ended, and how. */
export async function backfillView(
  deps: Deps,
  dagId: string,
  backfillId: string,
): Promise<BackfillView> {
  const b = await deps.store.getBackfill(dagId, backfillId);
  if (!b) throw new NotFoundError(`backfill ${backfillId} of DAG ${dagId} not found`);
  // Its own runs: those of its times, found by their scheduled run ids (the range may hold runs
  // of the DAG's earlier schedules, and manual runs).
  const schedule = compiled(b.cron, b.timezone);
  const ids = new Set(
    timesIn(schedule, new Date(b.from), new Date(b.to), b.runs).map((t) => scheduledRunId(t)),
  );
  let exist = 0;
  let done = 0;
  let failed = 0;
  let nextToken: string | undefined;
  for (let page = 0; page < 100; page++) {
    const res = await deps.store.listRuns(
      dagId,
      { limit: 1000, nextToken },
      { from: b.from, to: b.to },
    );
    for (const r of res.items) {
      if (!ids.has(r.runId)) continue;
      exist++;
      if (isTerminalRun(r.status)) {
        done++;
        if (r.status !== 'success') failed++;
      }
    }
    nextToken = res.nextToken;
    if (!nextToken) break;
  }
  // Stopped before creating every run (its DAG deleted): it will not go on.
  const stopped = b.cursor === null && exist < ids.size;
  const ended = b.cursor === null && done >= exist;
  return {
    backfillId: b.backfillId,
    dagId,
    from: b.from,
    to: b.to,
    runs: b.runs,
    created: b.created,
    done,
    status: stopped ? 'stopped' : !ended ? 'running' : failed > 0 ? 'failed' : 'success',
  };
}
