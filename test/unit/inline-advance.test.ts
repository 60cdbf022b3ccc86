import { describe, expect, it } from 'vitest';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { MemoryStateStore } from '../../adapters/memory/store.ts';
import { advance, failUnprocessableRun } from '../../app/advance.ts';
import { clearTasks } from '../../app/clear.ts';
import { registerDag } from '../../app/dags.ts';
import { indexContinued } from '../../app/leases.ts';
import { reap } from '../../app/reaper.ts';
import { onRetryTimer } from '../../app/retries.ts';
import { cancelRun, triggerRun } from '../../app/runs.ts';
import { type ExecuteOptions, executeTask } from '../../app/tasks.ts';
import type { noopConfig } from '../../core/dag/operators.ts';
import { ConflictError } from '../../core/errors.ts';
import type { RetryTimer, TaskInstanceRecord, TaskMessage } from '../../core/ports.ts';
import { claimTask, finishTask, heartbeatTask, indexLeaseTask } from '../../core/state/index.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * The worker advances readiness from its own success (app/tasks.ts, app/advance.ts), continues
 * into a chain's next task, and keeps small logs inline; a worker that dies after its outcome
 * leaves its message to finish the job. On the in-memory ports: the same paths run on the
 * emulator in test/e2e/faults.test.ts, and under any order of deliveries and deaths in
 * test/unit/app-properties.test.ts.
 */

/**
 * A store whose process dies (throws) before the n-th write of a kind: a count of an upstream
 * outcome on a downstream task, or an attempt's outcome.
 */
class DyingStore extends MemoryStateStore {
  countsBeforeDeath = Number.POSITIVE_INFINITY;
  outcomesBeforeDeath = Number.POSITIVE_INFINITY;
  override async recordUpstreamOutcome(
    ...args: Parameters<MemoryStateStore['recordUpstreamOutcome']>
  ): ReturnType<MemoryStateStore['recordUpstreamOutcome']> {
    if (this.countsBeforeDeath-- <= 0) throw new Error('the process died');
    return super.recordUpstreamOutcome(...args);
  }
  override async transitionTask(
    ...args: Parameters<MemoryStateStore['transitionTask']>
  ): ReturnType<MemoryStateStore['transitionTask']> {
    if (args[1].event === 'finish' && this.outcomesBeforeDeath-- <= 0) {
      throw new Error('the process died');
    }
    return super.transitionTask(...args);
  }
  revive() {
    this.countsBeforeDeath = Number.POSITIVE_INFINITY;
    this.outcomesBeforeDeath = Number.POSITIVE_INFINITY;
  }
}

const worker = (extra: Partial<ExecuteOptions> = {}): ExecuteOptions => ({
  leaseSeconds: 120,
  heartbeatSeconds: 30,
  remainingMs: () => 900_000,
  ...extra,
});

