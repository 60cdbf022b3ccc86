import { describe, expect, it } from 'vitest';
import { ManualClock, type MemoryDeps, memoryDeps } from '../../adapters/memory/deps.ts';
import { MemoryStateStore } from '../../adapters/memory/store.ts';
import { advance } from '../../app/advance.ts';
import { registerDag } from '../../app/dags.ts';
import { indexContinued, reapExpiredLease } from '../../app/leases.ts';
import { reap } from '../../app/reaper.ts';
import { onRetryTimer } from '../../app/retries.ts';
import { triggerRun } from '../../app/runs.ts';
import { type ExecuteOptions, executeTask } from '../../app/tasks.ts';
import type { noopConfig } from '../../core/dag/operators.ts';
import type { RetryTimer, TaskInstanceRecord, TaskMessage } from '../../core/ports.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * A success and the claim of the task it continues into go out together (app/tasks.ts,
 * claimAhead): neither waits for the other, so the claim is tentative until the success is known
 * to have landed. Here the success is refused, because the reaper took the attempt back while
 * its operator ran: the claim must never run the next task on an outcome that did not happen,
 * whether its worker withdraws it, or dies first and leaves it to the walk of the upstream task's
 * real outcome, or to the reaper. On the in-memory ports; the emulator's side of the one request
 * is in test/e2e/faults.test.ts.
 */

/** Records the tentative claims and their settlements. */
class RecordingStore extends MemoryStateStore {
  readonly events: string[] = [];
  override async recordUpstreamOutcome(
    ...args: Parameters<MemoryStateStore['recordUpstreamOutcome']>
  ): ReturnType<MemoryStateStore['recordUpstreamOutcome']> {
    const r = await super.recordUpstreamOutcome(...args);
    if (args[4]?.claim?.tentative) {
      this.events.push(
        `claim ${args[0].taskId}${r.counted ? ' tentatively' : ': counted already'}`,
      );
    }
    return r;
  }
  override async settleTentative(
    ...args: Parameters<MemoryStateStore['settleTentative']>
  ): ReturnType<MemoryStateStore['settleTentative']> {
    try {
      const r = await super.settleTentative(...args);
      this.events.push(`${args[2]} ${args[0].taskId}`);
      return r;
    } catch (e) {
      this.events.push(`${args[2]} ${args[0].taskId}: refused`);
      throw e;
    }
  }
}

const worker = (): ExecuteOptions => ({
  leaseSeconds: 120,
  heartbeatSeconds: 30,
  remainingMs: () => 900_000,
  continuations: 8,
});

const reaper = { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 };

/**
 * a → b. a's first attempt is taken back by the reaper while its operator runs (its lease ran
 * out), so its success is refused; with `dies`, its worker dies before withdrawing b's claim.
 */
async function refusedSuccess(opts: { retries: number; dies: boolean }) {
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
  const runs: string[] = [];
  let deps: MemoryDeps | undefined;
  const stolen: RunOperator<typeof noopConfig._output> = {
    ...noop,
    name: 'stolen',
    async run(_config, ctx) {
      runs.push(`${ctx.task.taskId}@${ctx.attempt}`);
      if (runs.length === 1) {
        const ti = await deps?.store.getTaskInstance({
          dagId: ctx.dagId,
          runId: ctx.runId,
          taskId: 'a',
        });
        clock.advance(121);
        expect(
          await reapExpiredLease(deps as MemoryDeps, ti as TaskInstanceRecord, clock.now()),
        ).toBe(true);
      }
      return null;
    },
  };
  const store = new RecordingStore();
  deps = {
    ...memoryDeps({
      store,
      clock: clock.now,
      operators: new OperatorRegistry().register(noop).register(stolen),
    }),
    faultsEnabled: true,
  };
  const dagId = `tentative_${Math.random().toString(36).slice(2, 10)}`;
  const task = { operator: 'stolen', config: {}, retries: opts.retries, retryDelaySeconds: 0 };
  const r = await registerDag(
    deps,
    JSON.stringify({
      dagId,
      tasks: [
        { taskId: 'a', ...task },
        { taskId: 'b', ...task, dependsOn: ['a'] },
      ],
      params: opts.dies
        ? { airlessFaults: [{ point: 'worker.before-withdraw', taskId: 'a', action: 'crash' }] }
        : {},
    }),
  );
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId });
  const runId = run.runId;
  const [a] = deps.dispatcher.takeAll() as [TaskMessage];
  const d = deps;
  const get = async (taskId: string) =>
    (await d.store.getTaskInstance({ dagId, runId, taskId })) as TaskInstanceRecord;
  const statuses = async () =>
    (await d.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t.status, t.attempt]);
  const runStatus = async () => (await d.store.getRun(dagId, runId))?.status;
  /** a's retry: its timer fires, and its message is run (with whatever it continues into). */
  const retryA = async () => {
    const timers = d.timers.takeDue(clock.now()) as RetryTimer[];
    expect(timers.map((t) => t.taskId)).toEqual(['a']);
    expect(await onRetryTimer(d, timers[0] as RetryTimer)).toBe('queued');
    for (const m of d.dispatcher.takeAll()) await executeTask(d, m, worker());
  };

  const first = opts.dies
    ? await executeTask(deps, a, worker()).then(
        () => 'returned',
        (e: Error) => e.message,
      )
    : await executeTask(deps, a, worker());
  return { deps, store, clock, runs, first, get, statuses, runStatus, retryA, a };
}

