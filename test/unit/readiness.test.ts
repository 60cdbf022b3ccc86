import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildGraph } from '../../core/dag/graph.ts';
import { TRIGGER_RULES, type TriggerRule } from '../../core/dag/schema.ts';
import {
  countUpstream,
  type Decision,
  type DownstreamState,
  decide,
  NO_COUNTS,
  onTaskFinished,
  progressEntry,
  runOutcome,
  startsImmediately,
  type UpstreamCounts,
  uncountedTasks,
} from '../../core/readiness/index.ts';
import { isTerminalTask, type TaskStatus } from '../../core/state/index.ts';

/**
 * Airflow's trigger rules, for a task with two upstream tasks, from the documented meanings
 * (https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/dags.html#trigger-rules),
 * Airflow 3's `one_done`, `all_skipped` and `all_done_min_one_success` (admos) included:
 * a rule that is met queues the task; a rule that can no longer be met resolves it to `skipped`
 * or `upstream_failed` as Airflow does; otherwise it waits.
 *
 * Upstream states: P pending (unfinished), S success, F failed, U upstream_failed, K skipped.
 * Decisions: w wait, Q queue, K skipped, UF upstream_failed.
 */
const RULES = [
  'all_success',
  'all_failed',
  'all_done',
  'one_success',
  'one_failed',
  'none_failed',
  'none_failed_min_one_success',
  'none_skipped',
  'always',
  'one_done',
  'all_skipped',
  'all_done_min_one_success',
] as const;
// biome-ignore format: the table reads as a table
const TRUTH_TABLE: Record<string, string> = {
  //      all_success all_failed all_done one_success one_failed none_failed nfmos none_skipped always one_done all_skipped admos
  'P,P': 'w  w  w  w  w  w  w  w  Q  w  w  w',
  'S,P': 'w  K  w  Q  w  w  w  w  Q  Q  K  w',
  'F,P': 'UF w  w  w  Q  UF UF w  Q  Q  K  w',
  'U,P': 'UF w  w  w  Q  UF UF w  Q  w  K  w',
  'K,P': 'K  K  w  w  w  w  w  K  Q  w  w  K',
  'S,S': 'Q  K  Q  Q  K  Q  Q  Q  Q  Q  K  Q',
  'S,F': 'UF K  Q  Q  Q  UF UF Q  Q  Q  K  Q',
  'S,U': 'UF K  Q  Q  Q  UF UF Q  Q  Q  K  Q',
  'S,K': 'K  K  Q  Q  K  Q  Q  K  Q  Q  K  K',
  'F,F': 'UF Q  Q  UF Q  UF UF Q  Q  Q  K  UF',
  'F,U': 'UF Q  Q  UF Q  UF UF Q  Q  Q  K  UF',
  'U,U': 'UF Q  Q  UF Q  UF UF Q  Q  K  K  UF',
  'F,K': 'UF K  Q  UF Q  UF UF K  Q  Q  K  K',
  'U,K': 'UF K  Q  UF Q  UF UF K  Q  K  K  K',
  'K,K': 'K  K  Q  K  K  Q  K  K  Q  K  Q  K',
};

const STATE: Record<string, TaskStatus> = {
  P: 'pending',
  S: 'success',
  F: 'failed',
  U: 'upstream_failed',
  K: 'skipped',
};
const DECISION: Record<string, Decision> = {
  w: 'wait',
  Q: 'queue',
  K: 'skipped',
  UF: 'upstream_failed',
};

describe('trigger rules: the truth table', () => {
  it('covers every documented trigger rule', () => {
    expect([...RULES].sort()).toEqual([...TRIGGER_RULES].sort());
  });

  const cases = Object.entries(TRUTH_TABLE).flatMap(([states, row]) =>
    row
      .trim()
      .split(/\s+/)
      .map((d, i) => ({ states, rule: RULES[i] as TriggerRule, expected: DECISION[d] })),
  );
  it.each(cases)('$rule with upstream $states → $expected', ({ states, rule, expected }) => {
    const statuses = states.split(',').map((s) => STATE[s] as TaskStatus);
    expect(decide(rule, countUpstream(statuses), 2)).toBe(expected);
  });

  it.each(RULES)('a task with no upstream tasks runs at once (%s)', (rule) => {
    expect(startsImmediately(rule, 0)).toBe(true);
    expect(decide(rule, NO_COUNTS, 0)).toBe('queue');
  });

  it('only `always` starts before its upstream tasks finish', () => {
    expect(RULES.filter((r) => startsImmediately(r, 3))).toEqual(['always']);
  });
});

