import type { Dag } from '../core/dag/schema.ts';
import { ConflictError, NotFoundError, ThrottledError } from '../core/errors.ts';
import {
  type Gate,
  hasRoom,
  parseWaiter,
  poolGate,
  waiterOf,
  wakeable,
} from '../core/pools/index.ts';
import type { PoolRecord, TaskInstanceRecord, TaskMessage } from '../core/ports.ts';
import { claimTask } from '../core/state/index.ts';
import type { Deps } from './deps.ts';

/** Waiters read per wake: more than one end frees; a pool grown more reads up to MAX_WAKE. */
const WAKE_BATCH = 25;
const MAX_WAKE = 1000;
/** Tries of a gated claim that keeps meeting a change of the same items (then the queue's retry). */
const CLAIM_ROUNDS = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The message as the queue carries a task attempt, without a wake's fields. */
function plain(msg: TaskMessage): TaskMessage {
  const { dagId, runId, taskId, attempt, dagVersion, executor } = msg;
  return { dagId, runId, taskId, attempt, dagVersion, ...(executor ? { executor } : {}) };
}

/**
 * Starts the oldest attempts waiting at a gate, as many as it has free slots: their messages go
 * back to the queue, each with its place and a wake id of its own. Sending more than the free
 * slots take (two wakes at once) costs a refused claim each, nothing more.
 */
export async function wake(deps: Deps, gate: string): Promise<number> {
  let view = await deps.store.gateView(gate, WAKE_BATCH);
  // More free slots than waiters read (a pool grown by a hundred): read as many as fit.
  if (view.waiters.length === WAKE_BATCH && wakeable(view, WAKE_BATCH + 1) > WAKE_BATCH) {
    view = await deps.store.gateView(gate, Math.min(MAX_WAKE, wakeable(view, MAX_WAKE)));
  }
  const n = wakeable(view, view.waiters.length);
  if (n === 0) return 0;
  await deps.dispatcher.dispatch(
    view.waiters
      .slice(0, n)
      .map((w) => ({ ...plain(w.message), waiter: w.waiter, wake: deps.newId() })),
  );
  return n;
}

/**
 * Slots were given back: wake the waiters they free. Best effort: a wake lost here (the worker
 * died, the queue refused) is made by the reaper's next look at the gates.
 */
export async function released(deps: Deps, gates: readonly string[] | null | undefined) {
  for (const gate of gates ?? []) {
    await wake(deps, gate).catch((e: unknown) => {
      console.error(`could not wake the tasks waiting at ${gate}: ${(e as Error).message}`);
    });
  }
}

/**
 * Claims an attempt that passes gates (a pool, its DAG's `maxActiveTasks`): the claim and a slot
 * of each gate in one write. An attempt that finds a gate full, or older attempts waiting at it,
 * parks there, out of the queue, and its message is done with: it costs nothing while it waits,
 * and the end of a running attempt wakes the oldest waiter. Throws as a plain claim does
 * (ConflictError with the task instance, NotFoundError) when the attempt is not claimable.
 */
