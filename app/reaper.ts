import { Metric } from '../core/metric-names.ts';
import type { TaskMessage } from '../core/ports.ts';
import { continueBackfills } from './backfills.ts';
import { checkDeferred, checkFailed, DEFAULT_CHECK_SECONDS } from './deferred.ts';
import type { Deps } from './deps.ts';
import { reapExpiredLease } from './leases.ts';
import { wakeGates } from './pools.ts';
import {
  CREATION_LEASE_SECONDS,
  queue,
  reconcileRunSlots,
  taskMessage,
  writeRunTasks,
} from './runs.ts';

export interface ReapOptions {
  /** A queued attempt older than this has probably lost its message: send it again. */
  readonly queuedGraceSeconds: number;
  /** A retry this late has probably lost its timer: queue it now. */
  readonly retryGraceSeconds: number;
  /** At most this many of each kind per pass; the next pass takes the rest. */
  readonly limit: number;
  /** A large run still unwritten after this long has lost its writer. */
  readonly creationGraceSeconds?: number;
  /** How long a deferred attempt waits for its end event between the reaper's checks. */
  readonly deferredCheckSeconds?: number;
}

export interface ReapReport {
  readonly expiredLeases: number;
  /** Deferred attempts whose external work the reaper asked about. */
  readonly deferredChecked: number;
  /** Deferred attempts whose check failed (tried again next pass). */
  readonly deferredFailed: number;
  readonly redispatched: number;
  readonly retriesQueued: number;
  readonly runsWritten: number;
  readonly runsStarted: number;
  /** Runs created for backfills still creating theirs. */
  readonly backfillRunsCreated: number;
  /** Attempts waiting at a pool or DAG cap with a free slot, whose wake was lost. */
  readonly waitersWoken: number;
}

/**
 * The reaper's pass, every minute. Queues, streams and workers may lose work; this finds it in
 * the state, which they cannot lose:
 * - running attempts whose lease expired (the worker crashed, hung, or never sent a first
 *   heartbeat): failed, to retry or for good, exactly as a failure the worker reported;
 * - deferred attempts whose end event is late: their external work is asked about
 *   (app/deferred.ts), and stopped once past the task's timeout;
 * - queued attempts whose message was lost: sent again (same attempt, same deduplication id, so a
 *   message that was merely slow is not doubled, and the claim is conditional anyway);
 * - retries whose timer was lost: queued;
 * - backfills still creating runs: a chunk more each (app/backfills.ts);
 * - attempts waiting at a pool or a DAG's maxActiveTasks while it has free slots (their wake
 *   was lost with a worker): woken (app/pools.ts).
 * Every change is a conditional write, so a reaper racing a worker or another reaper is harmless.
 */
export async function reap(deps: Deps, opts: ReapOptions): Promise<ReapReport> {
  const now = deps.clock();
  let expiredLeases = 0;
  let deferredChecked = 0;
  let deferredFailed = 0;
  for (const ti of await deps.store.findExpiredLeases(now, opts.limit)) {
    if (ti.deferred) {
      // Not a dead worker: external work whose end event has not come (yet). One that cannot
      // be checked now (throttled, access denied) is tried again next pass; it holds up no
      // other repair.
      try {
        await checkDeferred(deps, ti, opts.deferredCheckSeconds ?? DEFAULT_CHECK_SECONDS);
        deferredChecked++;
      } catch (e) {
        deferredFailed++;
        deps.metrics?.addMetric(Metric.DeferredCheckFailed, 'Count', 1);
        console.error(
          `could not check deferred work of ${ti.dagId}/${ti.runId}/${ti.taskId}: ${(e as Error).message}`,
        );
        await checkFailed(deps, ti, e, opts.deferredCheckSeconds ?? DEFAULT_CHECK_SECONDS).catch(
          (err: unknown) =>
            console.error(`could not postpone the check: ${(err as Error).message}`),
        );
      }
      continue;
    }
    if (await reapExpiredLease(deps, ti, now)) expiredLeases++;
  }

  const queuedBefore = new Date(now.getTime() - opts.queuedGraceSeconds * 1000);
  const lost: TaskMessage[] = await Promise.all(
    (await deps.store.findQueuedBefore(queuedBefore, opts.limit)).map((ti) =>
      taskMessage(deps, ti, ti.dagVersion),
    ),
  );
  await dispatchOrReport(deps, lost);

  const retryBefore = new Date(now.getTime() - opts.retryGraceSeconds * 1000);
  const due: TaskMessage[] = [];
  for (const ti of await deps.store.findRetriesDue(retryBefore, opts.limit)) {
    const m = await queue(deps, ti, ti.dagVersion, ti);
    if (m) due.push(m);
  }
  await dispatchOrReport(deps, due);

  // Large runs whose writer died before writing every task instance.
  let runsWritten = 0;
  const creationBefore = new Date(
    now.getTime() - (opts.creationGraceSeconds ?? CREATION_LEASE_SECONDS) * 1000,
  );
  for (const run of await deps.store.findUnwrittenRuns(creationBefore, opts.limit)) {
    if ((await writeRunTasks(deps, run.dagId, run.runId)) === 'written') runsWritten++;
  }

  // Runs waiting for a slot whose holder's end was lost (or that nothing started): per DAG,
  // free the slots of ended runs, then start what fits.
  let runsStarted = 0;
  const queuedBefore2 = new Date(now.getTime() - opts.queuedGraceSeconds * 1000);
  const dags = new Set(
    (await deps.store.findQueuedRunsBefore(queuedBefore2, opts.limit)).map((r) => r.dagId),
  );
  for (const dagId of dags) runsStarted += await reconcileRunSlots(deps, dagId);

  // Backfills still creating runs: a chunk more of each.
  const backfillRunsCreated = await continueBackfills(deps, opts.limit);

  // Gates with free slots and waiters: one read per gate, a send only where a wake was lost.
  const waitersWoken = await wakeGates(deps, opts.queuedGraceSeconds, opts.limit);

  return {
    expiredLeases,
    deferredChecked,
    deferredFailed,
    redispatched: lost.length,
    retriesQueued: due.length,
    runsWritten,
    runsStarted,
    backfillRunsCreated,
    waitersWoken,
  };
}

/**
 * Sends the reaper's messages; one it cannot send (a fargate task of a deployment that no longer
 * has Fargate workers) is reported, and holds up none of the pass's other repairs.
 */
async function dispatchOrReport(deps: Deps, messages: TaskMessage[]): Promise<void> {
  try {
    await deps.dispatcher.dispatch(messages);
  } catch (e) {
    console.error(`could not send ${messages.length} task messages: ${(e as Error).message}`);
  }
}