/** "Satisfied", stated directly from the documented meaning of each rule. */
function satisfied(rule: TriggerRule, upstream: readonly TaskStatus[]): boolean {
  const all = (p: (s: TaskStatus) => boolean) => upstream.every(p);
  const some = (p: (s: TaskStatus) => boolean) => upstream.some(p);
  const failedish = (s: TaskStatus) => s === 'failed' || s === 'upstream_failed';
  switch (rule) {
    case 'all_success':
      return all((s) => s === 'success');
    case 'all_failed':
      return all(failedish);
    case 'all_done':
      return all(isTerminalTask);
    case 'one_success':
      return some((s) => s === 'success');
    case 'one_failed':
      return some(failedish);
    case 'none_failed':
      return all((s) => s === 'success' || s === 'skipped');
    case 'none_failed_min_one_success':
      return all((s) => s === 'success' || s === 'skipped') && some((s) => s === 'success');
    case 'none_skipped':
      return all((s) => isTerminalTask(s) && s !== 'skipped');
    case 'always':
      return true;
    case 'one_done':
      return some((s) => s === 'success' || s === 'failed');
    case 'all_skipped':
      return all((s) => s === 'skipped');
    case 'all_done_min_one_success':
      return all((s) => isTerminalTask(s) && s !== 'skipped') && some((s) => s === 'success');
  }
}

const FINISHED: TaskStatus[] = ['success', 'failed', 'upstream_failed', 'skipped'];
const upstreamStates = fc.array(fc.constantFrom<TaskStatus>('pending', ...FINISHED), {
  minLength: 1,
  maxLength: 5,
});

/** Every way the unfinished upstream tasks could still end. */
function completions(states: readonly TaskStatus[]): TaskStatus[][] {
  return states.reduce<TaskStatus[][]>(
    (acc, s) =>
      acc.flatMap((prefix) => (s === 'pending' ? FINISHED : [s]).map((x) => [...prefix, x])),
    [[]],
  );
}

describe('trigger rules: properties', () => {
  it('queues a task exactly when its rule is satisfied', () => {
    fc.assert(
      fc.property(fc.constantFrom(...RULES), upstreamStates, (rule, states) => {
        const d = decide(rule, countUpstream(states), states.length);
        expect(d === 'queue').toBe(satisfied(rule, states));
      }),
    );
  });

  it('resolves a task to skipped or upstream_failed only when no outcome could satisfy it', () => {
    fc.assert(
      fc.property(fc.constantFrom(...RULES), upstreamStates, (rule, states) => {
        const d = decide(rule, countUpstream(states), states.length);
        if (d === 'skipped' || d === 'upstream_failed') {
          expect(completions(states).some((c) => satisfied(rule, c))).toBe(false);
        }
      }),
    );
  });

  it('decides every task once all its upstream tasks are finished', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RULES),
        fc.array(fc.constantFrom(...FINISHED), { minLength: 1, maxLength: 5 }),
        (rule, states) => {
          expect(decide(rule, countUpstream(states), states.length)).not.toBe('wait');
        },
      ),
    );
  });
});

/** A random DAG as upstream lists: task i depends only on tasks before it, so it is acyclic. */
const randomDag = fc.integer({ min: 1, max: 25 }).chain((n) =>
  fc.record({
    deps: fc.tuple(
      ...Array.from({ length: n }, (_, i) =>
        fc.uniqueArray(fc.integer({ min: 0, max: Math.max(0, i - 1) }), {
          maxLength: i === 0 ? 0 : 3,
        }),
      ),
    ),
    rules: fc.array(fc.constantFrom(...RULES), { minLength: n, maxLength: n }),
    fails: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
  }),
);

