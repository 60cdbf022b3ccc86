import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { advance } from '../../app/advance.ts';
import { clearTasks } from '../../app/clear.ts';
import { registerDag } from '../../app/dags.ts';
import { readLog } from '../../app/logs.ts';
import { expandMapped, settleMapped } from '../../app/mapping.ts';
import { readOutput } from '../../app/outputs.ts';
import { claimThroughGates } from '../../app/pools.ts';
import { reap } from '../../app/reaper.ts';
import { onRetryTimer } from '../../app/retries.ts';
import { cancelRun, triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import { TRIGGER_RULES } from '../../core/dag/schema.ts';
import { validateDag } from '../../core/dag/validate.ts';
import { ThrottledError } from '../../core/errors.ts';
import {
  instanceId,
  mapItems,
  mapShard,
  mapShardCount,
  mapShardSize,
  parseInstance,
} from '../../core/mapping/index.ts';
import { poolGate } from '../../core/pools/index.ts';
import type { TaskInstanceRecord, TaskMessage } from '../../core/ports.ts';
import { addCounts, countUpstream, decide, NO_COUNTS } from '../../core/readiness/index.ts';
import { claimTask, finishTask, isTerminalTask, type TaskStatus } from '../../core/state/index.ts';

/**
 * Dynamic task mapping (core/mapping, app/mapping.ts) on the in-memory ports: expansion,
 * instances with their own attempts, the mapped task's end, its downstream tasks counting each
 * instance, its output, cancel and clear. test/e2e/mapping.test.ts runs maps on the emulator.
 */
const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };

