import type { Task } from '../core/dag/schema.ts';
import type { TaskInstanceRecord } from '../core/ports.ts';
import type { TaskStatus } from '../core/state/index.ts';
import type { Deps } from './deps.ts';
import { readOutput } from './outputs.ts';

/**
 * The direct downstream tasks a `branch` task's success chose (its output), or undefined when
 * the task is not a branch that succeeded. A branch whose output cannot be read as a list chose
 * none.
 */
export async function branchChoice(
  deps: Deps,
  task: Task | undefined,
  ti: TaskInstanceRecord | undefined,
): Promise<ReadonlySet<string> | undefined> {
  if (task?.operator !== 'branch' || ti?.status !== 'success') return undefined;
  const out = await readOutput(deps, ti);
  return new Set(Array.isArray(out?.output) ? out.output.filter((x) => typeof x === 'string') : []);
}

/**
 * An upstream task's outcome as one downstream task counts it: a branch's success is `skipped`
 * for the tasks it did not choose, so that the skip spreads by trigger rules (Airflow).
 */
export function outcomeFor(
  status: TaskStatus,
  choice: ReadonlySet<string> | undefined,
  downstreamTaskId: string,
): TaskStatus {
  return choice && status === 'success' && !choice.has(downstreamTaskId) ? 'skipped' : status;
}
