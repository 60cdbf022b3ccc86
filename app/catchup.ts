import { compileSchedule, nextRuns, previousRun } from '../core/cron/index.ts';
import { createBackfill, DEFAULT_MAX_BACKFILL_RUNS } from './backfills.ts';
import { loadDag } from './dags.ts';
import type { Deps } from './deps.ts';
import { triggerRun } from './runs.ts';

/** Pages of runs read, newest first, looking for the DAG's latest scheduled run. */
const LATEST_RUN_PAGES = 5;

export interface CatchUp {
  /** The scheduled times missed, as far as it looked. */
  readonly missed: number;
  /** With catchup: the backfill that creates their runs. */
  readonly backfillId?: string;
  /** Without: the run of the latest missed time. */
  readonly runId?: string;
}

/**
 * Catchup (DESIGN.md section 11), when a DAG is registered or unpaused: the scheduled times
 * missed since the later of `schedule.startDate` and its latest scheduled run, up to now. With
 * `catchup: true`, every one of them gets its run, through a backfill (created a chunk at a
 * time; `maxActiveRuns` holds them `queued`, oldest first); with `catchup: false`, only the
 * latest, as in Airflow. A DAG with neither a start date nor a scheduled run has missed nothing.
 * At most `maxRuns` times are caught up: the latest ones. Safe to repeat: runs are found by their
 * scheduled run ids.
 */
export async function catchUp(
  deps: Deps,
  dagId: string,
  maxRuns = DEFAULT_MAX_BACKFILL_RUNS,
): Promise<CatchUp> {
  const meta = await deps.store.getDag(dagId);
  if (!meta || meta.deleted || meta.paused) return { missed: 0 };
  const { dag } = await loadDag(deps, dagId, meta.latestVersion);
  if (!dag.schedule) return { missed: 0 };
  const compiled = compileSchedule(dag.schedule.cron, dag.schedule.timezone);
  if (!compiled.ok) return { missed: 0 };
  const now = deps.clock();

  let latest: Date | undefined;
  let nextToken: string | undefined;
  for (let page = 0; page < LATEST_RUN_PAGES && !latest; page++) {
    const res = await deps.store.listRuns(dagId, { limit: 100, nextToken });
    const run = res.items.find((r) => r.kind === 'scheduled');
    if (run) latest = new Date(run.logicalDate);
    nextToken = res.nextToken;
    if (!nextToken) break;
  }
  const start = dag.schedule.startDate ? new Date(dag.schedule.startDate) : undefined;
  const candidates = [start, latest && new Date(latest.getTime() + 1)].filter(
    (d): d is Date => d !== undefined,
  );
  if (candidates.length === 0) return { missed: 0 };
  let from = new Date(Math.max(...candidates.map((d) => d.getTime())));
  if (from.getTime() > now.getTime()) return { missed: 0 };

  if (!dag.schedule.catchup) {
    const last = previousRun(compiled.spec, compiled.timezone, now);
    if (!last || last.getTime() < from.getTime()) return { missed: 0 };
    const { run } = await triggerRun(deps, { dagId, scheduledTime: last });
    return { missed: 1, runId: run.runId };
  }
  const times = nextRuns(
    compiled.spec,
    compiled.timezone,
    new Date(from.getTime() - 1),
    maxRuns + 1,
    now,
  );
  if (times.length === 0) return { missed: 0 };
  if (times.length > maxRuns) {
    // Too many to catch up: the latest maxRuns of them.
    let t: Date | undefined = now;
    for (let i = 0; i < maxRuns && t; i++) {
      const prev: Date | undefined = previousRun(compiled.spec, compiled.timezone, t);
      if (!prev) break;
      from = prev;
      t = new Date(prev.getTime() - 1);
    }
  }
  const backfill = await createBackfill(deps, dagId, { from, to: now }, maxRuns);
  return { missed: backfill.runs, backfillId: backfill.backfillId };
}