export async function claimThroughGates(
  deps: Deps,
  msg: TaskMessage,
  gates: readonly Gate[],
  leaseSeconds: number,
): Promise<TaskInstanceRecord | 'waiting'> {
  for (let round = 1; ; round++) {
    // A woken attempt tries at once; a newcomer first looks whether others wait before it.
    const [ti, ...views] = await Promise.all([
      deps.store.getTaskInstance(msg),
      ...(msg.waiter ? [] : gates.map((g) => deps.store.gateView(g.id, 1))),
    ]);
    if (!ti) throw new NotFoundError(`task ${msg.taskId} of run ${msg.runId}: not found`);
    if (ti.status !== 'queued' || ti.attempt !== msg.attempt || ti.leaseToken !== null) {
      throw new ConflictError(`claim ${msg.runId}/${msg.taskId}: it moved on`, ti);
    }
    // It waits, and this is not the wake of where it waits: an earlier delivery. Its wake comes.
    if (ti.parked && ti.parked !== msg.waiter) return 'waiting';
    const since = ti.queuedAt ?? deps.clock().toISOString();
    let full = gates.find((g, i) => {
      const view = views[i];
      if (!view) return false;
      const head = view.waiters[0];
      const before =
        head !== undefined &&
        parseWaiter(head.waiter).since <= since &&
        !(head.message.runId === msg.runId && head.message.taskId === msg.taskId);
      return before || !hasRoom({ slots: g.slots ?? view.slots, used: view.used });
    })?.id;
    if (full === undefined) {
      try {
        const r = await deps.store.claimGated(
          msg,
          { ...claimTask(ti, deps.newId(), leaseSeconds, deps.clock()), from: ti },
          gates,
        );
        if ('claimed' in r) return r.claimed;
        full = r.full;
      } catch (e) {
        // Two claims on one gate at once (DynamoDB cancels one transaction): read again.
        if (e instanceof ThrottledError && round < CLAIM_ROUNDS) {
          await sleep(20 * round * (1 + deps.random()));
          continue;
        }
        if (e instanceof ConflictError && round < CLAIM_ROUNDS) continue;
        throw e;
      }
    }
    if (await deps.store.parkTask(ti, waiterOf(full, since), plain(msg))) {
      // A slot freed between the look and the park would wake nobody: look once more. Moved
      // from another gate (woken there, full here), it leaves a slot there for the next waiter.
      await wake(deps, full);
      const left = ti.parked ? parseWaiter(ti.parked).gate : undefined;
      if (left !== undefined && left !== full) await wake(deps, left);
      return 'waiting';
    }
    if (round >= CLAIM_ROUNDS) return 'waiting';
  }
}

/** Pools (DESIGN.md section 5): create or resize, then start what the new slots allow. */
export async function putPool(deps: Deps, pool: string, slots: number): Promise<PoolRecord> {
  const record = await deps.store.putPool(pool, slots, deps.clock());
  await wake(deps, poolGate(pool));
  return record;
}

/**
 * The reaper's look at the gates that have had a waiter for `graceSeconds`: wakes those that
 * free slots let start, where the wake that should have come was lost (a worker that died
 * between an attempt's end and its wake). One read per such gate; none for the others.
 */
export async function wakeGates(deps: Deps, graceSeconds: number, limit: number): Promise<number> {
  const before = new Date(deps.clock().getTime() - graceSeconds * 1000);
  let woken = 0;
  for (const gate of await deps.store.findWaitingGates(before, limit)) {
    // One gate that cannot be woken now does not hold up the others of this pass: the look
    // goes on after them next time, so they would wait a whole round.
    woken += await wake(deps, gate).catch((e: unknown) => {
      console.error(`could not wake the tasks waiting at ${gate}: ${(e as Error).message}`);
      return 0;
    });
  }
  return woken;
}

/** Something a registration accepted but the user should hear of, at a JSON path of the file. */
export interface Warning {
  readonly path: string;
  readonly message: string;
}

/**
 * The pools a DAG names that do not exist (yet): registering it is not refused, since a pool
 * may be created after its DAG, but its tasks wait until it is, as Airflow warns of a DAG's
 * non-existent pool. One warning per pool, at the first place the file names it.
 */
export async function missingPools(deps: Deps, dag: Dag, text: string): Promise<Warning[]> {
  const named = new Map<string, number>();
  dag.tasks.forEach((t, i) => {
    if (t.pool && !named.has(t.pool)) named.set(t.pool, i);
  });
  if (named.size === 0) return [];
  let raw: { tasks?: { pool?: unknown }[]; defaults?: { pool?: unknown } } = {};
  try {
    raw = JSON.parse(text);
  } catch {
    // Validated already: it parses.
  }
  const out: Warning[] = [];
  for (const [pool, i] of named) {
    if ((await deps.store.gateView(poolGate(pool), 0)).slots !== null) continue;
    const own = raw.tasks?.[i]?.pool === pool;
    out.push({
      path: own ? `$.tasks[${i}].pool` : '$.defaults.pool',
      message: `pool "${pool}" does not exist: its tasks wait until it is created (airless pools set ${pool} SLOTS)`,
    });
  }
  return out;
}
