import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ManualClock, type MemoryDeps, memoryDeps } from '../../adapters/memory/deps.ts';
import { registerDag } from '../../app/dags.ts';
import { InjectedCrash } from '../../app/faults.ts';
import { putPool, wakeGates } from '../../app/pools.ts';
import { reap } from '../../app/reaper.ts';
import { cancelRun, triggerRun } from '../../app/runs.ts';
import { type ExecuteOptions, type ExecuteOutcome, executeTask } from '../../app/tasks.ts';
import { dagGate, poolGate } from '../../core/pools/index.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * Pools and maxActiveTasks (app/pools.ts) on the in-memory ports: a slot is taken by the write
 * that claims an attempt and given back by the write that ends it, so a gate's count is always
 * its running attempts; a full gate parks the attempt, which costs nothing until a slot frees.
 * The same store behaviour, and a race of 50 claims on a 5-slot pool, are held to DynamoDB by
 * test/contract/state-store.contract.ts (run on the emulator by test/integration).
 */

type Ending = 'success' | 'fail' | 'crash';

/** An operator whose attempts run until the test ends them: the test decides every interleaving. */
function holdOperator() {
  const held = new Map<string, (e: Ending) => void>();
  const op: RunOperator<Record<string, never>> = {
    name: 'hold',
    config: z.strictObject({}),
    run: (_config, ctx) =>
      new Promise((resolve, reject) => {
        held.set(`${ctx.runId}/${ctx.task.taskId}#${ctx.attempt}`, (e) => {
          if (e === 'success') resolve(null);
          else if (e === 'fail') reject(new Error('failed on purpose'));
          else reject(new InjectedCrash('worker.after-claim'));
        });
      }),
  };
  return { op, held };
}

const flush = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

const worker: ExecuteOptions = {
  leaseSeconds: 60,
  heartbeatSeconds: 3600,
  remainingMs: () => 900_000,
};

async function setup(opts: {
  pool?: string;
  slots?: number;
  maxActiveTasks?: number;
  dags?: number;
  tasks?: number;
  retries?: number;
}) {
  const clock = new ManualClock(new Date('2026-11-28T00:00:00Z'));
  const { op, held } = holdOperator();
  const deps = memoryDeps({
    clock: clock.now,
    operators: new OperatorRegistry().register(noop).register(op),
  });
  const id = Math.random().toString(36).slice(2, 10);
  const pool = opts.pool ?? `p_${id}`;
  if (opts.slots !== undefined) await putPool(deps, pool, opts.slots);
  const runs: { dagId: string; runId: string }[] = [];
  for (let d = 0; d < (opts.dags ?? 1); d++) {
    const dagId = `pools_${id}_${d}`;
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        ...(opts.maxActiveTasks ? { maxActiveTasks: opts.maxActiveTasks } : {}),
        defaults: { retries: opts.retries ?? 0, retryDelaySeconds: 0 },
        tasks: Array.from({ length: opts.tasks ?? 3 }, (_, i) => ({
          taskId: `t${i}`,
          operator: 'hold',
          config: {},
          ...(opts.slots !== undefined ? { pool } : {}),
        })),
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId });
    runs.push({ dagId, runId: run.runId });
  }
  const outcomes: ExecuteOutcome[] = [];
  const deliver = (m: TaskMessage) => {
    void executeTask(deps, m, worker).then(
      (o) => outcomes.push(o),
      (e: unknown) => {
        if (!(e instanceof InjectedCrash)) throw e;
      },
    );
  };
  const tasks = async () =>
    (await Promise.all(runs.map((r) => deps.store.listTaskInstances(r.dagId, r.runId)))).flat();
  const running = async () => (await tasks()).filter((t) => t.status === 'running');
  /** Delivers every waiting message at once, and lets them run as far as they can. */
  const deliverAll = async () => {
    for (const m of deps.dispatcher.takeAll()) deliver(m);
    await flush();
  };
  return { deps, clock, held, pool, runs, deliver, deliverAll, tasks, running, outcomes };
}

/** Delivers every waiting message (and those their ends send) and ends each attempt, until idle. */
async function drain(s: Awaited<ReturnType<typeof setup>>, ending: Ending = 'success') {
  for (let i = 0; i < 500; i++) {
    const m = s.deps.dispatcher.take();
    if (m) s.deliver(m);
    await flush();
    const [next] = s.held.entries();
    if (!m && !next) return;
    if (next && !m) {
      s.held.delete(next[0]);
      next[1](ending);
      await flush();
    }
  }
  throw new Error('did not drain');
}