async function setup(tasks: object[], clock?: ManualClock, operators?: OperatorRegistry) {
  const store = new DyingStore();
  const deps = memoryDeps({
    store,
    ...(clock ? { clock: clock.now } : {}),
    ...(operators ? { operators } : {}),
  });
  const dagId = `inline_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(deps, JSON.stringify({ dagId, tasks }));
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId });
  const statuses = async () =>
    (await deps.store.listTaskInstances(dagId, run.runId)).map((t) => [
      t.taskId,
      t.status,
      t.attempt,
    ]);
  const runStatus = async () => (await deps.store.getRun(dagId, run.runId))?.status;
  /** Runs every waiting message, as the queue would deliver them, until none is left. */
  const drain = async (opts: ExecuteOptions) => {
    for (let i = 0; i < 100 && deps.dispatcher.waiting.length > 0; i++) {
      await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
    }
  };
  return { deps, store, dagId, runId: run.runId, statuses, runStatus, drain };
}

const chain = (n: number, extra: object = {}) =>
  Array.from({ length: n }, (_, i) => ({
    taskId: `t${i}`,
    operator: 'noop',
    ...(i > 0 ? { dependsOn: [`t${i - 1}`] } : {}),
    ...extra,
  }));

/**
 * A 3-task chain whose first worker ran t0, continued into t1 and then t2 (claimed in the write
 * that counted t1's success), and died before t2's outcome: t2 is running, in no lease index.
 */
async function diedInContinuedT2() {
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
  const world = await setup(chain(3), clock);
  const [t0] = world.deps.dispatcher.takeAll() as [TaskMessage];
  world.store.outcomesBeforeDeath = 2;
  await expect(executeTask(world.deps, t0, worker({ continuations: 8 }))).rejects.toThrow('died');
  world.store.revive();
  return { ...world, clock, t0 };
}

describe('a worker that writes a success', () => {
  it('runs a chain’s next tasks itself: one message for the whole chain, each task once', async () => {
    const { deps, statuses, runStatus, drain } = await setup(chain(4));
    await drain(worker({ continuations: 8 }));
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0']);
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'success', 1],
      ['t3', 'success', 1],
    ]);
    expect(await runStatus()).toBe('success');
  });

  it('continues at most the given number of tasks in a row, then sends the next', async () => {
    const { deps, runStatus, drain } = await setup(chain(5));
    await drain(worker({ continuations: 1 }));
    // t0 from the queue, t1 continued; t2 sent, t3 continued; t4 sent.
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0', 't2', 't4']);
    expect(await runStatus()).toBe('success');
  });

  it('continues for at most the given time, then sends the next', async () => {
    // Each task takes 2 s of the invocation's time; the continuation may go on for 5 s after
    // the end of the task the worker took from the queue.
    let elapsed = 0;
    const tick: RunOperator<typeof noopConfig._output> = {
      ...noop,
      name: 'tick',
      async run() {
        elapsed += 2000;
        return null;
      },
    };
    const operators = new OperatorRegistry().register(noop).register(tick);
    const { deps, runStatus, drain } = await setup(
      chain(7, { operator: 'tick', config: {} }),
      undefined,
      operators,
    );
    await drain(
      worker({ continuations: 100, continuationMs: 5000, remainingMs: () => 900_000 - elapsed }),
    );
    // t0 from the queue ends at 2 s: t1, t2 and t3 are continued (they start at 2, 4 and 6 s,
    // within 5 s of 2 s), t4 is sent; then t4 ends at 10 s, and t5, t6 are continued.
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0', 't4']);
    expect(await runStatus()).toBe('success');
  });

  it('does not continue into a task whose timeout does not fit in the time left', async () => {
    const { deps, drain } = await setup(chain(3, { timeoutSeconds: 60 }));
    await drain(worker({ continuations: 8, remainingMs: () => 70_000 }));
    // 70 s left less the 15 s kept for writing the outcome: a 60-second task does not fit.
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0', 't1', 't2']);
  });

  it('sends every ready task when more than one became ready', async () => {
    const { deps, runStatus, drain } = await setup([
      { taskId: 'a', operator: 'noop' },
      { taskId: 'b', operator: 'noop', dependsOn: ['a'] },
      { taskId: 'c', operator: 'noop', dependsOn: ['a'] },
    ]);
    await drain(worker({ continuations: 8 }));
    expect(deps.dispatcher.sent.map((m) => m.taskId).sort()).toEqual(['a', 'b', 'c']);
    expect(await runStatus()).toBe('success');
  });

  it('keeps a small log with its outcome, and copies it out before a cleared rerun replaces it', async () => {
    const { deps, dagId, runId, drain } = await setup(chain(1));
    await drain(worker());
    const first = await deps.store.getTaskInstance({ dagId, runId, taskId: 't0' });
    expect(first).toMatchObject({ status: 'success', logAttempt: 1 });
    expect(first?.log).toMatch(/ success\n$/);
    expect(await deps.blobs.getLog({ dagId, runId, taskId: 't0', attempt: 1 })).toBeUndefined();
    await clearTasks(deps, dagId, runId, 't0');
    await drain(worker());
    const second = await deps.store.getTaskInstance({ dagId, runId, taskId: 't0' });
    expect(second).toMatchObject({ status: 'success', attempt: 2, logAttempt: 2 });
    // Attempt 1's log was moved to S3 when attempt 2 was claimed: both are still readable.
    expect(await deps.blobs.getLog({ dagId, runId, taskId: 't0', attempt: 1 })).toBe(first?.log);
  });
});

describe('a write whose answer is lost', () => {
  it('still runs the task that the lost “count, queue and claim” claimed for it', async () => {
    // The write lands, its answer is lost, the SDK's retry is refused: the store answers as for
    // a duplicate, with the task claimed under this worker's lease.
    class LostAnswerStore extends MemoryStateStore {
      override async recordUpstreamOutcome(
        ...args: Parameters<MemoryStateStore['recordUpstreamOutcome']>
      ): ReturnType<MemoryStateStore['recordUpstreamOutcome']> {
        const first = await super.recordUpstreamOutcome(...args);
        return args[4]?.claim ? super.recordUpstreamOutcome(...args) : first;
      }
    }
    const store = new LostAnswerStore();
    const deps = memoryDeps({ store });
    const r = await registerDag(deps, JSON.stringify({ dagId: 'lost', tasks: chain(3) }));
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId: 'lost' });
    const [t0] = deps.dispatcher.takeAll() as [TaskMessage];
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('success');
    expect(
      (await deps.store.listTaskInstances('lost', run.runId)).map((t) => [
        t.taskId,
        t.status,
        t.attempt,
      ]),
    ).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'success', 1],
    ]);
    expect((await deps.store.getRun('lost', run.runId))?.status).toBe('success');
  });
});

describe('a worker that dies after its success', () => {
  it('leaves its message to come back, and that delivery finishes readiness and the run', async () => {
    const { deps, store, statuses, runStatus, drain } = await setup(chain(2));
    const [t0] = deps.dispatcher.takeAll() as [TaskMessage];
    store.countsBeforeDeath = 0; // dies after t0's outcome, before counting it on t1
    await expect(executeTask(deps, t0, worker({ continuations: 8 }))).rejects.toThrow('died');
    store.revive();
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'pending', 0],
    ]);
    expect(await runStatus()).toBe('running');
    // The message was never deleted: it comes back. Its claim is refused, and it advances.
    expect(await executeTask(deps, t0, worker())).toBe('not_claimed');
    expect(deps.dispatcher.waiting.map((m) => m.taskId)).toEqual(['t1']);
    await drain(worker());
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
    ]);
    expect(await runStatus()).toBe('success');
    expect(deps.dispatcher.waiting).toEqual([]);
  });

  it('in a continued task: the first message’s return finishes the continued task’s readiness', async () => {
    const { deps, store, runStatus, statuses, drain } = await setup(chain(3));
    const [t0] = deps.dispatcher.takeAll() as [TaskMessage];
    // t0 continues into t1 (counted and claimed in one write); t1 may not continue, and dies
    // before counting its success on t2: t1 (no message of its own) succeeded, unadvanced.
    store.countsBeforeDeath = 1;
    await expect(executeTask(deps, t0, worker({ continuations: 1 }))).rejects.toThrow('died');
    store.revive();
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0']);
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'pending', 0],
    ]);
    // The first message's return walks t0 → t1 (a success advanced inline) and advances it.
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('not_claimed');
    expect(deps.dispatcher.waiting.map((m) => m.taskId)).toEqual(['t2']);
    await drain(worker());
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'success', 1],
    ]);
    expect(await runStatus()).toBe('success');
  });

  it('after claiming its continued task in the same write: the message’s return reaps it once its lease has run out', async () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    const { deps, store, runStatus, statuses, drain } = await setup(
      chain(3, { retries: 1, retryDelaySeconds: 0 }),
      clock,
    );
    const [t0] = deps.dispatcher.takeAll() as [TaskMessage];
    // Dies before t2's outcome, after the write that counted t1's success into t2 also
    // claimed t2 for this worker (a chain edge continued: one write, no message).
    store.outcomesBeforeDeath = 2;
    await expect(executeTask(deps, t0, worker({ continuations: 8 }))).rejects.toThrow('died');
    store.revive();
    expect(deps.dispatcher.sent.map((m) => m.taskId)).toEqual(['t0']);
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'running', 1],
    ]);
    // t2 is in no lease index: the reaper cannot see it, even once its lease has run out.
    clock.advance(121);
    expect(
      (await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 }))
        .expiredLeases,
    ).toBe(0);
    // The message's return walks t0 → t1 → t2, running under an expired lease: failed, to retry.
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('not_claimed');
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'up_for_retry', 1],
    ]);
    const [timer] = deps.timers.takeDue(clock.now());
    expect(timer).toMatchObject({ taskId: 't2', failedAttempt: 1 });
    expect(await onRetryTimer(deps, timer as RetryTimer)).toBe('queued');
    await drain(worker());
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'success', 2],
    ]);
    expect(await runStatus()).toBe('success');
    // Said in its log, as the reaper says it.
    const log = await deps.blobs.getLog({
      dagId: t0.dagId,
      runId: t0.runId,
      taskId: 't2',
      attempt: 1,
    });
    expect(log).toMatch(/lease expired/);
  });

  it('a message that comes back while its continued task holds its lease leaves that task to the reaper', async () => {
    const { clock, deps, statuses, t0 } = await diedInContinuedT2();
    const leased = (await deps.store.getTaskInstance({
      ...t0,
      taskId: 't2',
    })) as TaskInstanceRecord;
    // Back before the lease ran out (a duplicate, while the worker may still be alive): the
    // continued attempt is left running, under the lease it has, and now in the lease index.
    clock.advance(60);
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('not_claimed');
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t2', 'running', 1],
    ]);
    const indexed = (await deps.store.getTaskInstance({
      ...t0,
      taskId: 't2',
    })) as TaskInstanceRecord;
    expect(indexed).toMatchObject({
      leaseToken: leased.leaseToken,
      leaseExpiresAt: leased.leaseExpiresAt,
    });
    expect(indexed.continued).toBeUndefined();
    const reaper = { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 };
    expect((await reap(deps, reaper)).expiredLeases).toBe(0);
    // Its worker was dead after all: once the lease runs out, the reaper fails it (no retries).
    clock.advance(61);
    expect((await reap(deps, reaper)).expiredLeases).toBe(1);
    expect((await statuses())[2]).toEqual(['t2', 'failed', 1]);
  });

  it('a message that comes back while its continued task lives leaves that task to its worker', async () => {
    const { clock, deps, statuses, runStatus, t0 } = await diedInContinuedT2();
    const read = (await deps.store.getTaskInstance({ ...t0, taskId: 't2' })) as TaskInstanceRecord;
    // The worker lives on (it was another that died, say) and heartbeats: renewed, and indexed.
    clock.advance(100);
    const beat = await deps.store.transitionTask(read, heartbeatTask(read, 120, clock.now()));
    // Indexing the task under the lease as read first (as a walk, a clear or a run's end that
    // read it before the heartbeat would) is refused: the lease stays renewed, and the reaper
    // does not fail a live attempt when the old lease would have run out.
    await expect(
      deps.store.transitionTask(read, indexLeaseTask(read, clock.now())),
    ).rejects.toBeInstanceOf(ConflictError);
    await indexContinued(deps, [read], clock.now());
    expect(await deps.store.getTaskInstance(read)).toMatchObject({
      leaseExpiresAt: beat.leaseExpiresAt,
    });
    clock.advance(60);
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('not_claimed');
    const reaper = { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 };
    expect((await reap(deps, reaper)).expiredLeases).toBe(0);
    expect((await statuses())[2]).toEqual(['t2', 'running', 1]);
    // Its worker reports the success under the renewed lease.
    const live = (await deps.store.getTaskInstance(read)) as TaskInstanceRecord;
    await deps.store.transitionTask(live, finishTask(live, { ok: true }, clock.now()));
    expect((await statuses())[2]).toEqual(['t2', 'success', 1]);
    expect(await runStatus()).toBe('running'); // its own advance is its worker's to do
  });

  it('a run that ends leaves a continued task whose worker died to the reaper', async () => {
    const ends = [
      'failed by the stream',
      'failed by the stream, which died before the rest, then failed again',
      'cancelled by a cancel that died',
    ] as const;
    for (const end of ends) {
      const { clock, deps, statuses, dagId, runId, t0 } = await diedInContinuedT2();
      if (end === 'failed by the stream') {
        await failUnprocessableRun(deps, dagId, runId, 'a write refused for good');
      } else if (end.startsWith('failed by the stream, which died')) {
        await deps.store.transitionRun(dagId, runId, ['running'], 'failed', clock.now());
        await failUnprocessableRun(deps, dagId, runId, 'a write refused for good');
      } else {
        // The cancel's first write; it died before it got to the tasks.
        await deps.store.transitionRun(dagId, runId, ['running'], 'cancelled', clock.now());
        clock.advance(30);
        // The message's return finds the run ended: no walk, so no repair but the reaper's.
        expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('not_claimed');
      }
      expect((await statuses())[2], end).toEqual(['t2', 'running', 1]);
      clock.advance(121);
      const reaped = await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
      expect(reaped.expiredLeases, end).toBe(1);
      expect((await statuses())[2], end).toEqual(['t2', 'failed', 1]);
    }
  });

  it('does not continue into a mapped task: only its own message can settle it', async () => {
    const { deps, statuses, drain } = await setup([
      { taskId: 't0', operator: 'noop' },
      { taskId: 't1', operator: 'noop', dependsOn: ['t0'], mapOver: [1, 2] },
    ]);
    const [t0] = deps.dispatcher.takeAll() as [TaskMessage];
    expect(await executeTask(deps, t0, worker({ continuations: 8 }))).toBe('success');
    // t1 was queued and sent, not claimed by the worker that ran t0.
    expect(deps.dispatcher.waiting.map((m) => m.taskId)).toEqual(['t1']);
    expect((await statuses())[1]).toEqual(['t1', 'queued', 1]);
    await drain(worker({ continuations: 8 }));
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 1],
      ['t1[0]', 'success', 1],
      ['t1[1]', 'success', 1],
    ]);
  });
});

describe('the run progress of a chain', () => {
  it('counts its last task alone: one progress write a run', async () => {
    const { deps, dagId, runId, runStatus, drain } = await setup(chain(4));
    await drain(worker({ continuations: 8 }));
    expect(await runStatus()).toBe('success');
    expect([...(await deps.store.finishedTasks(dagId, runId))]).toEqual(['t3#0']);
  });

  it('ends a run again after a clear of a task it never counted', async () => {
    const { deps, dagId, runId, runStatus, statuses, drain } = await setup(chain(3));
    await drain(worker({ continuations: 8 }));
    await clearTasks(deps, dagId, runId, 't1');
    expect(await runStatus()).toBe('running');
    await drain(worker({ continuations: 8 }));
    expect(await statuses()).toEqual([
      ['t0', 'success', 1],
      ['t1', 'success', 2],
      ['t2', 'success', 2],
    ]);
    expect(await runStatus()).toBe('success');
    // The cleared generation of t1 is counted, as the clear raised the total for it.
    expect([...(await deps.store.finishedTasks(dagId, runId))].sort()).toEqual([
      't1#1',
      't2#0',
      't2#1',
    ]);
  });

  it('does not end the run while a task whose join a branch skipped still runs', async () => {
    const { deps, runStatus, statuses, drain } = await setup([
      { taskId: 'pick', operator: 'branch', config: { follow: 'c' } },
      { taskId: 'c', operator: 'noop', dependsOn: ['pick'] },
      { taskId: 'y', operator: 'noop' },
      { taskId: 'j', operator: 'noop', dependsOn: ['pick', 'y'], triggerRule: 'all_done' },
    ]);
    // Run everything but y: the branch skips j at once, and c succeeds.
    const roots = deps.dispatcher.takeAll() as TaskMessage[];
    const y = roots.find((m) => m.taskId === 'y') as TaskMessage;
    for (const m of roots) if (m !== y) await executeTask(deps, m, worker({ continuations: 8 }));
    await drain(worker({ continuations: 8 }));
    expect(await statuses()).toEqual([
      ['c', 'success', 1],
      ['j', 'skipped', 0],
      ['pick', 'success', 1],
      ['y', 'queued', 1],
    ]);
    expect(await runStatus()).toBe('running');
    await executeTask(deps, y, worker());
    expect(await runStatus()).toBe('success');
  });

  it('fails the run when an uncounted task fails, even if the task after it succeeds last', async () => {
    const { deps, store, dagId, runId, runStatus, drain } = await setup([
      { taskId: 'a', operator: 'noop' },
      { taskId: 'b', operator: 'noop', dependsOn: ['a'], triggerRule: 'all_done' },
    ]);
    const m = deps.dispatcher.take() as TaskMessage;
    const ti = await store.getTaskInstance(m);
    if (!ti) throw new Error('no a');
    expect(ti.uncounted).toBe(true);
    const claimed = await store.transitionTask(m, claimTask(ti, 'l1', 60, new Date()));
    const failed = await store.transitionTask(
      m,
      finishTask(claimed, { ok: false, error: 'broke', retryAt: null }, new Date()),
    );
    // The failure's advance dies once b's message is sent: b runs and ends before anything
    // else of a's advance could land. a's failure must be in the progress already.
    const send = deps.dispatcher.dispatch.bind(deps.dispatcher);
    deps.dispatcher.dispatch = async (ms) => {
      await send(ms);
      throw new Error('the process died');
    };
    await expect(advance(deps, failed, 'failed', failed.dagVersion, 0)).rejects.toThrow('died');
    deps.dispatcher.dispatch = send;
    await drain(worker());
    expect((await store.getTaskInstance({ dagId, runId, taskId: 'b' }))?.status).toBe('success');
    expect(await runStatus()).toBe('failed');
  });
});

describe('a small run’s creation, racing other work', () => {
  async function registered(store: MemoryStateStore, tasks: object[], extra: object = {}) {
    const deps = memoryDeps({ store });
    const dagId = `race_${Math.random().toString(36).slice(2, 10)}`;
    const r = await registerDag(deps, JSON.stringify({ dagId, tasks, ...extra }));
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    return { deps, dagId };
  }

  it('is not started when a cancel landed while its tasks were being written', async () => {
    // The cancel lands between the run item and its tasks (DynamoDB writes them after it).
    class CancelledMeanwhile extends MemoryStateStore {
      override async createRun(...args: Parameters<MemoryStateStore['createRun']>) {
        const made = await super.createRun(...args);
        const [input] = args;
        await this.transitionRun(input.dagId, input.runId, ['queued'], 'cancelled', input.at);
        return made;
      }
    }
    const { deps, dagId } = await registered(new CancelledMeanwhile(), chain(2));
    const { run } = await triggerRun(deps, { dagId });
    expect(run.status).toBe('cancelled');
    expect(deps.dispatcher.sent).toEqual([]);
    const tis = await deps.store.listTaskInstances(dagId, run.runId);
    expect(tis.map((t) => t.status)).toEqual(['pending', 'pending']);
  });

  it('starts when the run holding the slot ended while it was being put in the queue', async () => {
    let ending: (() => Promise<void>) | undefined;
    class EndsMeanwhile extends MemoryStateStore {
      override async confirmRunTasks(...args: Parameters<MemoryStateStore['confirmRunTasks']>) {
        await ending?.();
        ending = undefined;
        return super.confirmRunTasks(...args);
      }
    }
    const { deps, dagId } = await registered(new EndsMeanwhile(), chain(1), {
      maxActiveRuns: 1,
    });
    const first = await triggerRun(deps, { dagId, idempotencyKey: 'first' });
    expect(first.run.status).toBe('running');
    // The first run ends, and its end finds no run in the queue yet: the second's creator has
    // not confirmed it. Its slot goes back.
    ending = async () => {
      await deps.store.transitionRun(dagId, first.run.runId, ['running'], 'success', new Date());
      await deps.store.releaseRunSlot(dagId, first.run.runId);
    };
    const second = await triggerRun(deps, { dagId, idempotencyKey: 'second' });
    expect(second.run.status).toBe('running');
  });

  it('a clear elsewhere in the run first counts an uncounted failure its advance has not', async () => {
    const { deps, store, dagId, runId, runStatus, drain } = await setup([
      { taskId: 'x', operator: 'noop' },
      { taskId: 'y', operator: 'noop', dependsOn: ['x'], triggerRule: 'all_done' },
    ]);
    // x is claimed and never ends.
    const x = deps.dispatcher.take() as TaskMessage;
    const xi = await store.getTaskInstance(x);
    if (!xi) throw new Error('no x');
    expect(xi.uncounted).toBe(true);
    await store.transitionTask(x, claimTask(xi, 'lx', 600, new Date()));
    // The run is cancelled: x and y end cancelled. y's stream record is advanced (counted),
    // x's not yet.
    await cancelRun(deps, dagId, runId);
    const y = await store.getTaskInstance({ dagId, runId, taskId: 'y' });
    if (!y) throw new Error('no y');
    expect(y.status).toBe('cancelled');
    await advance(deps, y, y.status, y.dagVersion, y.generation);
    // A clear of y alone (x is not in its reach) reruns it, all_done: x is done. y is the
    // run's only counted task; the run must not succeed over x's cancel.
    await clearTasks(deps, dagId, runId, 'y');
    await drain(worker({ continuations: 8 }));
    expect((await store.getTaskInstance({ dagId, runId, taskId: 'y' }))?.status).toBe('success');
    expect(await runStatus()).toBe('failed');
  });
});
