import type { TaskGraph } from '../core/dag/graph.ts';
import type { Task } from '../core/dag/schema.ts';
import type { TaskInstanceRecord } from '../core/ports.ts';
import type { Deps } from './deps.ts';
import { readOutput } from './outputs.ts';

/**
 * The direct downstream tasks that a `branch` task's success skips, or undefined when the task
 * is not a branch that succeeded. As Airflow's branch operators do: every direct downstream
 * task it did not choose, except those downstream of a task it chose (a join after the chosen
 * side). These are `skipped` whatever their trigger rule; the skip then spreads by the rules of
 * the tasks after them. A branch whose output cannot be read as a list chose none.
 */
export async function branchSkips(
  deps: Deps,
  graph: TaskGraph,
  task: Task | undefined,
  ti: TaskInstanceRecord | undefined,
): Promise<ReadonlySet<string> | undefined> {
  if (task?.operator !== 'branch' || ti?.status !== 'success') return undefined;
  const out = await readOutput(deps, ti);
  const chosen = new Set(
    Array.isArray(out?.output) ? out.output.filter((x) => typeof x === 'string') : [],
  );
  const after = new Set<string>();
  const stack = [...chosen];
  while (stack.length > 0) {
    for (const d of graph.downstream.get(stack.pop() as string) ?? []) {
      if (!after.has(d)) {
        after.add(d);
        stack.push(d);
      }
    }
  }
  return new Set(
    (graph.downstream.get(task.taskId) ?? []).filter((d) => !chosen.has(d) && !after.has(d)),
  );
}