describe('a refused success whose continuation’s claim went with it', () => {
  it('withdraws the claim: the next task is pending again, and runs once on the retry’s success', async () => {
    const w = await refusedSuccess({ retries: 1, dies: false });
    expect(w.first).toBe('lease_lost');
    expect(w.store.events).toEqual(['claim b tentatively', 'withdraw b']);
    // As before the claim: nothing counted, no attempt, no lease.
    const b = await w.get('b');
    expect(b).toMatchObject({ status: 'pending', attempt: 0, leaseToken: null });
    expect(b.counts).toEqual({ success: 0, failed: 0, upstreamFailed: 0, skipped: 0 });
    expect(b.tentative).toBeUndefined();
    expect(b.continued).toBeUndefined();
    await w.retryA();
    expect(await w.statuses()).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    expect(w.runs).toEqual(['a@1', 'a@2', 'b@1']);
    expect(await w.runStatus()).toBe('success');
  });

  it('its worker dies first: the upstream task’s retry succeeds, its walk confirms the claim, and the reaper retries it', async () => {
    const w = await refusedSuccess({ retries: 1, dies: true });
    expect(w.first).toBe('injected crash at worker.before-withdraw');
    expect(w.store.events).toEqual(['claim b tentatively']);
    expect((await w.get('b')).tentative).toBe(true);
    await w.retryA();
    // a's success could not claim b (claimed already): its walk confirmed the claim that stood
    // on a success after all, and left b, under its dead worker's live lease, to the reaper.
    expect(w.store.events).toEqual([
      'claim b tentatively',
      'claim b: counted already',
      'confirm b',
    ]);
    expect(await w.statuses()).toEqual([
      ['a', 'success', 2],
      ['b', 'running', 1],
    ]);
    expect(w.runs).toEqual(['a@1', 'a@2']);
    w.clock.advance(121);
    expect((await reap(w.deps, reaper)).expiredLeases).toBe(1);
    await w.deps.timers.takeDue(w.clock.now()).reduce(async (p, t) => {
      await p;
      expect(await onRetryTimer(w.deps, t)).toBe('queued');
    }, Promise.resolve());
    for (const m of w.deps.dispatcher.takeAll()) await executeTask(w.deps, m, worker());
    expect(await w.statuses()).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 2],
    ]);
    // b ran once: its first attempt was the dead worker's claim, never run.
    expect(w.runs).toEqual(['a@1', 'a@2', 'b@2']);
    expect(await w.runStatus()).toBe('success');
  });

  it('its worker dies first, and the upstream task fails for good: the claim is undone, the task never runs', async () => {
    const w = await refusedSuccess({ retries: 0, dies: true });
    expect(w.first).toBe('injected crash at worker.before-withdraw');
    const a = await w.get('a');
    expect(a.status).toBe('failed');
    // The table's stream advances a's failure: it finds b's tentative claim, undoes it, and
    // counts the failure as any other.
    await advance(w.deps, a, 'failed', a.dagVersion, a.generation);
    expect(w.store.events).toEqual(['claim b tentatively', 'withdraw b']);
    expect(await w.statuses()).toEqual([
      ['a', 'failed', 1],
      ['b', 'upstream_failed', 0],
    ]);
    expect(w.runs).toEqual(['a@1']);
    expect(await w.runStatus()).toBe('failed');
  });

  it('its worker dies first, and the reaper finds the claim before the upstream task succeeds: undone, not failed', async () => {
    const w = await refusedSuccess({ retries: 1, dies: true });
    // Put in the lease index, as a clear or a run's end would: the reaper can see it.
    await indexContinued(w.deps, [await w.get('b')], w.clock.now());
    const indexed = await w.get('b');
    expect(indexed.tentative).toBe(true);
    expect(indexed.continued).toBeUndefined();
    w.clock.advance(121);
    // a waits for its retry: b's claim does not stand, and is withdrawn rather than reaped.
    expect((await w.get('a')).status).toBe('up_for_retry');
    const reaped = await reap(w.deps, reaper);
    expect(reaped.expiredLeases).toBe(0);
    expect(w.store.events).toEqual(['claim b tentatively', 'withdraw b']);
    expect(await w.get('b')).toMatchObject({ status: 'pending', attempt: 0, leaseToken: null });
    // a's retry (its timer, or the reaper's look at it) runs, and b after it, once.
    for (const t of w.deps.timers.takeDue(w.clock.now())) await onRetryTimer(w.deps, t);
    for (let i = 0; i < 10 && w.deps.dispatcher.waiting.length > 0; i++) {
      await executeTask(w.deps, w.deps.dispatcher.take() as TaskMessage, worker());
    }
    expect(await w.statuses()).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    expect(w.runs).toEqual(['a@1', 'a@2', 'b@1']);
    expect(await w.runStatus()).toBe('success');
  });
});
