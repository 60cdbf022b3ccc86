import { addCounts, NO_COUNTS, type UpstreamCounts } from '../readiness/index.ts';

/**
 * Dynamic task mapping (DESIGN.md section 10): a task with `mapOver` expands, when it runs, into
 * one task instance per item. Each instance is a task instance of its own, named
 * `{taskId}[{mapIndex}]` (task ids never hold `[`, so the name cannot clash), with its own
 * attempts, retries, lease, log and output. The mapped task's own instance (the parent) waits,
 * `running` with no lease, until every instance has finished; then it ends, and its downstream
 * tasks count every instance's outcome at once.
 *
 * Instances' outcomes are counted on shard items (as run progress is), so that no item is
 * written once per instance of a large map: a shard whose instances have all finished marks
 * itself done on the parent, and the parent ends once every shard is done.
 */

/** `maxMapLength` when a task does not set it, and the most it may be set to. */
export const DEFAULT_MAX_MAP_LENGTH = 1000;
export const MAX_MAP_LENGTH = 10_000;

/**
 * An item up to this size (as JSON) is kept with its instance, written by the expansion's own
 * batch: the instance reads it with its claim. A larger one is stored beside it as a blob, one
 * PUT at expansion and one GET by the instance, so that no instance item grows large (every
 * later write of the item pays for its size again).
 */
export const MAX_INLINE_ITEM_BYTES = 1024;

/** The task instance id of one instance of mapped task `taskId`. */
export function instanceId(taskId: string, mapIndex: number): string {
  return `${taskId}[${mapIndex}]`;
}

const INSTANCE = /^(.+)\[(\d{1,5})\]$/;

/** The mapped task and index an instance id names; undefined for any other task id. */
export function parseInstance(id: string): { taskId: string; mapIndex: number } | undefined {
  const m = INSTANCE.exec(id);
  return m ? { taskId: m[1] as string, mapIndex: Number(m[2]) } : undefined;
}

/** The DAG task an instance id (or a plain task id) belongs to. */
export function baseTaskId(id: string): string {
  return parseInstance(id)?.taskId ?? id;
}

/** Shards of a map's outcome counts: about 200 instances a shard, at most 32. */
export function mapShardCount(length: number): number {
  return Math.min(32, Math.max(1, Math.ceil(length / 200)));
}

export function mapShard(mapIndex: number, shards: number): number {
  return mapIndex % shards;
}

/** How many of a map's `length` instances shard `shard` counts. */
export function mapShardSize(length: number, shards: number, shard: number): number {
  return Math.floor(length / shards) + (shard < length % shards ? 1 : 0);
}

/**
 * The items a rendered `mapOver` gives, or why it gives none: it must be a list of at most
 * `max` items (DESIGN.md section 10).
 */
export function mapItems(
  value: unknown,
  max: number,
): { readonly items: readonly unknown[] } | { readonly error: string } {
  // A dict maps over its entries, each item a [key, value] pair, as Airflow's does.
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    return mapItems(Object.entries(value), max);
  }
  if (!Array.isArray(value)) {
    const kind = value === null ? 'null' : typeof value;
    return { error: `mapOver: must render to a list or a dict, got ${kind}` };
  }
  if (value.length > max) {
    return {
      error: `mapOver: ${value.length} items, more than maxMapLength ${max}; raise maxMapLength (at most ${MAX_MAP_LENGTH}) or split the list`,
    };
  }
  return { items: value };
}

/**
 * The mapped task's own outcome once every instance has finished: `success` when every instance
 * succeeded (or was skipped), `failed` otherwise, as a run's outcome is decided from its tasks.
 */
export function mappedOutcome(counts: UpstreamCounts): 'success' | 'failed' {
  return counts.failed + counts.upstreamFailed > 0 ? 'failed' : 'success';
}

/** Sums shard counts. */
export function sumCounts(shards: readonly UpstreamCounts[]): UpstreamCounts {
  return shards.reduce(addCounts, NO_COUNTS);
}
