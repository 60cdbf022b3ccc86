import type { Dag, Task } from '../core/dag/schema.ts';
import { ConflictError, UnrecoverableError } from '../core/errors.ts';
import {
  DEFAULT_MAX_MAP_LENGTH,
  MAX_INLINE_ITEM_BYTES,
  mapItems,
  mappedOutcome,
  mapShard,
  mapShardCount,
  parseInstance,
} from '../core/mapping/index.ts';
import type { TaskInstanceRecord, TaskKey, TaskMessage } from '../core/ports.ts';
import { finishMapped, type TaskStatus } from '../core/state/index.ts';
import type { Deps } from './deps.ts';
import { taskMessage } from './runs.ts';
import { renderConfig } from './templates.ts';

/**
 * Dynamic task mapping (DESIGN.md section 10, core/mapping), as the worker and readiness run it.
 *
 * 1. A mapped task's attempt renders `mapOver` and writes one queued instance per item, with the
 *    count shards of this attempt, in batches (O(items) writes, no item written per instance),
 *    and sends their messages. Then it gives up its lease, staying `running` (core/state
 *    mapTask). A worker that dies before that write leaves its lease to run out: the reaper
 *    fails or retries the attempt, and a retry expands again, over the earlier instances.
 * 2. Each instance runs as any task does. Its outcome is counted on its shard (once per instance
 *    and generation); the shard that completes marks itself done on the mapped task.
 * 3. Whoever finds every shard done, and the mapped task without a lease (the last instance's
 *    advance, or the mapped task's own write when its instances were quicker), ends the mapped
 *    task in one conditional write with the summed counts. The table's stream then advances
 *    readiness from it, and its downstream tasks count every instance's outcome in one write.
 *
 * Every step is conditional or counted once, so a repeat (a message or stream record that
 * comes back) walks the same steps harmlessly and finishes what a crash left.
 */

/** The items of a mapped task's attempt: `mapOver` rendered, checked against maxMapLength. */
export async function renderMapItems(
  deps: Deps,
  msg: TaskMessage,
  dag: Dag,
  task: Task,
): Promise<{ readonly items: readonly unknown[]; readonly logged?: string }> {
  const rendered = await renderConfig(deps, msg, dag, task.mapOver);
  const found = mapItems(rendered.config, task.maxMapLength ?? DEFAULT_MAX_MAP_LENGTH);
  if ('error' in found) throw new UnrecoverableError(found.error);
  return { items: found.items, ...(rendered.logged ? { logged: rendered.logged } : {}) };
}

/**
 * Writes the instances of a mapped task's running attempt and sends their messages. Answers how
 * many there are. Safe to repeat for the same attempt.
 */
export async function expandMapped(
  deps: Deps,
  parent: TaskInstanceRecord,
  items: readonly unknown[],
): Promise<number> {
  if (items.length === 0) return 0;
  // A small item goes with its instance; a larger one is rendered again by the instance.
  const kept = items.map((item) => {
    const json = JSON.stringify(item ?? null);
    return Buffer.byteLength(json) <= MAX_INLINE_ITEM_BYTES ? json : null;
  });
  const instances = await deps.store.expandMap(parent, kept, deps.clock());
  const messages = await Promise.all(
    instances
      .filter((t) => t.status === 'queued')
      .map((t) => taskMessage(deps, t, parent.dagVersion)),
  );
  // If this send is lost, the reaper finds them queued and sends them again.
  await deps.dispatcher.dispatch(messages);
  return instances.length;
}

/**
 * An instance reached a terminal status: count it on its shard, and end the mapped task if it
 * was the last. Its own run progress is its mapped task's: an instance is not counted there.
 */
export async function advanceInstance(
  deps: Deps,
  key: TaskKey & Partial<Pick<TaskInstanceRecord, 'mapAttempt' | 'mapLength'>>,
  status: TaskStatus,
  generation: number,
): Promise<void> {
  const inst = parseInstance(key.taskId);
  if (!inst) return;
  let { mapAttempt, mapLength } = key;
  if (mapAttempt === undefined || mapLength === undefined) {
    const ti = await deps.store.getTaskInstance(key);
    mapAttempt = ti?.mapAttempt;
    mapLength = ti?.mapLength;
  }
  if (mapAttempt === undefined || mapLength === undefined) return;
  const complete = await deps.store.recordMapOutcome(
    key,
    inst.mapIndex,
    mapAttempt,
    mapLength,
    status,
    generation,
  );
  if (!complete) return;
  const parentKey = { dagId: key.dagId, runId: key.runId, taskId: inst.taskId };
  const shard = mapShard(inst.mapIndex, mapShardCount(mapLength));
  const parent = await deps.store.markMapShardDone(parentKey, mapAttempt, shard);
  if (parent) await settleMapped(deps, parent);
}

/**
 * Ends a mapped task whose instances have all finished, if it is still waiting for them (this
 * attempt's expansion, no lease): in one conditional write, so that of two callers one ends it.
 */
export async function settleMapped(deps: Deps, parent: TaskInstanceRecord): Promise<void> {
  const waiting =
    parent.status === 'running' &&
    parent.leaseToken === null &&
    parent.mapAttempt === parent.attempt &&
    parent.mapShards !== undefined &&
    (parent.mapDone ?? 0) >= parent.mapShards;
  if (!waiting || parent.mapAttempt === undefined) return;
  const counts = await deps.store.mapOutcomes(parent, parent.mapAttempt);
  try {
    await deps.store.transitionTask(
      parent,
      finishMapped(parent, mappedOutcome(counts), counts, deps.clock()),
    );
  } catch (e) {
    // Ended by the other caller, or cancelled: either way, not this one's to end.
    if (!(e instanceof ConflictError)) throw e;
  }
}
