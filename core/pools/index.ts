/**
 * Pools and `maxActiveTasks` (DESIGN.md section 11), as gates. A gate has a number of slots and
 * counts the attempts holding one: a named pool, shared by every DAG, or a DAG's own cap on its
 * running tasks. An attempt takes a slot of each of its gates in the write that claims it, and
 * gives them back in the write that ends it (or hands it back, or the reaper's, after its lease
 * ran out), so a gate's count is exactly its running attempts. An attempt that finds a gate full
 * waits `queued`, parked at that gate in the order it became ready, until a slot frees.
 */
import type { Dag, Task } from '../dag/schema.ts';

/** A gate an attempt passes to run; `slots` is a DAG cap's, taken from the version that runs. */
export interface Gate {
  readonly id: string;
  readonly slots?: number;
}

/** The most slots a pool may have. */
export const MAX_POOL_SLOTS = 100_000;

export const poolGate = (pool: string) => `pool:${pool}`;
export const dagGate = (dagId: string) => `dag:${dagId}`;

/** The pool a gate stands for; undefined for a DAG's cap. */
export function poolOfGate(gate: string): string | undefined {
  return gate.startsWith('pool:') ? gate.slice('pool:'.length) : undefined;
}

/** The gates an attempt of `task` passes: its pool's, then its DAG's cap. None for most tasks. */
export function gatesOf(
  dag: Pick<Dag, 'dagId' | 'maxActiveTasks'>,
  task: Pick<Task, 'pool'>,
): Gate[] {
  return [
    ...(task.pool ? [{ id: poolGate(task.pool) }] : []),
    ...(dag.maxActiveTasks ? [{ id: dagGate(dag.dagId), slots: dag.maxActiveTasks }] : []),
  ];
}

/**
 * Where an attempt waits: its gate and when it became ready (its queued time). The store keeps
 * a gate's waiters ordered by it, so that they start in the order they became ready.
 */
export function waiterOf(gate: string, since: string): string {
  return `${gate}@${since}`;
}

export function parseWaiter(waiter: string): { gate: string; since: string } {
  const at = waiter.lastIndexOf('@');
  return { gate: waiter.slice(0, at), since: waiter.slice(at + 1) };
}

/** A gate as the store shows it: its slots (null when it is not defined) and how many are used. */
export interface GateState {
  readonly slots: number | null;
  readonly used: number;
}

/** How many waiters a gate can start now: its free slots, none when it is full or undefined. */
export function wakeable(gate: GateState, waiting: number): number {
  return Math.max(0, Math.min(waiting, (gate.slots ?? 0) - gate.used));
}

/** Whether one more attempt may take a slot now. */
export function hasRoom(gate: GateState): boolean {
  return wakeable(gate, 1) === 1;
}
