import type { TaskGraph } from '../dag/graph.ts';
import type { TriggerRule } from '../dag/schema.ts';
import type { RunStatus, TaskStatus } from '../state/index.ts';

/**
 * Readiness: what a downstream task does when one of its upstream tasks finishes.
 *
 * Each task instance keeps a running count of its finished upstream tasks by outcome. A finished
 * task adds itself to the counts of each of its downstream tasks, and each of those decides from
 * its counts alone. So one event costs O(out-degree): no scan of the DAG or the run.
 *
 * The rules are Airflow's (https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/dags.html#trigger-rules):
 * a task is resolved early to `skipped` or `upstream_failed` as soon as its rule can no longer
 * be met, and queued as soon as it is met; `one_success` and `one_failed` do not wait for the
 * other upstream tasks.
 */

/** The finished upstream tasks of one task instance, by outcome. */
export interface UpstreamCounts {
  readonly success: number;
  /** `failed`, and `cancelled`, which no rule treats differently. */
  readonly failed: number;
  readonly upstreamFailed: number;
  readonly skipped: number;
}

export const NO_COUNTS: UpstreamCounts = { success: 0, failed: 0, upstreamFailed: 0, skipped: 0 };

export type Decision = 'wait' | 'queue' | 'skipped' | 'upstream_failed';

/** The counter that an upstream task in `status` adds to, or undefined while it is unfinished. */
export function counterFor(status: TaskStatus): keyof UpstreamCounts | undefined {
  switch (status) {
    case 'success':
      return 'success';
    case 'failed':
    case 'cancelled':
      return 'failed';
    case 'upstream_failed':
      return 'upstreamFailed';
    case 'skipped':
      return 'skipped';
    default:
      return undefined;
  }
}

export function addOutcome(counts: UpstreamCounts, status: TaskStatus): UpstreamCounts {
  const k = counterFor(status);
  return k ? { ...counts, [k]: counts[k] + 1 } : counts;
}

/** Two sets of counts together. */
export function addCounts(a: UpstreamCounts, b: UpstreamCounts): UpstreamCounts {
  return {
    success: a.success + b.success,
    failed: a.failed + b.failed,
    upstreamFailed: a.upstreamFailed + b.upstreamFailed,
    skipped: a.skipped + b.skipped,
  };
}

/** Counts from a full list of upstream statuses (run creation, clear). O(in-degree). */
export function countUpstream(statuses: readonly TaskStatus[]): UpstreamCounts {
  return statuses.reduce(addOutcome, NO_COUNTS);
}

/**
 * The decision for a pending task with `upstream` upstream tasks, of which `c` have finished.
 * A task with no upstream tasks, or with rule `always`, runs at once; see {@link startsImmediately}.
 */
export function decide(rule: TriggerRule, c: UpstreamCounts, upstream: number): Decision {
  const failures = c.failed + c.upstreamFailed;
  const done = c.success + failures + c.skipped;
  const allDone = done >= upstream;
  if (upstream === 0 || rule === 'always') return 'queue';
  switch (rule) {
    case 'all_success':
      if (failures > 0) return 'upstream_failed';
      if (c.skipped > 0) return 'skipped';
      return c.success >= upstream ? 'queue' : 'wait';
    case 'all_failed':
      if (c.success > 0 || c.skipped > 0) return 'skipped';
      return failures >= upstream ? 'queue' : 'wait';
    case 'all_done':
      return allDone ? 'queue' : 'wait';
    case 'one_success':
      if (c.success > 0) return 'queue';
      if (allDone) return done === c.skipped ? 'skipped' : 'upstream_failed';
      return 'wait';
    case 'one_failed':
      if (failures > 0) return 'queue';
      return allDone ? 'skipped' : 'wait';
    case 'none_failed':
      if (failures > 0) return 'upstream_failed';
      return allDone ? 'queue' : 'wait';
    case 'none_failed_min_one_success':
      if (failures > 0) return 'upstream_failed';
      if (c.skipped >= upstream) return 'skipped';
      return allDone ? 'queue' : 'wait';
    case 'none_skipped':
      if (c.skipped > 0) return 'skipped';
      return allDone ? 'queue' : 'wait';
    // Airflow 3's: one success or failure (not upstream_failed) is enough;
    case 'one_done':
      if (c.success + c.failed > 0) return 'queue';
      return allDone ? 'skipped' : 'wait';
    // every upstream task skipped;
    case 'all_skipped':
      if (c.success > 0 || failures > 0) return 'skipped';
      return c.skipped >= upstream ? 'queue' : 'wait';
    // every upstream task done, none skipped, one success at least.
    case 'all_done_min_one_success':
      if (c.skipped > 0) return 'skipped';
      if (!allDone) return 'wait';
      return c.success > 0 ? 'queue' : 'upstream_failed';
  }
}

/** Whether a task is queued when its run starts, before any upstream task finishes. */
export function startsImmediately(rule: TriggerRule, upstream: number): boolean {
  return upstream === 0 || rule === 'always';
}