/**
 * Runs a DAG to the end with nothing but the event API: tasks that start immediately are queued,
 * each queued task finishes with its drawn outcome, and each finish is one readiness event.
 */
function simulate(dag: { deps: number[][]; rules: TriggerRule[]; fails: boolean[] }) {
  const tasks = dag.deps.map((d, i) => ({ taskId: `t${i}`, dependsOn: d.map((j) => `t${j}`) }));
  const graph = buildGraph(tasks);
  const rule = (id: string) => dag.rules[Number(id.slice(1))] as TriggerRule;
  const state = new Map<string, { status: TaskStatus; counts: UpstreamCounts }>(
    tasks.map((t) => [t.taskId, { status: 'pending' as TaskStatus, counts: NO_COUNTS }]),
  );
  const queue: string[] = [];
  for (const t of tasks) {
    if (startsImmediately(rule(t.taskId), graph.upstream.get(t.taskId)?.length ?? 0)) {
      (state.get(t.taskId) as { status: TaskStatus }).status = 'queued';
      queue.push(t.taskId);
    }
  }
  const events: { taskId: string; status: TaskStatus }[] = [];
  let lookups = 0;
  let maxLookupsOverOutDegree = 0;
  const finish = (taskId: string, status: TaskStatus) => {
    (state.get(taskId) as { status: TaskStatus }).status = status;
    events.push({ taskId, status });
    let calls = 0;
    const decisions = onTaskFinished(graph, rule, taskId, status, (id) => {
      calls++;
      lookups++;
      return state.get(id) as DownstreamState;
    });
    const outDegree = graph.downstream.get(taskId)?.length ?? 0;
    maxLookupsOverOutDegree = Math.max(maxLookupsOverOutDegree, calls - outDegree);
    // The store applies each downstream's new counts as one atomic write per event, before any
    // resolved task's own event is handled.
    for (const d of decisions) {
      (state.get(d.taskId) as { counts: UpstreamCounts }).counts = d.counts;
    }
    for (const d of decisions) {
      const s = state.get(d.taskId) as { status: TaskStatus };
      if (d.decision === 'queue') {
        s.status = 'queued';
        queue.push(d.taskId);
      } else if (d.decision === 'skipped' || d.decision === 'upstream_failed') {
        finish(d.taskId, d.decision);
      }
    }
  };
  for (let i = 0; queue.length > 0 && i < 10_000; i++) {
    const id = queue.shift() as string;
    finish(id, dag.fails[Number(id.slice(1))] ? 'failed' : 'success');
  }
  return { state, lookups, maxLookupsOverOutDegree, events };
}

describe('runs driven by readiness events', () => {
  it('end with every task terminal, and the documented run status', () => {
    fc.assert(
      fc.property(randomDag, (dag) => {
        const { state } = simulate(dag);
        const statuses = [...state.values()].map((s) => s.status);
        expect(statuses.filter((s) => !isTerminalTask(s))).toEqual([]);
        const progress = {
          total: statuses.length,
          finished: statuses.filter(isTerminalTask).length,
          succeeded: statuses.filter((s) => s === 'success' || s === 'skipped').length,
        };
        const outcome = runOutcome(progress);
        expect(outcome).toBe(progress.succeeded === progress.total ? 'success' : 'failed');
      }),
    );
  });

  it('look at exactly the out-degree of the finished task per event', () => {
    fc.assert(
      fc.property(randomDag, (dag) => {
        const { maxLookupsOverOutDegree } = simulate(dag);
        expect(maxLookupsOverOutDegree).toBe(0);
      }),
    );
  });

  it('a run with unfinished tasks is still running', () => {
    expect(runOutcome({ total: 3, finished: 2, succeeded: 2 })).toBe('running');
    expect(runOutcome({ total: 3, finished: 3, succeeded: 3 })).toBe('success');
    expect(runOutcome({ total: 3, finished: 3, succeeded: 2 })).toBe('failed');
  });

  it('a failure upstream of all_success fails the whole chain, and one_failed runs', () => {
    const { state } = simulate({
      deps: [[], [0], [1], [1]],
      rules: ['all_success', 'all_success', 'all_success', 'one_failed'],
      fails: [false, true, false, false],
    });
    expect(Object.fromEntries([...state].map(([k, v]) => [k, v.status]))).toEqual({
      t0: 'success',
      t1: 'failed',
      t2: 'upstream_failed',
      t3: 'success',
    });
  });
});

