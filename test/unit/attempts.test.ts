import { describe, expect, it } from 'vitest';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { advance } from '../../app/advance.ts';
import { clearTasks } from '../../app/clear.ts';
import { registerDag } from '../../app/dags.ts';
import { reap } from '../../app/reaper.ts';
import { onRetryTimer } from '../../app/retries.ts';
import { triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import type { TaskMessage } from '../../core/ports.ts';
import {
  attemptHistory,
  claimTask,
  finishTask,
  HISTORY_ERROR_CHARS,
  MAX_HISTORY,
} from '../../core/state/index.ts';

/**
 * A task's attempt history (`GET .../tasks/{task_id}`, core/state attemptHistory): the attempts
 * that did not succeed are kept by the write that ends them, those a clear sets aside by the
 * clear; the current one is the task instance. On the in-memory ports; the route runs on the
 * emulator in test/e2e/data-flow.test.ts, and the stores' writes in the store contract.
 */
describe('attempt history', () => {
  it('keeps each failed try, the lease the reaper took back, and the attempt a clear set aside', async () => {
    const clock = new ManualClock(new Date('2026-03-01T00:00:00Z'));
    const deps = memoryDeps({ clock: clock.now });
    const dagId = 'history';
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        tasks: [
          {
            taskId: 't',
            operator: 'noop',
            config: { failAttempts: 1 },
            retries: 3,
            retryDelaySeconds: 0,
          },
        ],
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId });
    const key = { dagId, runId: run.runId, taskId: 't' };
    const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
    const history = async () => {
      const ti = await deps.store.getTaskInstance(key);
      if (!ti) throw new Error('no task');
      return attemptHistory(ti).map((a) => [a.attempt, a.status, a.error?.slice(0, 20) ?? null]);
    };
    expect(await history()).toEqual([[1, 'queued', null]]);

    // Attempt 1 fails on purpose: kept, with its error.
    expect(await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts)).toBe(
      'up_for_retry',
    );
    expect(await history()).toEqual([[1, 'up_for_retry', 'failing attempt 1 of']]);
    const [timer] = deps.timers.takeDue(clock.now());
    expect(await onRetryTimer(deps, timer as never)).toBe('queued');
    // The queued retry carries nothing of the try before: that is in the history.
    const queued = attemptHistory((await deps.store.getTaskInstance(key)) as never).at(-1);
    expect(queued).toEqual({ attempt: 2, status: 'queued', startTime: null, endTime: null });

    // Attempt 2's worker dies after its claim: the reaper takes the lease back.
    const second = deps.dispatcher.take() as TaskMessage;
    await deps.store.transitionTask(key, {
      event: 'claim',
      expect: { status: 'queued', attempt: 2, leaseToken: null },
      set: {
        status: 'running',
        attempt: 2,
        leaseToken: 'dead',
        leaseExpiresAt: clock.advance(0).toISOString(),
        startTime: clock.now().toISOString(),
      },
      at: clock.now().toISOString(),
    });
    clock.advance(61);
    expect(
      (await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 }))
        .expiredLeases,
    ).toBe(1);
    expect(second.attempt).toBe(2);
    expect(await history()).toEqual([
      [1, 'up_for_retry', 'failing attempt 1 of'],
      [2, 'up_for_retry', expect.stringContaining('lease')],
    ]);

    // Attempt 3 succeeds: no history write, the task instance is the attempt.
    for (const t of deps.timers.takeDue(clock.advance(1))) await onRetryTimer(deps, t);
    expect(await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts)).toBe('success');
    expect((await deps.store.getTaskInstance(key))?.history).toHaveLength(2);
    expect(await history()).toEqual([
      [1, 'up_for_retry', 'failing attempt 1 of'],
      [2, 'up_for_retry', expect.stringContaining('lease')],
      [3, 'success', null],
    ]);

    // A clear sets attempt 3 aside and queues attempt 4.
    await clearTasks(deps, dagId, run.runId, 't');
    expect(await history()).toEqual([
      [1, 'up_for_retry', 'failing attempt 1 of'],
      [2, 'up_for_retry', expect.stringContaining('lease')],
      [3, 'success', null],
      [4, 'queued', null],
    ]);
  });

  it('keeps a short copy of a long error', () => {
    const t = finishTask(
      { status: 'running', attempt: 1, leaseToken: 'l', startTime: '2026-03-01T00:00:00.000Z' },
      { ok: false, error: 'e'.repeat(5000), retryAt: null },
      new Date('2026-03-01T00:01:00Z'),
    );
    expect(t.set.past?.error).toHaveLength(HISTORY_ERROR_CHARS);
    expect(t.set.error?.length).toBeGreaterThan(HISTORY_ERROR_CHARS);
  });

  it('shows a task resolved without running after a clear with its real last try', async () => {
    const deps = memoryDeps();
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId: 'resolved',
        tasks: [
          { taskId: 't1', operator: 'noop' },
          { taskId: 't2', operator: 'noop', dependsOn: ['t1'] },
        ],
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId: 'resolved' });
    const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
    const drain = async () => {
      for (let i = 0; i < 20 && deps.dispatcher.waiting.length > 0; i++) {
        await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
      }
    };
    await drain();
    const t2 = async () => {
      const ti = await deps.store.getTaskInstance({
        dagId: 'resolved',
        runId: run.runId,
        taskId: 't2',
      });
      return ti ? attemptHistory(ti).map((a) => [a.attempt, a.status]) : [];
    };
    expect(await t2()).toEqual([[1, 'success']]);
    // t1 cleared, and failing this time: t2 is cleared with it, then resolved upstream_failed
    // without a try of its own, its attempt number still that of its success.
    await clearTasks(deps, 'resolved', run.runId, 't1');
    const ti1 = await deps.store.getTaskInstance({
      dagId: 'resolved',
      runId: run.runId,
      taskId: 't1',
    });
    expect(ti1?.status).toBe('queued');
    const m = deps.dispatcher.take() as TaskMessage;
    // Fail attempt 2 as a worker would report it.
    const claimed = await deps.store.transitionTask(
      m,
      claimTask(ti1 as never, 'l2', 60, new Date()),
    );
    const failed = await deps.store.transitionTask(
      m,
      finishTask(claimed, { ok: false, error: 'broke', retryAt: null }, new Date()),
    );
    await advance(deps, failed, 'failed', failed.dagVersion, failed.generation);
    expect(
      (await deps.store.getTaskInstance({ dagId: 'resolved', runId: run.runId, taskId: 't2' }))
        ?.status,
    ).toBe('upstream_failed');
    expect(await t2()).toEqual([[1, 'success']]);
  });

  it('keeps no more than the latest attempts through many clears, and a failure once', async () => {
    const deps = memoryDeps();
    const r = await registerDag(
      deps,
      JSON.stringify({ dagId: 'many', tasks: [{ taskId: 't', operator: 'noop' }] }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId: 'many' });
    const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
    for (let i = 0; i < MAX_HISTORY + 5; i++) {
      await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
      await clearTasks(deps, 'many', run.runId, 't');
    }
    const ti = await deps.store.getTaskInstance({ dagId: 'many', runId: run.runId, taskId: 't' });
    expect(ti?.history).toHaveLength(MAX_HISTORY);
    expect(ti?.history?.at(-1)).toMatchObject({ attempt: MAX_HISTORY + 5, status: 'success' });
    expect(ti?.history?.[0]).toMatchObject({ attempt: 6 });
  });

  it('lets the current attempt’s own fields win over its kept copy', () => {
    const long = 'x'.repeat(5000);
    const [a] = attemptHistory({
      status: 'failed',
      attempt: 1,
      leaseToken: null,
      startTime: null,
      endTime: null,
      error: long,
      history: [
        {
          attempt: 1,
          status: 'failed',
          startTime: null,
          endTime: null,
          error: long.slice(0, HISTORY_ERROR_CHARS),
        },
      ],
    });
    expect(a?.error).toHaveLength(5000);
  });
});