async function setup(
  tasks: object[],
  conf: Record<string, unknown> = {},
  deps: ReturnType<typeof memoryDeps> = memoryDeps(),
) {
  const dagId = `map_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(deps, JSON.stringify({ dagId, tasks }));
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId, conf });
  const runId = run.runId;
  /** Every attempt run once (counted per instance id and attempt), for exactly-once checks. */
  const ran = new Map<string, number>();
  /**
   * Runs to quiescence: workers take messages, the "stream" advances every terminal outcome
   * that its writer did not advance itself (delivered twice, as a stream may), retries come due.
   */
  const drain = async () => {
    for (let round = 0; round < 200; round++) {
      let moved = false;
      while (deps.dispatcher.waiting.length > 0) {
        const m = deps.dispatcher.take() as TaskMessage;
        const outcome = await executeTask(deps, m, opts);
        if (outcome !== 'not_claimed') {
          const k = `${m.taskId}@${m.attempt}`;
          ran.set(k, (ran.get(k) ?? 0) + 1);
        }
        moved = true;
      }
      for (const t of await deps.store.listTaskInstances(dagId, runId)) {
        if (isTerminalTask(t.status) && !t.advanceInline) {
          await advance(deps, t, t.status, t.dagVersion, t.generation);
          await advance(deps, t, t.status, t.dagVersion, t.generation);
        }
        if (t.status === 'up_for_retry') {
          const r = await onRetryTimer(deps, {
            dagId,
            runId,
            taskId: t.taskId,
            failedAttempt: t.attempt,
            dagVersion: t.dagVersion,
            retryAt: new Date(0).toISOString(),
          });
          if (r === 'queued') moved = true;
        }
      }
      if (!moved && deps.dispatcher.waiting.length === 0) return;
    }
    throw new Error('did not settle');
  };
  const statuses = async () =>
    Object.fromEntries(
      (await deps.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t.status]),
    );
  const task = (taskId: string) => deps.store.getTaskInstance({ dagId, runId, taskId });
  const runStatus = async () => (await deps.store.getRun(dagId, runId))?.status;
  const output = async (taskId: string) => {
    const ti = await task(taskId);
    return ti ? (await readOutput(deps, ti))?.output : undefined;
  };
  return { deps, dagId, runId, drain, statuses, task, runStatus, output, ran };
}

const list = (items: unknown[]) => ({
  taskId: 'list',
  operator: 'noop',
  config: { output: { items } },
});

describe('core/mapping', () => {
  it('names instances so that no task id can clash, and reads them back', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9_.-]{1,40}$/),
        fc.integer({ min: 0, max: 9999 }),
        (taskId, i) => {
          expect(parseInstance(instanceId(taskId, i))).toEqual({ taskId, mapIndex: i });
          expect(parseInstance(taskId)).toBeUndefined();
        },
      ),
    );
  });

  it('spreads a map over shards whose sizes add up, none much larger than 200', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), (n) => {
        const shards = mapShardCount(n);
        const sizes = Array.from({ length: shards }, (_, s) => mapShardSize(n, shards, s));
        expect(sizes.reduce((a, b) => a + b, 0)).toBe(n);
        const counted = new Array<number>(shards).fill(0);
        for (let i = 0; i < n; i++) {
          const sh = mapShard(i, shards);
          counted[sh] = (counted[sh] ?? 0) + 1;
        }
        expect(counted).toEqual(sizes);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(Math.max(200, Math.ceil(n / 32)));
      }),
    );
  });

  it('takes a list up to the limit, and says why it takes anything else', () => {
    expect(mapItems([1, 2], 2)).toEqual({ items: [1, 2] });
    expect(mapItems([1, 2, 3], 2)).toMatchObject({ error: expect.stringMatching(/3 items.*2/) });
    expect(mapItems({ a: 1, b: [2] }, 5)).toEqual({
      items: [
        ['a', 1],
        ['b', [2]],
      ],
    });
    expect(mapItems({ a: 1, b: 2, c: 3 }, 2)).toMatchObject({
      error: expect.stringMatching(/3 items/),
    });
    expect(mapItems(null, 5)).toMatchObject({ error: expect.stringMatching(/got null/) });
  });
});

describe('mapOver registration', () => {
  const dag = (t: object) => ({
    dagId: 'm',
    tasks: [list([1]), { taskId: 'each', operator: 'noop', dependsOn: ['list'], ...t }],
  });
  const issues = (t: object) => {
    const r = validateDag(dag(t));
    return r.ok ? [] : r.issues;
  };

  it('accepts one placeholder or a list, and item/mapIndex in a mapped config', () => {
    expect(issues({ mapOver: '{{ tasks.list.output.items }}' })).toEqual([]);
    expect(issues({ mapOver: [1, 2], config: { output: '{{ item }}-{{ mapIndex }}' } })).toEqual(
      [],
    );
  });

  it('refuses what cannot be a list, or names no upstream task, with the JSON path', () => {
    expect(issues({ mapOver: 'x {{ conf.a }}' })).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/exactly one placeholder/) },
    ]);
    expect(issues({ mapOver: '{{ tasks.nope.output }}' })).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/no such task/) },
    ]);
    expect(issues({ mapOver: '{{ item }}' })).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/cannot be used in mapOver/) },
    ]);
    expect(issues({ mapOver: '{{ conf.a' })).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/template/) },
    ]);
    expect(issues({ mapOver: 5 })[0]?.path).toBe('$.tasks[1].mapOver');
    expect(issues({ mapOver: [1, 2, 3], maxMapLength: 2 })).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/3 items/) },
    ]);
    expect(issues({ maxMapLength: 5 })).toMatchObject([{ path: '$.tasks[1].maxMapLength' }]);
    expect(issues({ mapOver: [1], maxMapLength: 10_001 })[0]?.path).toBe('$.tasks[1].maxMapLength');
    expect(issues({ config: { output: '{{ item }}' } })[0]?.message).toMatch(/only in a mapped/);
    const branch = validateDag({
      dagId: 'b',
      tasks: [
        { taskId: 'b', operator: 'branch', config: { follow: 'x' }, mapOver: [1] },
        { taskId: 'x', operator: 'noop', dependsOn: ['b'] },
      ],
    });
    expect(branch.ok ? [] : branch.issues).toMatchObject([{ path: '$.tasks[0].mapOver' }]);
  });
});

describe('mapped tasks', () => {
  it('runs one instance per item with item and mapIndex, and the reducer gets their outputs in order', async () => {
    const items = ['a', 'b', 'c', 'd', 'e'];
    const s = await setup([
      list(items),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
        config: { output: { got: '{{ item }}', at: '{{ mapIndex }}' } },
      },
      {
        taskId: 'reduce',
        operator: 'noop',
        dependsOn: ['each'],
        config: { output: '{{ tasks.each.output }}' },
      },
    ]);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    const expected = items.map((got, at) => ({ got, at }));
    expect(await s.output('each')).toEqual(expected);
    expect(await s.output('reduce')).toEqual(expected);
    expect((await s.task('each'))?.mapCounts).toEqual({
      success: 5,
      failed: 0,
      upstreamFailed: 0,
      skipped: 0,
    });
    // Each instance ran once, its first attempt; the mapped task itself once.
    for (let i = 0; i < items.length; i++) expect(s.ran.get(`each[${i}]@1`)).toBe(1);
    expect(s.ran.get('each@1')).toBe(1);
    expect([...s.ran.values()].every((n) => n === 1)).toBe(true);
    // The reducer counted every instance: 5 upstream tasks, all successes.
    const reduce = await s.task('reduce');
    expect(reduce?.upstreamCount).toBe(5);
    expect(reduce?.counts.success).toBe(5);
  });

  it('skips a task whose list is empty, and its all_success downstream task', async () => {
    const s = await setup([
      list([]),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
      },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
      {
        taskId: 'sum',
        operator: 'noop',
        dependsOn: ['each'],
        triggerRule: 'all_done',
        config: { output: '{{ tasks.each.output }}' },
      },
    ]);
    await s.drain();
    expect(await s.statuses()).toEqual({
      list: 'success',
      each: 'skipped',
      after: 'skipped',
      sum: 'success',
    });
    expect(await s.output('sum')).toEqual([]);
    expect(await s.runStatus()).toBe('success');
  });

  it('retries a failing instance on its own, and an all_done reducer sees null for it', async () => {
    const s = await setup([
      list([{ fail: 0 }, { fail: 1 }, { fail: 9 }, { fail: 0 }]),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
        retries: 2,
        retryDelaySeconds: 0,
        config: { failAttempts: '{{ item.fail }}', output: '{{ mapIndex }}' },
      },
      {
        taskId: 'reduce',
        operator: 'noop',
        dependsOn: ['each'],
        triggerRule: 'all_done',
        config: { output: '{{ tasks.each.output }}' },
      },
      { taskId: 'strict', operator: 'noop', dependsOn: ['each'] },
      { taskId: 'one', operator: 'noop', dependsOn: ['each'], triggerRule: 'one_failed' },
    ]);
    await s.drain();
    const st = await s.statuses();
    expect(st).toMatchObject({
      'each[0]': 'success',
      'each[1]': 'success',
      'each[2]': 'failed',
      'each[3]': 'success',
      each: 'failed',
      reduce: 'success',
      strict: 'upstream_failed',
      one: 'success',
    });
    expect((await s.task('each[1]'))?.attempt).toBe(2);
    expect((await s.task('each[2]'))?.attempt).toBe(3);
    expect(await s.output('reduce')).toEqual([0, 1, null, 3]);
    expect(await s.runStatus()).toBe('failed');
    expect((await s.task('each'))?.error).toMatch(/1 mapped instances did not succeed/);
  });

  it('fails a list longer than maxMapLength with a clear message, and one that is not a list', async () => {
    const s = await setup([
      list([1, 2, 3]),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
        maxMapLength: 2,
        retries: 3,
      },
      {
        taskId: 'notlist',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items[0] }}',
      },
    ]);
    await s.drain();
    const each = await s.task('each');
    expect(each?.status).toBe('failed');
    expect(each?.attempt).toBe(1); // not retried: the same list would come again
    expect(each?.error).toMatch(/3 items, more than maxMapLength 2/);
    expect((await s.task('notlist'))?.error).toMatch(/must render to a list or a dict, got number/);
    expect((await s.statuses())['each[0]']).toBeUndefined();
  });

  it('maps over a literal list and over conf, with no upstream task', async () => {
    const s = await setup(
      [
        { taskId: 'lit', operator: 'noop', mapOver: [10, 20], config: { output: '{{ item }}' } },
        {
          taskId: 'c',
          operator: 'noop',
          mapOver: '{{ conf.xs }}',
          config: { output: '{{ item }}' },
        },
      ],
      { xs: ['p', 'q', 'r'] },
    );
    await s.drain();
    expect(await s.output('lit')).toEqual([10, 20]);
    expect(await s.output('c')).toEqual(['p', 'q', 'r']);
    expect(await s.runStatus()).toBe('success');
  });

  it('keeps a large item beside its instance, and maps over a dict’s entries', async () => {
    const big = ['x'.repeat(3000), 'y'.repeat(3000)];
    const s = await setup(
      [
        list(big),
        {
          taskId: 'each',
          operator: 'noop',
          dependsOn: ['list'],
          mapOver: '{{ tasks.list.output.items }}',
          config: { output: '{{ item }}' },
        },
        {
          taskId: 'kv',
          operator: 'noop',
          mapOver: '{{ conf.d }}',
          config: { output: '{{ item[0] }}={{ item[1] }}' },
        },
      ],
      { d: { a: 1, b: 2 } },
    );
    await s.drain();
    expect(await s.output('each')).toEqual(big);
    expect((await s.task('each[1]'))?.mapItem).toBeUndefined();
    const blob = await s.deps.blobs.getArtifact(
      { dagId: s.dagId, runId: s.runId, taskId: 'each[1]', attempt: 0 },
      'map-item-1.json',
    );
    expect(JSON.parse(Buffer.from(blob ?? new Uint8Array()).toString('utf8'))).toBe(big[1]);
    expect((await s.task('kv[0]'))?.mapItem).toBe('["a",1]');
    expect(await s.output('kv')).toEqual(['a=1', 'b=2']);
    expect(await s.runStatus()).toBe('success');
  });

  it('ends the mapped task once, however often its instances’ outcomes are delivered', async () => {
    const s = await setup([
      list(Array.from({ length: 450 }, (_, i) => i)),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
      },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    // Deliver every instance's outcome again: nothing is counted twice.
    for (const t of await s.deps.store.listMapInstances({
      dagId: s.dagId,
      runId: s.runId,
      taskId: 'each',
    })) {
      await advance(s.deps, t, t.status, t.dagVersion, t.generation);
    }
    const each = await s.task('each');
    expect(each?.mapShards).toBe(3);
    expect(each?.mapCounts?.success).toBe(450);
    const after = await s.task('after');
    expect(after).toMatchObject({ status: 'success', attempt: 1, upstreamCount: 450 });
    expect(after?.counts.success).toBe(450);
  });

  it('cancels the instances with the run', async () => {
    const s = await setup([
      list([1, 2, 3]),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
      },
    ]);
    // Run the list and the expansion only.
    for (let i = 0; i < 2; i++) {
      await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts);
    }
    expect((await s.task('each'))?.status).toBe('running');
    expect(s.deps.dispatcher.waiting).toHaveLength(3);
    await cancelRun(s.deps, s.dagId, s.runId);
    await s.drain();
    expect(await s.statuses()).toEqual({
      list: 'success',
      each: 'cancelled',
      'each[0]': 'cancelled',
      'each[1]': 'cancelled',
      'each[2]': 'cancelled',
    });
    expect(await s.runStatus()).toBe('cancelled');
  });

  it('runs every instance again when the mapped task is cleared, and counts them afresh downstream', async () => {
    const s = await setup([
      list(['x', 'y']),
      {
        taskId: 'each',
        operator: 'noop',
        dependsOn: ['list'],
        mapOver: '{{ tasks.list.output.items }}',
        config: { output: '{{ item }}' },
      },
      {
        taskId: 'reduce',
        operator: 'noop',
        dependsOn: ['each'],
        config: { output: '{{ tasks.each.output }}' },
      },
    ]);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    await clearTasks(s.deps, s.dagId, s.runId, 'each');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect(await s.output('reduce')).toEqual(['x', 'y']);
    // New attempts: the instances' logs and history stay apart.
    expect((await s.task('each[0]'))?.attempt).toBe(2);
    expect((await s.task('each'))?.attempt).toBe(2);
    const reduce = await s.task('reduce');
    expect(reduce).toMatchObject({ status: 'success', attempt: 2, upstreamCount: 2 });
    expect(reduce?.counts.success).toBe(2);
  });

  it('keeps a finished mapped task’s counts when a task beside it is cleared', async () => {
    const s = await setup([
      { taskId: 'lit', operator: 'noop', mapOver: [1, 2, 3] },
      { taskId: 'other', operator: 'noop' },
      { taskId: 'join', operator: 'noop', dependsOn: ['lit', 'other'] },
    ]);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    await clearTasks(s.deps, s.dagId, s.runId, 'other');
    const join = await s.task('join');
    expect(join).toMatchObject({ status: 'pending', upstreamCount: 4 });
    expect(join?.counts.success).toBe(3);
    await s.drain();
    expect(await s.task('join')).toMatchObject({ status: 'success', attempt: 2 });
  });
});

describe('mapped tasks, in a race', () => {
  it('ends the mapped task when its instances all end before it gives up its lease', async () => {
    const s = await setup([
      { taskId: 'each', operator: 'noop', mapOver: [1, 2, 3], config: { output: '{{ item }}' } },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    // Workers so quick that each instance has run before the expanding worker's next write.
    const quick = {
      ...s.deps,
      dispatcher: {
        dispatch: async (ms: readonly TaskMessage[]) => {
          for (const m of ms) {
            if (parseInstance(m.taskId)) await executeTask(quick, m, opts);
            else await s.deps.dispatcher.dispatch([m]);
          }
        },
      },
    };
    const expanding = s.deps.dispatcher.take() as TaskMessage;
    expect(await executeTask(quick, expanding, opts)).toBe('mapped');
    expect((await s.task('each'))?.status).toBe('success');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect(await s.output('each')).toEqual([1, 2, 3]);
  });
});

describe('mapped tasks, when things go wrong', () => {
  const REAP = { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 100 };

  it('ends the map from its message that comes back, when the worker failed to end it', async () => {
    const s = await setup([{ taskId: 'each', operator: 'noop', mapOver: [1, 2] }]);
    let fail = true;
    // The store, whose first read of the map's counts is throttled (SDK mock of a fault the
    // in-memory store cannot produce).
    const store = s.deps.store;
    const flaky = new Proxy(store, {
      get(target, prop) {
        if (prop === 'mapOutcomes' && fail) {
          return async () => {
            fail = false;
            throw new ThrottledError('mapOutcomes: throttled');
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const quick = {
      ...s.deps,
      store: flaky,
      dispatcher: {
        dispatch: async (ms: readonly TaskMessage[]) => {
          for (const m of ms) await executeTask(quick, m, opts);
        },
      },
    };
    const m = s.deps.dispatcher.take() as TaskMessage;
    await expect(executeTask(quick, m, opts)).rejects.toThrow(/throttled/);
    expect((await s.task('each'))?.status).toBe('running');
    // Not deleted, the message comes back: its claim is refused, and it ends the map.
    expect(await executeTask(s.deps, m, opts)).toBe('not_claimed');
    expect((await s.task('each'))?.status).toBe('success');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
  });

  it('does not end the map on counts that a clear of one instance changed meanwhile', async () => {
    const s = await setup([
      { taskId: 'each', operator: 'noop', mapOver: [1, 2], config: { output: '{{ item }}' } },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // each[0]
    // each[1] ends; its advance reads the map complete, then stalls before ending it.
    const m1 = s.deps.dispatcher.take() as TaskMessage;
    const ti1 = (await s.task('each[1]')) as TaskInstanceRecord;
    const c1 = await s.deps.store.transitionTask(m1, claimTask(ti1, 'w', 60, new Date()));
    await s.deps.store.transitionTask(m1, finishTask(c1, { ok: true }, new Date()));
    const key = { dagId: s.dagId, runId: s.runId, taskId: 'each' };
    expect(await s.deps.store.recordMapOutcome(m1, 1, 1, 2, 'success', 0)).toBe(true);
    const seen = (await s.deps.store.markMapShardDone(key, 1, 0)) as TaskInstanceRecord;
    expect(seen.mapDone).toBe(1);
    // Meanwhile each[0] is cleared alone; then the stalled advance goes on: refused.
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 0 });
    await settleMapped(s.deps, seen);
    expect((await s.task('each'))?.status).toBe('running');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each'))?.mapCounts?.success).toBe(2);
    expect(await s.task('after')).toMatchObject({ status: 'success', upstreamCount: 2 });
  });

  it('stops a dead expansion’s instance that holds a pool slot before expanding again', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const deps = memoryDeps({ clock: clock.now });
    await deps.store.putPool('one', 1, clock.now());
    const s = await setup(
      [
        {
          taskId: 'each',
          operator: 'noop',
          mapOver: [1, 2],
          pool: 'one',
          retries: 1,
          retryDelaySeconds: 0,
        },
      ],
      {},
      deps,
    );
    const m = s.deps.dispatcher.take() as TaskMessage;
    const parent = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'dead', 60, clock.now()),
    );
    await expandMapped(s.deps, parent, [1, 2]);
    // Instance 0 takes the pool's one slot, under a long lease; the expanding worker dies.
    const i0 = s.deps.dispatcher.take() as TaskMessage;
    const held = await claimThroughGates(s.deps, i0, [{ id: poolGate('one') }], 3600);
    expect(held).not.toBe('waiting');
    expect((await s.deps.store.gateView(poolGate('one'), 0)).used).toBe(1);
    clock.advance(120);
    expect((await reap(s.deps, REAP)).expiredLeases).toBe(1);
    await s.drain();
    // The retry stopped instance 0 of the dead expansion, giving its slot back, then ran both.
    expect(await s.runStatus()).toBe('success');
    expect((await s.deps.store.gateView(poolGate('one'), 0)).used).toBe(0);
    expect((await s.task('each[0]'))?.attempt).toBe(2);
  });

  it('a worker that lost its lease cannot stop the next attempt’s instances', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [
        { taskId: 'each', operator: 'noop', mapOver: [1, 2], retries: 1, retryDelaySeconds: 0 },
        { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
      ],
      {},
      memoryDeps({ clock: clock.now }),
    );
    const m = s.deps.dispatcher.take() as TaskMessage;
    const stale = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'stale', 60, clock.now()),
    );
    clock.advance(120);
    expect((await reap(s.deps, REAP)).expiredLeases).toBe(1);
    await onRetryTimer(s.deps, {
      ...m,
      failedAttempt: 1,
      retryAt: new Date(0).toISOString(),
    });
    expect(await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts)).toBe('mapped');
    // The stalled worker of attempt 1 wakes and expands: refused, and attempt 2's instances run.
    await expect(expandMapped(s.deps, stale, [1, 2])).rejects.toThrow(/changed/);
    expect((await s.task('each[0]'))?.status).toBe('queued');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each'))?.mapCounts?.success).toBe(2);
  });

  it('does not end the map on a shard marked done just before a clear reopened it', async () => {
    const s = await setup([
      { taskId: 'each', operator: 'noop', mapOver: [1, 2] },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // each[0]
    const m1 = s.deps.dispatcher.take() as TaskMessage;
    const ti1 = (await s.task('each[1]')) as TaskInstanceRecord;
    const c1 = await s.deps.store.transitionTask(m1, claimTask(ti1, 'w', 60, new Date()));
    await s.deps.store.transitionTask(m1, finishTask(c1, { ok: true }, new Date()));
    // each[1]'s advance reads its shard complete, then stalls; each[0] is cleared alone; then
    // the advance marks the shard done (again) and tries to end the map.
    expect(await s.deps.store.recordMapOutcome(m1, 1, 1, 2, 'success', 0)).toBe(true);
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 0 });
    const key = { dagId: s.dagId, runId: s.runId, taskId: 'each' };
    const seen = (await s.deps.store.markMapShardDone(key, 1, 0)) as TaskInstanceRecord;
    await settleMapped(s.deps, seen);
    expect((await s.task('each'))?.status).toBe('running');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect(await s.task('after')).toMatchObject({ status: 'success', upstreamCount: 2 });
  });

  it('stops an earlier dead expansion’s instances when the retry fails before expanding', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [{ taskId: 'each', operator: 'noop', mapOver: [1, 2], retries: 1, retryDelaySeconds: 0 }],
      {},
      memoryDeps({ clock: clock.now }),
    );
    const m = s.deps.dispatcher.take() as TaskMessage;
    const a1 = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'dies', 60, clock.now()),
    );
    await expandMapped(s.deps, a1, [1, 2]);
    const sent = s.deps.dispatcher.takeAll(); // attempt 1's instance messages, held back
    clock.advance(120);
    await reap(s.deps, REAP);
    await onRetryTimer(s.deps, { ...m, failedAttempt: 1, retryAt: new Date(0).toISOString() });
    // Attempt 2 is claimed and dies too, before expanding: no retry left. (The reaper sent
    // attempt 1's instances again too: held back with the others.)
    const waiting = s.deps.dispatcher.takeAll();
    const m2 = waiting.find((w) => w.taskId === 'each') as TaskMessage;
    sent.push(...waiting.filter((w) => w !== m2));
    await s.deps.store.transitionTask(
      m2,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'dies2', 60, clock.now()),
    );
    clock.advance(120);
    await reap(s.deps, REAP);
    const failed = (await s.task('each')) as TaskInstanceRecord;
    expect(failed).toMatchObject({ status: 'failed', attempt: 2 });
    await advance(s.deps, failed, 'failed', failed.dagVersion, failed.generation);
    for (const msg of sent) expect(await executeTask(s.deps, msg, opts)).toBe('not_claimed');
    expect((await s.task('each[0]'))?.status).toBe('cancelled');
    expect(await s.runStatus()).toBe('failed');
  });

  it('refuses to expand an attempt that was cancelled or taken back, writing nothing', async () => {
    const s = await setup([{ taskId: 'each', operator: 'noop', mapOver: [1, 2] }]);
    const m = s.deps.dispatcher.take() as TaskMessage;
    const parent = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'w', 60, new Date()),
    );
    await cancelRun(s.deps, s.dagId, s.runId);
    await expect(expandMapped(s.deps, parent, [1, 2])).rejects.toThrow(/changed/);
    expect(await s.deps.store.listMapInstances(parent)).toEqual([]);
    expect(s.deps.dispatcher.waiting).toEqual([]);
  });

  it('stops the instances of a map that failed after expanding, with no retry left', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [{ taskId: 'each', operator: 'noop', mapOver: [1, 2, 3] }],
      {},
      memoryDeps({ clock: clock.now }),
    );
    const m = s.deps.dispatcher.take() as TaskMessage;
    const parent = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'dead', 60, clock.now()),
    );
    await expandMapped(s.deps, parent, [1, 2, 3]);
    clock.advance(120);
    await reap(s.deps, REAP);
    const failed = (await s.task('each')) as TaskInstanceRecord;
    expect(failed.status).toBe('failed');
    // The stream's advance of the failure stops the instances before any worker takes them.
    await advance(s.deps, failed, 'failed', failed.dagVersion, failed.generation);
    await s.drain();
    expect(await s.statuses()).toEqual({
      each: 'failed',
      'each[0]': 'cancelled',
      'each[1]': 'cancelled',
      'each[2]': 'cancelled',
    });
    expect([...s.ran.keys()].filter((k) => k.startsWith('each['))).toEqual([]);
    expect(await s.runStatus()).toBe('failed');
  });

  it('keeps an earlier expansion’s inline logs readable after the map runs again', async () => {
    const s = await setup([{ taskId: 'each', operator: 'noop', mapOver: ['x'] }]);
    await s.drain();
    await clearTasks(s.deps, s.dagId, s.runId, 'each');
    await s.drain();
    const i0 = (await s.task('each[0]')) as TaskInstanceRecord;
    expect(i0.attempt).toBe(2);
    expect(await readLog(s.deps, i0, 1)).toMatch(/attempt 1 .*noop each\[0\]/);
    expect(await readLog(s.deps, i0, 2)).toMatch(/attempt 2 .*noop each\[0\]/);
  });
});

describe('clearing one mapped instance', () => {
  const dag = [
    list(['a', 'b', 'c']),
    {
      taskId: 'each',
      operator: 'noop',
      dependsOn: ['list'],
      mapOver: '{{ tasks.list.output.items }}',
      config: { failAttempts: '{{ conf.fail }}', output: '{{ item }}-{{ attempt }}' },
    },
    {
      taskId: 'reduce',
      operator: 'noop',
      dependsOn: ['each'],
      triggerRule: 'all_done',
      config: { output: '{{ tasks.each.output }}' },
    },
  ];

  it('runs that instance again, reopens the ended map and the run, and re-counts downstream', async () => {
    const s = await setup(dag, { fail: 0 });
    await s.drain();
    expect(await s.output('reduce')).toEqual(['a-1', 'b-1', 'c-1']);
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 1 });
    expect(await s.runStatus()).toBe('running');
    expect(await s.statuses()).toMatchObject({
      each: 'running',
      'each[0]': 'success',
      'each[1]': 'queued',
      'each[2]': 'success',
      reduce: 'pending',
    });
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    // Only instance 1 ran again; the reducer ran again on the new list.
    expect(await s.output('each')).toEqual(['a-1', 'b-2', 'c-1']);
    expect(await s.output('reduce')).toEqual(['a-1', 'b-2', 'c-1']);
    expect(s.ran.get('each[0]@2')).toBeUndefined();
    expect(s.ran.get('each[1]@2')).toBe(1);
    const reduce = await s.task('reduce');
    expect(reduce).toMatchObject({ status: 'success', attempt: 2, upstreamCount: 3 });
    expect(reduce?.counts).toEqual({ success: 3, failed: 0, upstreamFailed: 0, skipped: 0 });
    expect((await s.task('each'))?.mapCounts?.success).toBe(3);
    expect((await s.task('each[1]'))?.history?.map((h) => h.status)).toEqual(['success']);
  });

  it('turns a failed map into a success when its failed instance succeeds on the clear', async () => {
    const s = await setup([
      {
        taskId: 'each',
        operator: 'noop',
        mapOver: [0, 1, 0],
        config: { failAttempts: '{{ item }}' },
      },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    await s.drain();
    expect(await s.statuses()).toMatchObject({ each: 'failed', after: 'upstream_failed' });
    expect(await s.runStatus()).toBe('failed');
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 1 });
    await s.drain();
    expect(await s.statuses()).toMatchObject({
      each: 'success',
      'each[1]': 'success',
      after: 'success',
    });
    expect(await s.runStatus()).toBe('success');
  });

  it('clears an instance while the map still waits for others, without touching them', async () => {
    const s = await setup([
      { taskId: 'each', operator: 'noop', mapOver: [1, 2, 3] },
      { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
    ]);
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // each[0]
    expect((await s.task('each[0]'))?.status).toBe('success');
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 0 });
    expect(await s.statuses()).toMatchObject({
      each: 'running',
      'each[0]': 'queued',
      'each[1]': 'queued',
      after: 'pending',
    });
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each[0]'))?.attempt).toBe(2);
    expect((await s.task('each'))?.mapCounts?.success).toBe(3);
    expect((await s.task('after'))?.counts.success).toBe(3);
  });

  it('keeps the map waiting for a cleared instance whose shard had completed', async () => {
    // 201 items: two shards, the even indexes in shard 0.
    const s = await setup([
      { taskId: 'each', operator: 'noop', mapOver: Array.from({ length: 201 }, (_, i) => i) },
    ]);
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    const all = s.deps.dispatcher.takeAll();
    const isOdd = (m: TaskMessage) => (parseInstance(m.taskId)?.mapIndex ?? 0) % 2 === 1;
    const odd = all.filter(isOdd);
    const even = all.filter((m) => !isOdd(m));
    for (const m of even) await executeTask(s.deps, m, opts);
    expect((await s.task('each'))?.mapDone).toBe(1);
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 0 });
    expect((await s.task('each'))?.mapDone).toBe(0);
    // Shard 1 completes while instance 0 waits to run again: the map must not end yet.
    for (const m of odd) await executeTask(s.deps, m, opts);
    expect((await s.task('each'))?.status).toBe('running');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each'))?.mapCounts?.success).toBe(201);
    expect((await s.task('each[0]'))?.attempt).toBe(2);
  });

  it('ignores the late outcome of the attempt it set aside', async () => {
    const s = await setup([{ taskId: 'each', operator: 'noop', mapOver: [1, 2] }]);
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    // each[0] fails, its outcome not yet advanced (the stream is late), then it is cleared.
    const m = s.deps.dispatcher.take() as TaskMessage;
    const ti = (await s.task('each[0]')) as TaskInstanceRecord;
    const claimed = await s.deps.store.transitionTask(m, claimTask(ti, 'w', 60, new Date()));
    const failed = await s.deps.store.transitionTask(
      m,
      finishTask(claimed, { ok: false, error: 'broke', retryAt: null }, new Date()),
    );
    await clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 0 });
    // The late event of the failure: counted nothing.
    await advance(s.deps, failed, 'failed', failed.dagVersion, failed.generation);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each'))?.mapCounts).toEqual({
      success: 2,
      failed: 0,
      upstreamFailed: 0,
      skipped: 0,
    });
  });

  it('refuses what it cannot clear, saying why', async () => {
    const s = await setup(dag, { fail: 0 });
    await s.drain();
    await expect(clearTasks(s.deps, s.dagId, s.runId, 'each', { mapIndex: 3 })).rejects.toThrow(
      /no mapped instance 3/,
    );
    await expect(clearTasks(s.deps, s.dagId, s.runId, 'reduce', { mapIndex: 0 })).rejects.toThrow(
      /not mapped/,
    );
  });
});

describe('the reaper and mapped tasks', () => {
  const REAP = { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 100 };

  it('retries a mapped task whose worker died while expanding it, counting only the new expansion', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [
        list(['a', 'b']),
        {
          taskId: 'each',
          operator: 'noop',
          dependsOn: ['list'],
          mapOver: '{{ tasks.list.output.items }}',
          retries: 1,
          retryDelaySeconds: 0,
          config: { output: '{{ item }}' },
        },
      ],
      {},
      memoryDeps({ clock: clock.now }),
    );
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // list
    // The mapped task's worker claims and expands it, then dies before giving up its lease.
    const m = s.deps.dispatcher.take() as TaskMessage;
    const claimed = await s.deps.store.transitionTask(
      m,
      claimTask((await s.task('each')) as TaskInstanceRecord, 'dead', 60, clock.now()),
    );
    await expandMapped(s.deps, claimed, ['a', 'b']);
    expect(s.deps.dispatcher.waiting).toHaveLength(2);
    clock.advance(120);
    const report = await reap(s.deps, REAP);
    expect(report.expiredLeases).toBe(1);
    expect((await s.task('each'))?.status).toBe('up_for_retry');
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    // Attempt 2 expanded again: the instances went on to their attempt 2, and the mapped task
    // counted only those. (Attempt 1's instances ran too, before the retry replaced them: each
    // attempt once, its outcome counted towards the attempt of the mapped task that made it.)
    expect(await s.output('each')).toEqual(['a', 'b']);
    expect((await s.task('each[0]'))?.attempt).toBe(2);
    expect((await s.task('each'))?.mapCounts?.success).toBe(2);
    expect(s.ran.get('each[0]@2')).toBe(1);
    expect([...s.ran.values()].every((n) => n === 1)).toBe(true);
  });

  it('takes back an instance whose worker died, and retries it by its task’s policy', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [
        {
          taskId: 'each',
          operator: 'noop',
          mapOver: [1, 2],
          retries: 1,
          retryDelaySeconds: 0,
        },
      ],
      {},
      memoryDeps({ clock: clock.now }),
    );
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts); // expands
    const i0 = s.deps.dispatcher.take() as TaskMessage;
    expect(i0.taskId).toBe('each[0]');
    const ti = (await s.task('each[0]')) as TaskInstanceRecord;
    await s.deps.store.transitionTask(i0, claimTask(ti, 'dead', 60, clock.now()));
    clock.advance(120);
    expect((await reap(s.deps, REAP)).expiredLeases).toBe(1);
    expect((await s.task('each[0]'))?.status).toBe('up_for_retry');
    await s.drain();
    expect(await s.statuses()).toEqual({
      each: 'success',
      'each[0]': 'success',
      'each[1]': 'success',
    });
    expect((await s.task('each[0]'))?.attempt).toBe(2);
    expect(await s.runStatus()).toBe('success');
  });

  it('sends again an instance whose message was lost', async () => {
    const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
    const s = await setup(
      [{ taskId: 'each', operator: 'noop', mapOver: [1, 2, 3] }],
      {},
      memoryDeps({ clock: clock.now }),
    );
    await executeTask(s.deps, s.deps.dispatcher.take() as TaskMessage, opts);
    expect(s.deps.dispatcher.drop(1)?.taskId).toBe('each[1]');
    await s.drain();
    expect((await s.task('each'))?.status).toBe('running');
    clock.advance(120);
    expect((await reap(s.deps, REAP)).redispatched).toBe(1);
    await s.drain();
    expect(await s.runStatus()).toBe('success');
    expect((await s.task('each[1]'))?.attempt).toBe(1);
  });
});

describe('readiness with a mapped upstream task', () => {
  // Every rule, against maps of none, one and several instances with every mix of outcomes
  // that matters, beside a plain upstream task that ends before or after the map.
  const maps: boolean[][] = [
    [],
    [true],
    [false],
    [true, true, true],
    [true, false, true],
    [false, false],
  ];
  it('decides as if each instance were an upstream task of its own (the truth table, mapped)', async () => {
    let checked = 0;
    for (const rule of TRIGGER_RULES)
      for (const instancesOk of maps)
        for (const otherOk of [true, false])
          for (const late of [true, false]) {
            const s = await setup([
              {
                taskId: 'm',
                operator: 'noop',
                mapOver: instancesOk.map((ok) => (ok ? 0 : 1)),
                config: { failAttempts: '{{ item }}' },
              },
              // Behind a chain, `o` ends after the map; otherwise before it.
              { taskId: 'o0', operator: 'noop' },
              {
                taskId: 'o',
                operator: 'noop',
                dependsOn: late ? ['o0'] : [],
                config: { failAttempts: otherOk ? 0 : 1 },
              },
              { taskId: 'd', operator: 'noop', dependsOn: ['m', 'o'], triggerRule: rule },
            ]);
            await s.drain();
            // The model: `d` decides on each arrival, as readiness does; the map's instances
            // arrive together, in one write once every one has finished (or the empty map's
            // `skipped`), and `o` before or after them: either order may happen.
            const mapEvent = {
              counts: countUpstream(
                instancesOk.length === 0
                  ? ['skipped']
                  : instancesOk.map((ok): TaskStatus => (ok ? 'success' : 'failed')),
              ),
              extra: Math.max(0, instancesOk.length - 1),
            };
            const otherEvent = {
              counts: countUpstream([otherOk ? 'success' : 'failed']),
              extra: 0,
            };
            const settle = (events: (typeof mapEvent)[]) => {
              let counts = NO_COUNTS;
              let upstream = 2;
              for (const e of events) {
                counts = addCounts(counts, e.counts);
                upstream += e.extra;
                const d = decide(rule, counts, upstream);
                if (d !== 'wait') return d === 'queue' ? 'success' : d;
              }
              return 'pending';
            };
            const possible = new Set([
              settle([mapEvent, otherEvent]),
              settle([otherEvent, mapEvent]),
            ]);
            const got = (await s.task('d'))?.status;
            if (!possible.has(got as never)) {
              throw new Error(
                `${rule}, instances ${JSON.stringify(instancesOk)}, other ${otherOk ? 'success' : 'failed'}${late ? ' (late)' : ''}: d is ${got}, expected one of ${[...possible].join(', ')}`,
              );
            }
            checked++;
          }
    expect(checked).toBe(TRIGGER_RULES.length * maps.length * 4);
  });
});