/** What the store holds for one downstream task, as read (or updated) for one event. */
export interface DownstreamState {
  readonly status: TaskStatus;
  /** Its counts *before* this event. */
  readonly counts: UpstreamCounts;
}

export interface DownstreamDecision {
  readonly taskId: string;
  /** Its counts *after* this event: what the store should now hold. */
  readonly counts: UpstreamCounts;
  readonly decision: Decision;
}

/**
 * The event "task `finished` reached `status`": for each downstream task, its new counts and what
 * to do. Only pending downstream tasks can be decided; others (already queued by `always`, or
 * cancelled) just record the count.
 */
export function onTaskFinished(
  graph: TaskGraph,
  ruleOf: (taskId: string) => TriggerRule,
  finished: string,
  status: TaskStatus,
  downstream: (taskId: string) => DownstreamState,
): DownstreamDecision[] {
  const out: DownstreamDecision[] = [];
  for (const taskId of graph.downstream.get(finished) ?? []) {
    const state = downstream(taskId);
    const counts = addOutcome(state.counts, status);
    const upstreamCount = graph.upstream.get(taskId)?.length ?? 0;
    const decision = nextStep(ruleOf(taskId), { status: state.status, counts, upstreamCount });
    out.push({ taskId, counts, decision });
  }
  return out;
}

/**
 * The one readiness decision, used by the pure model above, by advance after the store's atomic
 * count update, and by clear: only a pending task can be decided, by its rule and its counts.
 */
export function nextStep(
  rule: TriggerRule,
  task: {
    readonly status: TaskStatus;
    readonly counts: UpstreamCounts;
    readonly upstreamCount: number;
  },
): Decision {
  return task.status === 'pending' ? decide(rule, task.counts, task.upstreamCount) : 'wait';
}

/** Progress of a run, kept as counters so that detecting its end is O(1) per event. */
export interface RunProgress {
  readonly total: number;
  /** Tasks in a terminal status. */
  readonly finished: number;
  /** Of those, how many ended `success` or `skipped`. */
  readonly succeeded: number;
}

/**
 * A run succeeds when every task ends `success` or `skipped`, and fails once
 * no task can make progress. Every rule resolves a task once all its upstream tasks are done, so
 * "no task can make progress" is "every task is finished".
 */
export function runOutcome(p: RunProgress): RunStatus {
  if (p.finished < p.total) return 'running';
  return p.succeeded === p.total ? 'success' : 'failed';
}

/**
 * The tasks whose end can never be a run's last: each has a downstream task that waits for it
 * to end before it can itself end (its only upstream task, with a rule other than `always`, or
 * the rule `all_done` with no other upstream branch), and that one ends before some task of the
 * run does, or is counted. The
 * run's progress counts the others' ends only, so a chain's run counts its last task alone:
 * every task has ended once every counted task has. An uncounted task that does not succeed is
 * counted all the same (progressEntry), for the run's outcome, and so is every end of one that
 * a clear reopened.
 */
export function uncountedTasks(
  tasks: readonly {
    readonly taskId: string;
    readonly triggerRule: TriggerRule;
    readonly operator?: string;
  }[],
  graph: TaskGraph,
): ReadonlySet<string> {
  const rule = new Map(tasks.map((t) => [t.taskId, t.triggerRule]));
  const branches = new Set(tasks.filter((t) => t.operator === 'branch').map((t) => t.taskId));
  const out = new Set<string>();
  for (const { taskId } of tasks) {
    const waited = (graph.downstream.get(taskId) ?? []).some((d) => {
      const r = rule.get(d);
      const ups = graph.upstream.get(d) ?? [];
      if (ups.length === 1) return r !== undefined && r !== 'always';
      // A branch skips the tasks it did not choose whatever their rule (app/branch.ts): an
      // `all_done` task with another upstream branch may end before this task does.
      return r === 'all_done' && ups.every((u) => u === taskId || !branches.has(u));
    });
    if (waited) out.add(taskId);
  }
  return out;
}

/**
 * How a task's end enters its run's progress: `count` (towards the total set at creation, or
 * raised by the clear that reopened it), `extra` (an uncounted task that did not succeed: total
 * and finished both go up, so the run cannot succeed, nor end sooner), or `none` (an uncounted
 * success, never cleared).
 */
export function progressEntry(
  uncounted: boolean,
  succeeded: boolean,
  generation: number,
): 'count' | 'extra' | 'none' {
  if (!uncounted || generation > 0) return 'count';
  return succeeded ? 'none' : 'extra';
}

/**
 * Run progress is kept in shards, so that no single item is written once per task of a large run:
 * about 200 tasks a shard, at most 32 shards.
 */
export function progressShardCount(taskCount: number): number {
  return Math.min(32, Math.max(1, Math.ceil(taskCount / 200)));
}

/** Which progress shard counts `taskId` (FNV-1a, stable across processes and versions). */
export function progressShard(taskId: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < taskId.length; i++) {
    h ^= taskId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % shards;
}
