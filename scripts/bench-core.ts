// npm run bench:core: the cost of the pure core, each figure a ratio against a baseline measured
// in the same run, so that the machine's speed cancels out.
//
// 1. Validating a 10,000-task DAG, against JSON.parse of the same text.
// 2. Readiness work per finished task in a 10,000-task DAG, against a 10-task DAG of the same
//    shape (every task has two downstream tasks). O(out-degree) means a ratio near 1.
import { buildGraph } from '../core/dag/graph.ts';
import { MAX_TASKS, type TriggerRule, validateDagText } from '../core/dag/index.ts';
import {
  type DownstreamState,
  NO_COUNTS,
  onTaskFinished,
  type UpstreamCounts,
} from '../core/readiness/index.ts';

/** Median nanoseconds per call of `fn`, over `rounds` rounds of `batch` calls after a warm-up. */
function measure(fn: () => void, batch: number, rounds = 15): number {
  for (let i = 0; i < batch; i++) fn();
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / batch);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] as number;
}

/** A ladder: task i depends on tasks i-1 and i-2, so every task has out-degree 2 (bar the last). */
function ladder(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    taskId: `t${i}`,
    operator: 'noop',
    dependsOn: [i - 1, i - 2].filter((j) => j >= 0).map((j) => `t${j}`),
    ...(i % 7 === 0 ? { triggerRule: 'all_done' as TriggerRule } : {}),
  }));
}

const fmt = (ns: number) =>
  ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(2)} µs`;

// 1. Validation.
const text = JSON.stringify({ dagId: 'bench', tasks: ladder(MAX_TASKS) });
const check = validateDagText(text);
if (!check.ok) throw new Error(`bench DAG is invalid: ${JSON.stringify(check.issues[0])}`);
const parse = measure(() => JSON.parse(text), 3);
const validate = measure(() => validateDagText(text), 3);

// 2. Readiness per event.
function readinessPerEvent(n: number): number {
  const tasks = ladder(n);
  const graph = buildGraph(tasks);
  const rules = new Map(tasks.map((t) => [t.taskId, t.triggerRule ?? 'all_success']));
  const state = new Map<string, DownstreamState>(
    tasks.map((t) => [t.taskId, { status: 'pending', counts: NO_COUNTS as UpstreamCounts }]),
  );
  // Finish tasks in turn, skipping the last (it has no downstream tasks).
  const events = tasks.slice(0, -1).map((t) => t.taskId);
  let i = 0;
  return measure(() => {
    const finished = events[i++ % events.length] as string;
    onTaskFinished(
      graph,
      (id) => rules.get(id) ?? 'all_success',
      finished,
      'success',
      (id) => state.get(id) as DownstreamState,
    );
  }, 20_000);
}
const small = readinessPerEvent(10);
const medium = readinessPerEvent(1_000);
const large = readinessPerEvent(MAX_TASKS);

console.log(`DAG text: ${MAX_TASKS} tasks, ${text.length} bytes`);
console.log(`validate 10k-task DAG        ${fmt(validate).padStart(10)}`);
console.log(`JSON.parse of the same text  ${fmt(parse).padStart(10)}`);
console.log(`  ratio validate / JSON.parse: ${(validate / parse).toFixed(2)}x`);
console.log(`readiness per event, 10 tasks      ${fmt(small).padStart(10)}`);
console.log(`readiness per event, 1,000 tasks   ${fmt(medium).padStart(10)}`);
console.log(`readiness per event, 10,000 tasks  ${fmt(large).padStart(10)}`);
console.log(`  ratio 10,000 / 10 tasks: ${(large / small).toFixed(2)}x (O(out-degree): near 1)`);
console.log(`  ratio 10,000 / 1,000 tasks: ${(large / medium).toFixed(2)}x (O(n) would be 10x)`);
