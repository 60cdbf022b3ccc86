import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { MemoryStateStore } from '../../adapters/memory/store.ts';
import { registerDag } from '../../app/dags.ts';
import { putPool } from '../../app/pools.ts';
import { triggerRun } from '../../app/runs.ts';
import { type ExecuteOptions, executeTask } from '../../app/tasks.ts';
import { NotFoundError, ThrottledError } from '../../core/errors.ts';
import type { TaskInstanceRecord, TaskKey, TaskMessage } from '../../core/ports.ts';
import { NO_COUNTS } from '../../core/readiness/index.ts';
import { finishTask, queueTask, type TaskTransition } from '../../core/state/index.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * DynamoDB throttling on every write path. The emulator never throttles, so this is the one place
 * where an SDK client is faked: it answers every call as DynamoDB does when it sheds load, and
 * the store must turn that into a retryable ThrottledError (never a conflict, never success), so
 * that the queue or stream delivers the work again.
 */
function throttled(name: string): DynamoStateStore {
  const client = {
    send: async () => {
      throw Object.assign(new Error('Rate of requests exceeds the allowed throughput'), {
        name,
        $metadata: { httpStatusCode: 400 },
      });
    },
  } as unknown as DynamoDBDocumentClient;
  return new DynamoStateStore(client, 'table');
}

const at = new Date('2026-03-09T06:30:00.000Z');
const key = { dagId: 'd', runId: 'r', taskId: 't' };
const newRun = (n: number) => ({
  dagId: 'd',
  runId: 'r',
  dagVersion: 1,
  kind: 'manual' as const,
  logicalDate: at,
  conf: {},
  tasks: Array.from({ length: n }, (_, i) => ({ taskId: `t${i}`, upstreamCount: 0 })),
  at,
});
const writes: [string, (s: DynamoStateStore) => Promise<unknown>][] = [
  [
    'putDagVersion',
    (s) => s.putDagVersion({ dagId: 'd', sourceKey: 'k', sha256: 'a', taskCount: 1, at }),
  ],
  ['setDagPaused', (s) => s.setDagPaused('d', true, at)],
  ['markDagDeleted', (s) => s.markDagDeleted('d', at)],
  [
    'putImportError',
    (s) => s.putImportError({ key: 'dags/x.json', errors: [], time: at.toISOString() }),
  ],
  ['createRun (one transaction)', (s) => s.createRun(newRun(2))],
  ['createRun (run item)', (s) => s.createRun(newRun(150))],
  ['writeRunTasks', (s) => s.writeRunTasks(newRun(150), { token: 'w', seconds: 60, now: at })],
  ['transitionRun', (s) => s.transitionRun('d', 'r', ['queued'], 'running', at)],
  ['acquireRunSlot', (s) => s.acquireRunSlot('d', 'r', 1)],
  ['releaseRunSlot', (s) => s.releaseRunSlot('d', 'r')],
  [
    'transitionTask',
    (s) =>
      s.transitionTask(key, queueTask({ status: 'pending', attempt: 0, leaseToken: null }, at)),
  ],
  ['recordUpstreamOutcome', (s) => s.recordUpstreamOutcome(key, 'u', 'success', 0)],
  ['recordTaskFinished', (s) => s.recordTaskFinished(key, true, 1, 0)],
  [
    'clearTasks',
    (s) =>
      s.clearTasks({
        dagId: 'd',
        runId: 'r',
        taskCount: 1,
        runStatus: 'running',
        at,
        tasks: [
          {
            taskId: 't',
            expect: { status: 'success', attempt: 1, generation: 0, counts: NO_COUNTS },
            status: 'queued',
            attempt: 2,
            newGeneration: true,
            generation: 1,
            counts: NO_COUNTS,
            counted: [],
            oldSucceeded: true,
          },
        ],
      }),
  ],
  ['countUse', (s) => s.countUse('n', 1)],
];

describe('a throttled DynamoDB', () => {
  for (const name of [
    'ProvisionedThroughputExceededException',
    'ThrottlingException',
    'RequestLimitExceeded',
  ]) {
    it.each(writes)(`${name}: %s is a retryable ThrottledError`, async (_, write) => {
      const err = await write(throttled(name)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ThrottledError);
      expect((err as ThrottledError).retryable).toBe(true);
    });
  }

  it('makes a worker give its message back, not drop it', async () => {
    const deps = { ...memoryDeps(), store: throttled('ProvisionedThroughputExceededException') };
    await expect(
      executeTask(
        deps,
        { ...key, attempt: 1, dagVersion: 1 },
        {
          leaseSeconds: 60,
          heartbeatSeconds: 30,
          remainingMs: () => 600_000,
        },
      ),
    ).rejects.toBeInstanceOf(ThrottledError);
  });
});

