import type { Dag, Task } from '../core/dag/schema.ts';
import { ConflictError, NotFoundError, UnrecoverableError } from '../core/errors.ts';
import {
  DEFAULT_MAX_MAP_LENGTH,
  instanceId,
  MAX_INLINE_ITEM_BYTES,
  mapItems,
  mappedOutcome,
  mapShard,
  mapShardCount,
  parseInstance,
} from '../core/mapping/index.ts';
import type { TaskInstanceRecord, TaskKey, TaskMessage } from '../core/ports.ts';
import { cancelTask, finishMapped, isTerminalTask, type TaskStatus } from '../core/state/index.ts';
import type { Deps } from './deps.ts';
import { released } from './pools.ts';
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

/** The blob of an instance's item too large to keep with it, by the expansion that made it. */
export const mapItemName = (mapAttempt: number) => `map-item-${mapAttempt}.json`;

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
  // A small item goes with its instance; a larger one is stored beside it, before the
  // instance exists (so an instance never misses its item).
  const json = items.map((item) => JSON.stringify(item ?? null));
  const kept = json.map((j) => (Buffer.byteLength(j) <= MAX_INLINE_ITEM_BYTES ? j : null));
  const large = kept.flatMap((k, i) => (k === null ? [i] : []));
  for (let at = 0; at < large.length; at += 16) {
    await Promise.all(
      large
        .slice(at, at + 16)
        .map((i) =>
          deps.blobs.putArtifact(
            { ...parent, taskId: instanceId(parent.taskId, i), attempt: 0 },
            mapItemName(parent.attempt),
            json[i] as string,
          ),
        ),
    );
  }
  // A repeat of this attempt's expansion (after a hand-back) must give as many items as the
  // first did: its shards and instances count that many.
  const earlier = await deps.store.listMapInstances(parent);
  const mine = earlier.find((t) => t.mapAttempt === parent.attempt);
  if (mine && mine.mapLength !== items.length) {
    throw new UnrecoverableError(
      `mapOver now gives ${items.length} items, but this attempt expanded into ${mine.mapLength} before (an upstream task ran again meanwhile): clear the mapped task`,
    );
  }
  // An earlier expansion's instances still queued or running (its worker died, and this is the
  // retry): stopped first, their slots and places at gates given back, before new ones take
  // their items. Only older attempts': a worker that lost its lease meanwhile (a later attempt
  // expanding) must not stop the later attempt's instances.
  await stopInstances(deps, parent, (t) => (t.mapAttempt ?? 0) < parent.attempt, earlier);
  // Stopping changed only their status: what the expansion reads of them stands.
  const instances = await deps.store.expandMap(parent, kept, deps.clock(), earlier);
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
  let complete: boolean;
  try {
    complete = await deps.store.recordMapOutcome(
      key,
      inst.mapIndex,
      mapAttempt,
      mapLength,
      status,
      generation,
    );
  } catch (e) {
    // An expansion that never finished writing (its worker died, a later attempt took over):
    // its instances count for nothing.
    if (e instanceof NotFoundError) return;
    throw e;
  }
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
/**
 * Cancels the instances of a mapped task that `which` picks and that have not ended, giving
 * back their gates' slots and places. One that moves on meanwhile is read again (a few times).
 */
export async function stopInstances(
  deps: Deps,
  parent: TaskKey,
  which: (t: TaskInstanceRecord) => boolean,
  /** The instances as just read, to save reading them again. */
  listed?: readonly TaskInstanceRecord[],
): Promise<number> {
  let stopped = 0;
  const live = (listed ?? (await deps.store.listMapInstances(parent))).filter(
    (t) => which(t) && !isTerminalTask(t.status),
  );
  await Promise.all(
    live.map(async (first) => {
      let t: TaskInstanceRecord | undefined = first;
      for (let tries = 0; t && !isTerminalTask(t.status); tries++) {
        // One that keeps moving is not written over (its slots would leak): the caller fails,
        // and is tried again.
        if (tries >= 5) throw new Error(`could not stop ${t.taskId}: it kept moving`);
        try {
          await deps.store.transitionTask(t, cancelTask(t, deps.clock()));
          await released(deps, t.gates);
          stopped++;
          return;
        } catch (e) {
          if (!(e instanceof ConflictError)) throw e;
          t = e.current as TaskInstanceRecord | undefined;
        }
      }
    }),
  );
  return stopped;
}

/**
 * A mapped task that ended otherwise than by its instances' ends (its attempt failed or was
 * cancelled after expanding, and no retry is left): the instances that attempt made and that
 * still run are cancelled, as nothing counts them any more.
 */
export async function stopStrayInstances(deps: Deps, parent: TaskInstanceRecord): Promise<void> {
  if (!isTerminalTask(parent.status) || parent.mapCounts) return;
  // Ended with no attempt running: no expansion is live, so none of its instances should run,
  // whichever attempt made them (an earlier one that died, and whose retry died too).
  await stopInstances(deps, parent, () => true);
}

export async function settleMapped(deps: Deps, parent: TaskInstanceRecord): Promise<void> {
  const waiting =
    parent.status === 'running' &&
    parent.leaseToken === null &&
    parent.mapAttempt === parent.attempt &&
    parent.mapShards !== undefined &&
    (parent.mapDone ?? 0) >= parent.mapShards;
  if (!waiting || parent.mapAttempt === undefined) return;
  const counts = await deps.store.mapOutcomes(parent, parent.mapAttempt);
  // Every instance counted, or not yet: a shard marked done by an advance that read it complete
  // just before a clear of one instance reopened it must not end the map early.
  const counted = counts.success + counts.failed + counts.upstreamFailed + counts.skipped;
  if (counted !== parent.mapLength) return;
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
