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
 * real outcome, or to the reaper. On the in-memory ports; on the emulator, the one request is in
 * test/integration/dynamodb-store.contract.test.ts and two of these scenarios in
 * test/e2e/faults-tentative.test.ts.
 */

/** Records the tentative claims and their settlements; fails a's first success, if told to. */
class RecordingStore extends MemoryStateStore {
  readonly events: string[] = [];
  failSuccess = false;
  override async transitionTask(
    ...args: Parameters<MemoryStateStore['transitionTask']>
  ): ReturnType<MemoryStateStore['transitionTask']> {
    if (this.failSuccess && args[1].event === 'finish' && args[0].taskId === 'a') {
      this.failSuccess = false;
      throw new Error('the network failed');
    }
    return super.transitionTask(...args);
  }
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
 * a → b (b without retries). a's first attempt is taken back by the reaper while its operator
 * runs (its lease ran out), so its success is refused; with `dies`, its worker dies before
 * withdrawing b's claim. With `writeFails`, nothing takes a back: its success write fails.
 */
async function refusedSuccess(opts: { retries: number; dies: boolean; writeFails?: boolean }) {
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
  const runs: string[] = [];
  let deps: MemoryDeps | undefined;
  const stolen: RunOperator<typeof noopConfig._output> = {
    ...noop,
    name: 'stolen',
    async run(_config, ctx) {
      runs.push(`${ctx.task.taskId}@${ctx.attempt}`);
      if (runs.length === 1 && !opts.writeFails) {
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
  store.failSuccess = opts.writeFails === true;
  deps = {
    ...memoryDeps({
      store,
      clock: clock.now,
      operators: new OperatorRegistry().register(noop).register(stolen),
    }),
    faultsEnabled: true,
  };
  const dagId = `tentative_${Math.random().toString(36).slice(2, 10)}`;
  const task = { operator: 'stolen', config: {}, retryDelaySeconds: 0 };
  const r = await registerDag(
    deps,
    JSON.stringify({
      dagId,
      tasks: [
        { taskId: 'a', ...task, retries: opts.retries },
        { taskId: 'b', ...task, retries: 0, dependsOn: ['a'] },
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

  const first =
    opts.dies || opts.writeFails
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

  it('its worker dies first: the upstream task’s retry succeeds, and its walk withdraws the claim and runs the task afresh', async () => {
    const w = await refusedSuccess({ retries: 1, dies: true });
    expect(w.first).toBe('injected crash at worker.before-withdraw');
    expect(w.store.events).toEqual(['claim b tentatively']);
    expect((await w.get('b')).tentative).toBe(1);
    await w.retryA();
    // a's retry could not claim b (claimed already). Its walk found the claim, which went with
    // a's first attempt, whose success never landed: withdrawn, and b counted, queued and
    // claimed afresh for its first attempt (b has no retries: none is lost).
    expect(w.store.events).toEqual([
      'claim b tentatively',
      'claim b: counted already',
      'withdraw b',
    ]);
    expect(await w.statuses()).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    expect(w.runs).toEqual(['a@1', 'a@2', 'b@1']);
    expect(await w.runStatus()).toBe('success');
  });

  it('its worker dies first, and the claim is indexed before the upstream task’s failure is walked: undone by the walk', async () => {
    const w = await refusedSuccess({ retries: 0, dies: true });
    // Put in the lease index, as a clear or a run's end would: a continuation no longer.
    await indexContinued(w.deps, [await w.get('b')], w.clock.now());
    expect((await w.get('b')).continued).toBeUndefined();
    const a = await w.get('a');
    await advance(w.deps, a, 'failed', a.dagVersion, a.generation);
    expect(w.store.events).toEqual(['claim b tentatively', 'withdraw b']);
    expect(await w.statuses()).toEqual([
      ['a', 'failed', 1],
      ['b', 'upstream_failed', 0],
    ]);
    expect(await w.runStatus()).toBe('failed');
    // Nothing left for the reaper, once the lease would have run out.
    w.clock.advance(121);
    expect((await reap(w.deps, reaper)).expiredLeases).toBe(0);
    expect(w.runs).toEqual(['a@1']);
  });

  it('its success write fails outright (not refused): the claim is withdrawn before the error goes up', async () => {
    const w = await refusedSuccess({ retries: 1, dies: false, writeFails: true });
    expect(w.first).toBe('the network failed');
    expect(w.store.events).toEqual(['claim b tentatively', 'withdraw b']);
    expect(await w.get('b')).toMatchObject({ status: 'pending', attempt: 0, leaseToken: null });
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
    expect(indexed.tentative).toBe(1);
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