describe('a transaction cancelled for a concurrent one (TransactionConflict)', () => {
  /**
   * Two transactions on one gate item at once: DynamoDB cancels one with TransactionConflict,
   * which the SDK does not retry and the emulator never produces, hence the faked client. The
   * end of a pooled attempt must not be lost to it: the store tries again.
   */
  function conflicting(times: number, reasons: { Code: string }[]) {
    let calls = 0;
    const client = {
      send: async () => {
        calls++;
        if (calls <= times) {
          throw Object.assign(new Error('Transaction cancelled'), {
            name: 'TransactionCanceledException',
            CancellationReasons: reasons,
            $metadata: { httpStatusCode: 400 },
          });
        }
        return {};
      },
    } as unknown as DynamoDBDocumentClient;
    return { store: new DynamoStateStore(client, 'table'), calls: () => calls };
  }
  const running = {
    ...key,
    dagVersion: 1,
    status: 'running' as const,
    attempt: 1,
    leaseToken: 'l',
    upstreamCount: 0,
    retryBase: 0,
    generation: 0,
    counts: NO_COUNTS,
    queuedAt: null,
    leaseExpiresAt: null,
    retryAt: null,
    startTime: null,
    endTime: null,
    error: null,
    deferred: null,
    output: null,
    outputKey: null,
    gates: ['pool:p'],
  };

  it('is tried again, and the outcome written once it goes through', async () => {
    const { store, calls } = conflicting(3, [{ Code: 'None' }, { Code: 'TransactionConflict' }]);
    const done = await store.transitionTask(key, finishTask(running, { ok: true }, at));
    expect(done.status).toBe('success');
    expect(done.gates).toBeUndefined();
    expect(calls()).toBe(4);
  });

  it.each(['ThrottlingError', 'ProvisionedThroughputExceeded'])(
    'cancelled for load (%s) on the gate item: tried again, too',
    async (code) => {
      const { store, calls } = conflicting(2, [{ Code: 'None' }, { Code: code }]);
      const done = await store.transitionTask(key, finishTask(running, { ok: true }, at));
      expect(done.status).toBe('success');
      expect(calls()).toBe(3);
    },
  );

  it('is not tried for ever: a retryable error once it keeps happening', async () => {
    const { store } = conflicting(100, [{ Code: 'None' }, { Code: 'TransactionConflict' }]);
    const e = await store
      .transitionTask(key, finishTask(running, { ok: true }, at))
      .catch((x) => x);
    expect(e).toBeInstanceOf(ThrottledError);
  });

  it('a failed condition is not tried again: it is a conflict', async () => {
    const { store, calls } = conflicting(1, [
      { Code: 'ConditionalCheckFailed' },
      { Code: 'TransactionConflict' },
    ]);
    const e = await store
      .transitionTask(key, finishTask(running, { ok: true }, at))
      .catch((x) => x);
    expect(e).toBeInstanceOf(NotFoundError);
    expect(calls()).toBe(1);
  });
});