describe('a pool', () => {
  it('runs at most its slots at once; the others wait queued, and start as slots free', async () => {
    const s = await setup({ slots: 2, tasks: 5 });
    await s.deliverAll();
    expect((await s.running()).length).toBe(2);
    expect((await s.tasks()).filter((t) => t.status === 'queued').length).toBe(3);
    expect(await s.deps.store.listPools()).toContainEqual({
      pool: s.pool,
      slots: 2,
      used: 2,
      queued: 3,
    });
    // Waiting costs nothing: no message is left in the queue, and the reaper re-sends none.
    expect(s.deps.dispatcher.waiting).toEqual([]);
    // Long past the reaper's grace for a queued attempt (within the leases): it re-sends none
    // of the waiting ones, pass after pass, and nothing else is sent for them.
    const before = s.deps.dispatcher.sent.length;
    for (let pass = 0; pass < 5; pass++) {
      s.clock.advance(10);
      await reap(s.deps, { queuedGraceSeconds: 1, retryGraceSeconds: 1, limit: 100 });
    }
    expect(s.deps.dispatcher.sent.length - before).toBe(0);
    await drain(s);
    expect((await s.tasks()).map((t) => t.status)).toEqual(Array(5).fill('success'));
    expect(await s.deps.store.listPools()).toContainEqual({
      pool: s.pool,
      slots: 2,
      used: 0,
      queued: 0,
    });
  });

  it('starts waiting tasks in the order they became ready', async () => {
    const s = await setup({ slots: 1, tasks: 1, dags: 5 });
    // Deliver in reverse order of readiness: the first to arrive takes the slot, the rest wait.
    const messages = s.deps.dispatcher.takeAll();
    for (const m of messages.reverse()) {
      s.deliver(m);
      await flush();
    }
    const started: string[] = [];
    for (let i = 0; i < 5; i++) {
      const running = await s.running();
      expect(running.length).toBe(1);
      started.push((running[0] as { dagId: string }).dagId);
      const [next] = s.held.entries();
      if (!next) break;
      s.held.delete(next[0]);
      next[1]('success');
      await flush();
      await s.deliverAll();
    }
    const ready = s.runs.map((r) => r.dagId);
    // The last delivered took the free slot; then the waiters, oldest first.
    expect(started).toEqual([ready[4], ready[0], ready[1], ready[2], ready[3]]);
  });

  it('shrunk below its use lets running tasks finish and starts none until under the limit', async () => {
    const s = await setup({ slots: 3, tasks: 5 });
    await s.deliverAll();
    expect((await s.running()).length).toBe(3);
    await putPool(s.deps, s.pool, 1);
    const end = async () => {
      const [next] = s.held.entries();
      if (!next) throw new Error('nothing running');
      s.held.delete(next[0]);
      next[1]('success');
      await flush();
      await s.deliverAll();
    };
    await end();
    expect((await s.running()).length).toBe(2);
    await end();
    expect((await s.running()).length).toBe(1);
    await end(); // now under the limit: one starts
    expect((await s.running()).length).toBe(1);
    await drain(s);
    expect((await s.tasks()).every((t) => t.status === 'success')).toBe(true);
  });

  it('grown, starts as many waiting tasks as the new slots allow', async () => {
    const s = await setup({ slots: 1, tasks: 4 });
    await s.deliverAll();
    expect((await s.running()).length).toBe(1);
    await putPool(s.deps, s.pool, 3);
    await s.deliverAll();
    expect((await s.running()).length).toBe(3);
  });

  it('that does not exist holds its tasks until it is created', async () => {
    const s = await setup({ slots: 1, tasks: 2 });
    await s.deps.store.deletePool(s.pool);
    await s.deliverAll();
    expect((await s.running()).length).toBe(0);
    // Listed, so that a user sees what the tasks wait for.
    expect(await s.deps.store.listPools()).toContainEqual({
      pool: s.pool,
      slots: null,
      used: 0,
      queued: 2,
    });
    await putPool(s.deps, s.pool, 2);
    await s.deliverAll();
    expect((await s.running()).length).toBe(2);
  });

  it('that does not exist is a warning when a DAG naming it is registered, at its place', async () => {
    const deps = memoryDeps();
    const id = Math.random().toString(36).slice(2, 10);
    await putPool(deps, `here_${id}`, 1);
    const doc = (tasks: object[], defaults = {}) =>
      JSON.stringify({ dagId: `warn_${id}`, defaults, tasks });
    const noopTask = (taskId: string, pool?: string) => ({
      taskId,
      operator: 'noop',
      config: {},
      ...(pool ? { pool } : {}),
    });
    const r = await registerDag(
      deps,
      doc([noopTask('a', `here_${id}`), noopTask('b'), noopTask('c', `gone_${id}`)], {
        pool: `absent_${id}`,
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    expect(r.warnings.map((w) => w.path)).toEqual(['$.defaults.pool', '$.tasks[2].pool']);
    expect(r.warnings[0]?.message).toMatch(new RegExp(`pool "absent_${id}" does not exist`));
    // Once both exist: none.
    await putPool(deps, `absent_${id}`, 1);
    await putPool(deps, `gone_${id}`, 1);
    const again = await registerDag(deps, doc([noopTask('a', `here_${id}`)]));
    expect(again.ok && again.warnings).toEqual([]);
  });

  it('whose lost wake the reaper repairs, even when another gate of its pass cannot be woken', async () => {
    const clock = new ManualClock(new Date('2026-11-28T00:00:00Z'));
    const deps = memoryDeps({ clock: clock.now });
    const id = Math.random().toString(36).slice(2, 10);
    const pools = [`a_${id}`, `b_${id}`];
    for (const pool of pools) {
      await putPool(deps, pool, 0);
      const dagId = `lostwake_${pool}`;
      const r = await registerDag(
        deps,
        JSON.stringify({ dagId, tasks: [{ taskId: 't', operator: 'noop', config: {}, pool }] }),
      );
      if (!r.ok) throw new Error(JSON.stringify(r.issues));
      await triggerRun(deps, { dagId });
    }
    for (const m of deps.dispatcher.takeAll()) {
      expect(await executeTask(deps, m, worker)).toBe('waiting');
    }
    // Slots appear without the wake that PUT sends: a wake lost, as after a worker's death.
    for (const pool of pools) await deps.store.putPool(pool, 1, clock.now());
    clock.advance(600);
    // The first gate of the pass cannot be read now.
    const gateView = deps.store.gateView.bind(deps.store);
    deps.store.gateView = async (gate, n) => {
      if (gate === poolGate(pools[0] as string)) throw new Error('gate unreadable');
      return gateView(gate, n);
    };
    expect(await wakeGates(deps, 120, 10)).toBe(1);
    expect(deps.dispatcher.takeAll().map((m) => m.dagId)).toEqual([`lostwake_${pools[1]}`]);
  });

  it('cannot be deleted while tasks run or wait in it (409), and can once they are done', async () => {
    const s = await setup({ slots: 1, tasks: 2 });
    await s.deliverAll();
    await expect(s.deps.store.deletePool(s.pool)).rejects.toThrow(/1 running and 1 waiting/);
    await drain(s);
    await s.deps.store.deletePool(s.pool);
    expect((await s.deps.store.listPools()).map((p) => p.pool)).not.toContain(s.pool);
    await expect(s.deps.store.deletePool(s.pool)).rejects.toThrow(/not found/);
  });

  it('gives a slot back when a run is cancelled, and forgets its waiting tasks', async () => {
    const s = await setup({ slots: 1, tasks: 3 });
    await s.deliverAll();
    const run = s.runs[0] as { dagId: string; runId: string };
    await cancelRun(s.deps, run.dagId, run.runId);
    expect(await s.deps.store.listPools()).toContainEqual({
      pool: s.pool,
      slots: 1,
      used: 0,
      queued: 0,
    });
  });
});

describe('maxActiveTasks', () => {
  it('caps a DAG’s running tasks across its runs', async () => {
    const s = await setup({ maxActiveTasks: 2, tasks: 3 });
    const dagId = (s.runs[0] as { dagId: string }).dagId;
    await triggerRun(s.deps, { dagId, idempotencyKey: 'second' });
    await s.deliverAll();
    expect(
      (await s.deps.store.listTaskInstances(dagId, (s.runs[0] as { runId: string }).runId)).filter(
        (t) => t.status === 'running',
      ).length,
    ).toBeLessThanOrEqual(2);
    const view = await s.deps.store.gateView(dagGate(dagId), 10);
    expect(view).toMatchObject({ slots: 2, used: 2 });
    expect(view.waiters.length).toBe(4);
  });
});

describe('a gate’s count (property)', () => {
  it('is always its running attempts, never above its slots, under any order of deliveries, duplicates, failures, crashes and reaps', async () => {
    const step = fc.oneof(
      fc.record({ k: fc.constant('deliver' as const), i: fc.nat() }),
      // Several deliveries at once: their reads and claims interleave, as concurrent workers'.
      fc.record({ k: fc.constant('burst' as const), n: fc.integer({ min: 2, max: 6 }) }),
      fc.record({ k: fc.constant('duplicate' as const), i: fc.nat() }),
      fc.record({
        k: fc.constant('end' as const),
        i: fc.nat(),
        how: fc.constantFrom<Ending>('success', 'success', 'fail', 'crash'),
      }),
      fc.record({ k: fc.constant('reap' as const) }),
      fc.record({ k: fc.constant('resize' as const), slots: fc.integer({ min: 0, max: 4 }) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(step, { maxLength: 40 }),
        async (slots, steps) => {
          const s = await setup({ slots, tasks: 3, dags: 2, retries: 1 });
          let limit = slots;
          const check = async () => {
            const running = (await s.running()).length;
            const view = await s.deps.store.gateView(poolGate(s.pool), 100);
            // Exact: every running attempt holds a slot, and every slot is held by one.
            expect(view.used).toBe(running);
            expect(running).toBeLessThanOrEqual(limit);
            // Waiting ones are queued, and wait exactly where their task instance says.
            const parked = (await s.tasks()).filter((t) => t.parked);
            expect(parked.every((t) => t.status === 'queued')).toBe(true);
            expect(view.waiters.map((w) => w.waiter).sort()).toEqual(
              parked.map((t) => t.parked).sort(),
            );
          };
          for (const st of steps) {
            if (st.k === 'deliver') {
              const waiting = s.deps.dispatcher.waiting;
              if (waiting.length > 0) {
                s.deliver(s.deps.dispatcher.take(st.i % waiting.length) as TaskMessage);
              }
            } else if (st.k === 'burst') {
              for (let j = 0; j < st.n; j++) {
                const m = s.deps.dispatcher.take();
                if (m) s.deliver(m);
              }
            } else if (st.k === 'duplicate') {
              const sent = s.deps.dispatcher.sent;
              const m = sent[st.i % Math.max(1, sent.length)];
              if (m) await s.deps.dispatcher.dispatch([m]);
            } else if (st.k === 'end') {
              const all = [...s.held.entries()];
              const e = all[st.i % Math.max(1, all.length)];
              if (e) {
                s.held.delete(e[0]);
                e[1](st.how);
              }
            } else if (st.k === 'reap') {
              s.clock.advance(120);
              await reap(s.deps, { queuedGraceSeconds: 60, retryGraceSeconds: 0, limit: 100 });
            } else {
              // A shrink lets the running finish: the bound is the larger until they do.
              await putPool(s.deps, s.pool, st.slots);
              limit = Math.max(st.slots, (await s.running()).length);
            }
            await flush();
            await check();
            limit = Math.max(
              (await s.deps.store.listPools()).find((p) => p.pool === s.pool)?.slots ?? 0,
              Math.min(limit, (await s.running()).length),
            );
          }
          // Then everything runs to its end: no task lost or left waiting, no slot leaked.
          await putPool(s.deps, s.pool, Math.max(1, slots));
          limit = Number.POSITIVE_INFINITY;
          for (let i = 0; i < 30; i++) {
            await drain(s);
            s.clock.advance(120);
            await reap(s.deps, { queuedGraceSeconds: 60, retryGraceSeconds: 0, limit: 100 });
            await flush();
          }
          await drain(s);
          const statuses = (await s.tasks()).map((t) => t.status);
          expect(statuses.every((x) => x === 'success' || x === 'failed')).toBe(true);
          const view = await s.deps.store.gateView(poolGate(s.pool), 100);
          expect(view.used).toBe(0);
          expect(view.waiters).toEqual([]);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('a task waiting for a slot', () => {
  /**
   * Store calls and queue sends made for a waiting attempt, from its delivery to its claim; and
   * what the reaper's passes meanwhile sent or changed for it.
   */
  async function waitCost(reaperPasses: number) {
    const s = await setup({ slots: 1, tasks: 2 });
    const calls: string[] = [];
    const reaperCalls: string[] = [];
    let counting: string[] | undefined;
    const counted = new Proxy(s.deps.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          counting?.push(String(prop));
          return v.apply(target, args);
        };
      },
    });
    const deps: MemoryDeps = { ...s.deps, store: counted };
    const send = deps.dispatcher.dispatch.bind(deps.dispatcher);
    deps.dispatcher.dispatch = async (m) => {
      if (m.length > 0) counting?.push('sqs.send');
      return send(m);
    };
    const [first, second] = s.deps.dispatcher.takeAll();
    if (!first || !second) throw new Error('two messages expected');
    // Leases longer than the wait: only the end of the first task frees the slot.
    const patient = { ...worker, leaseSeconds: 3600 };
    void executeTask(deps, first, patient);
    await flush();
    counting = calls;
    expect(await executeTask(deps, second, patient)).toBe('waiting');
    counting = reaperCalls;
    for (let pass = 0; pass < reaperPasses; pass++) {
      s.clock.advance(10);
      await reap(deps, { queuedGraceSeconds: 1, retryGraceSeconds: 1, limit: 100 });
    }
    counting = calls;
    const [held] = s.held.values();
    held?.('success');
    await flush();
    const woken = s.deps.dispatcher.take();
    expect(woken?.taskId).toBe('t1');
    void executeTask(deps, woken as TaskMessage, patient);
    await flush();
    counting = undefined;
    expect((await s.running()).map((t) => t.taskId)).toEqual(['t1']);
    return { calls, reaperCalls };
  }

  it('costs a bounded number of requests, however long it waits', async () => {
    const short = await waitCost(0);
    const long = await waitCost(20);
    expect(long.calls).toEqual(short.calls);
    // The reaper's passes send nothing for it and write nothing: they read the gate once each.
    expect(long.reaperCalls).not.toContain('sqs.send');
    expect(long.reaperCalls.filter((c) => c === 'gateView').length).toBe(20);
    expect(long.reaperCalls.filter((c) => /transition|park|claim/.test(c))).toEqual([]);
    // Parking (read the task and its gate, park, look again); the end of the running task (its
    // outcome write gives the slot back: the first task's own cost), then its wake (read the
    // gate, one send); the claim (read the task, claim with the slot).
    expect(short.calls).toEqual([
      'getTaskInstance',
      'gateView',
      'parkTask',
      'gateView',
      'transitionTask',
      'gateView',
      'sqs.send',
      'recordTaskFinished',
      'getTaskInstance',
      'claimGated',
    ]);
  });
});

describe('a waiting task whose DAG version can no longer be read', () => {
  it('fails when woken, leaves the line, and the pool goes on for the others', async () => {
    const s = await setup({ slots: 1, tasks: 1, dags: 2 });
    const [a, b] = s.deps.dispatcher.takeAll();
    if (!a || !b) throw new Error('two messages expected');
    s.deliver(a);
    await flush();
    // A task of a version that cannot be read waits first in line (parked before b).
    const runB = s.runs[1] as { dagId: string; runId: string };
    const { run: other } = await triggerRun(s.deps, { dagId: runB.dagId, idempotencyKey: 'x' });
    const queued = s.deps.dispatcher.takeAll();
    expect(queued.length).toBe(1);
    const unreadable = { ...(queued[0] as TaskMessage), dagVersion: 99 };
    const ti = await s.deps.store.getTaskInstance(unreadable);
    if (!ti) throw new Error('no task');
    await s.deps.store.parkTask(ti, `${poolGate(s.pool)}@2026-01-01T00:00:00.000Z`, unreadable);
    s.deliver(b); // b waits behind it
    await flush();
    expect(await s.deps.store.gateView(poolGate(s.pool), 5)).toMatchObject({ used: 1 });
    // a ends: the first in line is woken, cannot know its gates, and fails for its version.
    const [held] = s.held.values();
    held?.('success');
    await flush();
    for (let i = 0; i < 5; i++) {
      await s.deliverAll();
    }
    const failed = await s.deps.store.getTaskInstance({ ...unreadable, runId: other.runId });
    expect(failed?.status).toBe('failed');
    expect(failed?.error).toMatch(/no version 99/);
    expect((await s.running()).map((t) => t.runId)).toEqual([runB.runId]);
    expect((await s.deps.store.gateView(poolGate(s.pool), 5)).waiters).toEqual([]);
  });
});