describe('which task ends a run progress counts', () => {
  const dag = (
    tasks: { taskId: string; dependsOn?: string[]; triggerRule?: TriggerRule }[],
  ): ReadonlySet<string> => {
    const full = tasks.map((t) => ({
      taskId: t.taskId,
      dependsOn: t.dependsOn ?? [],
      triggerRule: t.triggerRule ?? ('all_success' as TriggerRule),
    }));
    return uncountedTasks(full, buildGraph(full));
  };

  it('a chain counts its last task alone', () => {
    const chain = dag([
      { taskId: 'a' },
      { taskId: 'b', dependsOn: ['a'] },
      { taskId: 'c', dependsOn: ['b'] },
    ]);
    expect([...chain].sort()).toEqual(['a', 'b']);
  });

  it('a fan-out counts its branches, whose join may decide before they all end', () => {
    const fan = dag([
      { taskId: 'root' },
      { taskId: 'x', dependsOn: ['root'] },
      { taskId: 'y', dependsOn: ['root'] },
      { taskId: 'sink', dependsOn: ['x', 'y'] },
    ]);
    // all_success decides upstream_failed at the first failure: x may still be running then.
    expect([...fan]).toEqual(['root']);
    const waiting = dag([
      { taskId: 'root' },
      { taskId: 'x', dependsOn: ['root'] },
      { taskId: 'y', dependsOn: ['root'] },
      { taskId: 'sink', dependsOn: ['x', 'y'], triggerRule: 'all_done' },
    ]);
    expect([...waiting].sort()).toEqual(['root', 'x', 'y']);
  });

  it('counts a task whose only downstream task starts at once (always), or decides early', () => {
    for (const rule of TRIGGER_RULES) {
      const got = dag([{ taskId: 'a' }, { taskId: 'b', dependsOn: ['a'], triggerRule: rule }]);
      // One upstream task: only `always` does not wait for it.
      expect(got.has('a')).toBe(rule !== 'always');
      const two = dag([
        { taskId: 'a' },
        { taskId: 'z' },
        { taskId: 'b', dependsOn: ['a', 'z'], triggerRule: rule },
      ]);
      // Two: only all_done surely waits for both.
      expect(two.has('a')).toBe(rule === 'all_done');
    }
  });

  it('counts a task whose all_done join a branch may skip before it ends', () => {
    const tasks = [
      {
        taskId: 'pick',
        dependsOn: [],
        triggerRule: 'all_success' as TriggerRule,
        operator: 'branch',
      },
      { taskId: 'c', dependsOn: ['pick'], triggerRule: 'all_success' as TriggerRule },
      { taskId: 'y', dependsOn: [], triggerRule: 'all_success' as TriggerRule },
      { taskId: 'j', dependsOn: ['pick', 'y'], triggerRule: 'all_done' as TriggerRule },
    ];
    const got = uncountedTasks(tasks, buildGraph(tasks));
    // pick waits for c (its only upstream); y's join may be skipped by pick while y runs.
    expect([...got]).toEqual(['pick']);
  });

  it('counts every end of a counted task, and the failures and cleared reruns of the others', () => {
    expect(progressEntry(false, true, 0)).toBe('count');
    expect(progressEntry(false, false, 0)).toBe('count');
    expect(progressEntry(false, true, 3)).toBe('count');
    expect(progressEntry(true, true, 0)).toBe('none');
    expect(progressEntry(true, false, 0)).toBe('extra');
    expect(progressEntry(true, true, 1)).toBe('count');
    expect(progressEntry(true, false, 2)).toBe('count');
  });
});