describe('a write ending an attempt, throttled', () => {
  /**
   * DynamoDB sheds load on the write that ends an attempt (a hot gate item, say) past the SDK's
   * own retries: the worker tries again while its lease holds, since giving up would leave the
   * attempt `running` until the reaper ran it again. The in-memory store is made to throw as
   * the DynamoDB store does (ThrottledError); `lands` makes a throttled write land first, its
   * answer lost, as a timed-out request can.
   */
  class Throttling extends MemoryStateStore {
    constructor(
      private throttle: number,
      private readonly lands = false,
    ) {
      super();
    }
    ends = 0;
    override async transitionTask(k: TaskKey, t: TaskTransition): Promise<TaskInstanceRecord> {
      if (t.event !== 'finish' && t.event !== 'release') return super.transitionTask(k, t);
      this.ends++;
      if (this.throttle <= 0) return super.transitionTask(k, t);
      this.throttle--;
      if (this.lands) await super.transitionTask(k, t);
      throw new ThrottledError(`${t.event}: throttled`);
    }
  }
  const waitOp: RunOperator<Record<string, never>> = {
    name: 'wait',
    config: z.strictObject({}),
    run: (_config, ctx) =>
      new Promise((_resolve, reject) => {
        if (ctx.signal.aborted) reject(ctx.signal.reason);
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
      }),
  };
  const failOp: RunOperator<Record<string, never>> = {
    name: 'fail',
    config: z.strictObject({}),
    run: async () => {
      throw new Error('failed on purpose');
    },
  };

  async function setup(store: Throttling, operator: string, opts: { retries?: number } = {}) {
    const deps = memoryDeps({
      store,
      random: () => 0,
      operators: new OperatorRegistry().register(noop).register(waitOp).register(failOp),
    });
    const dagId = `throttled_${Math.random().toString(36).slice(2, 10)}`;
    const pool = `p_${dagId}`;
    await putPool(deps, pool, 1);
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        defaults: { retries: opts.retries ?? 0, retryDelaySeconds: 60, pool },
        tasks: [
          { taskId: 'a', operator, config: {} },
          { taskId: 'b', operator: 'noop', config: {}, dependsOn: ['a'] },
          { taskId: 'c', operator: 'noop', config: {} },
        ],
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const { run } = await triggerRun(deps, { dagId });
    const messages = deps.dispatcher.takeAll();
    const a = messages.find((m) => m.taskId === 'a') as TaskMessage;
    const c = messages.find((m) => m.taskId === 'c') as TaskMessage;
    const task = async (taskId: string) =>
      (await deps.store.listTaskInstances(dagId, run.runId)).find((t) => t.taskId === taskId);
    const used = async () => (await deps.store.listPools()).find((p) => p.pool === pool)?.used;
    return { deps, a, c, task, used };
  }
  const opts = (leaseSeconds = 60): ExecuteOptions => ({
    leaseSeconds,
    heartbeatSeconds: 3600,
    remainingMs: () => 600_000,
  });

  it('is tried again: the outcome is written, the slot given back, the next task sent', async () => {
    const store = new Throttling(3);
    const s = await setup(store, 'noop');
    expect(await executeTask(s.deps, s.a, opts())).toBe('success');
    expect(store.ends).toBe(4);
    expect((await s.task('a'))?.status).toBe('success');
    expect(await s.used()).toBe(0);
    expect(s.deps.dispatcher.takeAll().map((m) => m.taskId)).toEqual(['b']);
  });

  it('a hand-back too: it is tried again, and wakes the task waiting for the slot', async () => {
    const store = new Throttling(0);
    const s = await setup(store, 'wait');
    const ac = new AbortController();
    const first = executeTask(s.deps, s.a, { ...opts(), handBack: ac.signal });
    await vi.waitFor(async () => expect((await s.task('a'))?.status).toBe('running'));
    expect(await executeTask(s.deps, s.c, opts())).toBe('waiting');
    expect(s.deps.dispatcher.takeAll()).toEqual([]);
    // The worker stops: its hand-back is throttled twice, then goes through.
    Object.assign(store, { throttle: 2 });
    ac.abort();
    expect(await first).toBe('handed_back');
    expect(store.ends).toBe(3);
    expect((await s.task('a'))?.status).toBe('queued');
    expect(await s.used()).toBe(0);
    // The waiting task is sent (woken), and the handed-back one goes back to the queue.
    expect(s.deps.dispatcher.takeAll().map((m) => m.taskId)).toContain('c');
  });

  it('a hand-back that landed with its answer lost is a hand-back: its message goes back', async () => {
    const store = new Throttling(0, true);
    const s = await setup(store, 'wait');
    const ac = new AbortController();
    const first = executeTask(s.deps, s.a, { ...opts(), handBack: ac.signal });
    await vi.waitFor(async () => expect((await s.task('a'))?.status).toBe('running'));
    Object.assign(store, { throttle: 1 });
    ac.abort();
    // Not 'lease_lost', whose message the worker deletes: the queued attempt would wait for
    // the reaper.
    expect(await first).toBe('handed_back');
    expect(store.ends).toBe(2);
    expect((await s.task('a'))?.status).toBe('queued');
    expect(await s.used()).toBe(0);
  });

  it('that landed with its answer lost: a success is ours, and readiness goes on', async () => {
    const store = new Throttling(1, true);
    const s = await setup(store, 'noop');
    expect(await executeTask(s.deps, s.a, opts())).toBe('success');
    expect(store.ends).toBe(2);
    expect(await s.used()).toBe(0);
    expect(s.deps.dispatcher.takeAll().map((m) => m.taskId)).toEqual(['b']);
  });

  it('that landed with its answer lost: a failure is ours too, its retry scheduled', async () => {
    for (const retries of [0, 1]) {
      const store = new Throttling(1, true);
      const s = await setup(store, 'fail', { retries });
      expect(await executeTask(s.deps, s.a, opts())).toBe(retries ? 'up_for_retry' : 'failed');
      expect(store.ends).toBe(2);
      expect((await s.task('a'))?.status).toBe(retries ? 'up_for_retry' : 'failed');
      expect(await s.used()).toBe(0);
      if (retries) expect(s.deps.timers.waiting.length).toBe(1);
    }
  });

  it('is not tried for ever, nor past the lease or the worker’s time: the message comes back', async () => {
    const store = new Throttling(100);
    const s = await setup(store, 'noop');
    await expect(executeTask(s.deps, s.a, opts())).rejects.toBeInstanceOf(ThrottledError);
    expect(store.ends).toBe(6);
    expect((await s.task('a'))?.status).toBe('running');

    // A lease too short to wait in: no second try.
    const short = new Throttling(100);
    const t = await setup(short, 'noop');
    await expect(executeTask(t.deps, t.a, opts(1))).rejects.toBeInstanceOf(ThrottledError);
    expect(short.ends).toBe(1);

    // Nor a worker about to be stopped (a Lambda near its end): no second try.
    const late = new Throttling(100);
    const u = await setup(late, 'noop');
    await expect(
      executeTask(u.deps, u.a, { ...opts(), remainingMs: () => 5_500 }),
    ).rejects.toBeInstanceOf(ThrottledError);
    expect(late.ends).toBe(1);
  });
});
