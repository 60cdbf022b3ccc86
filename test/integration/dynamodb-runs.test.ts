import { DeleteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { beforeEach, describe, expect, it } from 'vitest';
import { createClients } from '../../adapters/aws/clients.ts';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import { ConflictError } from '../../core/errors.ts';
import type { NewRun } from '../../core/ports.ts';
import { NO_COUNTS } from '../../core/readiness/index.ts';
import {
  claimTask,
  finishTask,
  heartbeatTask,
  manualRunId,
  queueTask,
} from '../../core/state/index.ts';
import { createTable, localClients, unique } from '../../localstack/resources.ts';

/** The state store's run lifecycle against DynamoDB on the emulator: the defects' store side. */
let store: DynamoStateStore;
let table: string;
let dagId: string;
const t0 = new Date('2026-03-09T06:30:00.000Z');
const later = (s: number) => new Date(t0.getTime() + s * 1000);

beforeEach(async () => {
  table = await createTable();
  store = new DynamoStateStore(localClients().dynamodb, table);
  dagId = unique('dag');
  await store.putDagVersion({ dagId, sourceKey: 'k', sha256: 'a', taskCount: 1, at: t0 });
});

function newRun(
  tasks: number,
  runId = manualRunId(unique('r')),
  extra: Partial<NewRun> = {},
): NewRun {
  return {
    dagId,
    runId,
    dagVersion: 1,
    kind: 'manual',
    logicalDate: t0,
    conf: {},
    tasks: Array.from({ length: tasks }, (_, i) => ({ taskId: `t${i}`, upstreamCount: 0 })),
    at: t0,
    ...extra,
  };
}

describe('conf', () => {
  it('round-trips exactly what DynamoDB maps could not hold (deep nesting, tiny numbers)', async () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 60; i++) deep = { [`l${i}`]: deep };
    const conf = { deep, tiny: 1.5e-200, big: 1.7976931348623157e308, text: 'é'.repeat(20_000) };
    const { run } = await store.createRun(newRun(1, undefined, { conf }));
    expect((await store.getRun(dagId, run.runId))?.conf).toEqual(conf);
  });
});

describe('large runs are written resumably', () => {
  it('a writer that holds the lease keeps others out until it expires; then one finishes', async () => {
    const input = newRun(150);
    const { run } = await store.createRun(input);
    expect(run.tasksWritten).toBe(false);
    expect((await store.findUnwrittenRuns(later(1), 10)).map((r) => r.runId)).toEqual([run.runId]);
    // A writer took the lease until t0 + 60 s and died.
    await localClients().dynamodb.send(
      new UpdateCommand({
        TableName: table,
        Key: tableKeys.run(dagId, run.runId),
        UpdateExpression: 'SET creatorToken = :t, creatorUntil = :u',
        ExpressionAttributeValues: { ':t': 'dead', ':u': later(60).toISOString() },
      }),
    );
    expect(await store.writeRunTasks(input, { token: 'w1', seconds: 360, now: later(30) })).toBe(
      'busy',
    );
    expect(await store.listTaskInstances(dagId, run.runId)).toHaveLength(0);
    expect(await store.writeRunTasks(input, { token: 'w2', seconds: 360, now: later(61) })).toBe(
      'written',
    );
    expect(await store.listTaskInstances(dagId, run.runId)).toHaveLength(150);
    expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
    // Written, the run waits in the DAG's queue; a late writer changes nothing.
    expect((await store.listQueuedRuns(dagId, 5)).map((r) => r.runId)).toEqual([run.runId]);
    expect(await store.writeRunTasks(input, { token: 'w3', seconds: 360, now: later(9999) })).toBe(
      'written',
    );
  });
});

describe('small runs are written by their creator, without a transaction', () => {
  /** The state a creator that died halfway through its batch leaves: some items missing. */
  async function dropItems(runId: string, ...sks: string[]) {
    for (const sk of sks) {
      await localClients().dynamodb.send(
        new DeleteCommand({ TableName: table, Key: { pk: tableKeys.run(dagId, runId).pk, sk } }),
      );
    }
  }

  it('its start confirms its tasks at no extra write; until then the reaper can find it', async () => {
    const input = newRun(3);
    const { run, created } = await store.createRun(input);
    expect(created).toBe(true);
    expect(run.tasksWritten).toBe(true);
    expect(await store.listTaskInstances(dagId, run.runId)).toHaveLength(3);
    // Stored unconfirmed: in the creation index, not yet in the DAG's queue.
    expect((await store.getRun(dagId, run.runId))?.tasksWritten).toBe(false);
    expect((await store.findUnwrittenRuns(later(1), 10)).map((r) => r.runId)).toEqual([run.runId]);
    expect(await store.listQueuedRuns(dagId, 5)).toEqual([]);
    await store.transitionRun(dagId, run.runId, ['queued'], 'running', later(1));
    expect((await store.getRun(dagId, run.runId))?.tasksWritten).toBe(true);
    expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
  });

  it('a repeat finds whether every item is there before it says so', async () => {
    const input = newRun(3);
    await store.createRun(input);
    await dropItems(input.runId, 'TI#t2');
    expect(await store.confirmRunTasks(dagId, input.runId, true)).toBe(false);
    expect((await store.getRun(dagId, input.runId))?.tasksWritten).toBe(false);
    await dropItems(input.runId, 'PROGRESS#00');
    const again = newRun(3, input.runId);
    await store.createRun(again);
    expect((await store.createRun(again)).created).toBe(false);
    expect(await store.confirmRunTasks(dagId, input.runId, true)).toBe(false);
  });

  it('a run cancelled while a repeat confirms it does not enter the DAG queue', async () => {
    const input = newRun(2);
    await store.createRun(input);
    // A client of its own, whose count of the run's items lets a cancel land first: the
    // confirm read the run `queued` before that.
    const racing = createClients().dynamodb;
    let cancelled = false;
    racing.middlewareStack.add(
      (next) => async (args) => {
        const cmd = args.input as { Select?: string };
        if (cmd.Select === 'COUNT' && !cancelled) {
          cancelled = true;
          await store.transitionRun(dagId, input.runId, ['queued'], 'cancelled', later(1));
        }
        return next(args);
      },
      { step: 'initialize', name: 'cancelMeanwhile' },
    );
    const confirming = new DynamoStateStore(racing, table);
    expect(await confirming.confirmRunTasks(dagId, input.runId, true)).toBe(true);
    expect(cancelled).toBe(true);
    expect(await store.getRun(dagId, input.runId)).toMatchObject({
      status: 'cancelled',
      tasksWritten: true,
    });
    expect(await store.listQueuedRuns(dagId, 5)).toEqual([]);
    expect(await store.findQueuedRunsBefore(later(3600), 10)).toEqual([]);
    expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
  });

  it('a creator that died halfway: after its lease, the missing items are written, the others kept', async () => {
    const input = newRun(3);
    await store.createRun(input);
    // The creator queued t0 (its start had begun), and t1 and the progress shard never landed.
    const t0key = { dagId, runId: input.runId, taskId: 't0' };
    const ti = await store.getTaskInstance(t0key);
    if (!ti) throw new Error('no t0');
    await store.transitionTask(t0key, queueTask(ti, later(1)));
    await dropItems(input.runId, 'TI#t1', 'PROGRESS#00');
    // Its creation lease holds for 6 minutes from its creation.
    expect(await store.writeRunTasks(input, { token: 'w1', seconds: 360, now: later(359) })).toBe(
      'busy',
    );
    expect(await store.listTaskInstances(dagId, input.runId)).toHaveLength(2);
    expect(await store.writeRunTasks(input, { token: 'w2', seconds: 360, now: later(361) })).toBe(
      'written',
    );
    const tis = await store.listTaskInstances(dagId, input.runId);
    expect(tis.map((t) => [t.taskId, t.status])).toEqual([
      ['t0', 'queued'],
      ['t1', 'pending'],
      ['t2', 'pending'],
    ]);
    // The progress shard is back, counting from zero.
    await store.recordTaskFinished(t0key, true, 3, 0);
    await store.recordTaskFinished({ ...t0key, taskId: 't1' }, true, 3, 0);
    expect(await store.recordTaskFinished({ ...t0key, taskId: 't2' }, true, 3, 0)).toMatchObject({
      total: 3,
      finished: 3,
    });
    const run = await store.getRun(dagId, input.runId);
    expect(run?.tasksWritten).toBe(true);
    // Written and still queued: it waits in the DAG's queue, out of the creation index.
    expect((await store.listQueuedRuns(dagId, 5)).map((r) => r.runId)).toEqual([input.runId]);
    expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
  });
});

describe('queued runs', () => {
  it('are found with one read, however many runs the DAG has had', async () => {
    for (let i = 0; i < 30; i++) {
      const { run } = await store.createRun(
        newRun(1, undefined, { logicalDate: new Date(Date.UTC(2026, 0, 1, 0, i)) }),
      );
      await store.confirmRunTasks(dagId, run.runId, false);
      if (i < 29) await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
    }
    const [next, ...rest] = await store.listQueuedRuns(dagId, 1);
    expect(rest).toEqual([]);
    expect(next?.logicalDate).toBe('2026-01-01T00:29:00.000Z');
    expect((await store.findQueuedRunsBefore(later(1), 10)).map((r) => r.runId)).toEqual([
      next?.runId,
    ]);
  });

  it('get no slot while the DAG is paused or deleted', async () => {
    await store.setDagPaused(dagId, true, t0);
    expect(await store.acquireRunSlot(dagId, 'r1', 5)).toBe(false);
    await store.setDagPaused(dagId, false, t0);
    expect(await store.acquireRunSlot(dagId, 'r1', 5)).toBe(true);
    await store.markDagDeleted(dagId, t0);
    expect(await store.acquireRunSlot(dagId, 'r2', 5)).toBe(false);
  });
});

describe('DAG identity', () => {
  it('a DAG created again after a delete starts unpaused, in a new incarnation', async () => {
    expect(await store.getDag(dagId)).toMatchObject({ incarnation: 1, paused: false });
    await store.setDagPaused(dagId, true, t0);
    await store.markDagDeleted(dagId, t0);
    await store.putDagVersion({ dagId, sourceKey: 'k', sha256: 'a', taskCount: 1, at: later(1) });
    expect(await store.getDag(dagId)).toMatchObject({
      incarnation: 2,
      paused: false,
      deleted: false,
      latestVersion: 2,
    });
  });

  it('two files may not declare one dagId; the first keeps it until it is deleted', async () => {
    const id = unique('dag');
    const v = { dagId: id, sourceKey: 'k', taskCount: 1, at: t0 };
    await store.putDagVersion({ ...v, sha256: 'a', fileKey: 'dags/one.json' });
    await expect(
      store.putDagVersion({ ...v, sha256: 'b', fileKey: 'dags/two.json' }),
    ).rejects.toThrow(/already declared by dags\/one\.json/);
    // The same content from the other file is refused too, not answered "unchanged".
    await expect(
      store.putDagVersion({ ...v, sha256: 'a', fileKey: 'dags/two.json' }),
    ).rejects.toBeInstanceOf(ConflictError);
    expect(await store.getDag(id)).toMatchObject({ fileKey: 'dags/one.json', latestVersion: 1 });
    expect(await store.dagOfFile('dags/one.json')).toBe(id);
    await store.markDagDeleted(id, t0);
    await store.putDagVersion({ ...v, sha256: 'b', fileKey: 'dags/two.json' });
    expect(await store.getDag(id)).toMatchObject({ fileKey: 'dags/two.json', deleted: false });
  });
});

describe('clear', () => {
  async function finishedRun(tasks: number) {
    const { run } = await store.createRun(newRun(tasks));
    await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
    for (let i = 0; i < tasks; i++) {
      const key = { dagId, runId: run.runId, taskId: `t${i}` };
      await store.transitionTask(key, {
        event: 'resolve',
        expect: { status: 'pending', attempt: 0, leaseToken: null },
        set: { status: 'skipped', attempt: 0, leaseToken: null },
        at: t0.toISOString(),
      });
      await store.recordTaskFinished(key, true, tasks, 0);
    }
    await store.transitionRun(dagId, run.runId, ['running'], 'success', t0);
    return run;
  }

  const plan = (runId: string, expectT1Attempt: number) => ({
    dagId,
    runId,
    taskCount: 2,
    runStatus: 'success' as const,
    at: later(5),
    tasks: ['t0', 't1'].map((taskId) => ({
      taskId,
      expect: {
        status: 'skipped' as const,
        attempt: taskId === 't1' ? expectT1Attempt : 0,
        generation: 0,
        counts: NO_COUNTS,
      },
      status: 'queued' as const,
      attempt: 1,
      newGeneration: true,
      generation: 1,
      counts: { success: 0, failed: 0, upstreamFailed: 0, skipped: 0 },
      counted: [],
      oldSucceeded: true,
    })),
  });

  it('applies whole or not at all', async () => {
    const run = await finishedRun(2);
    // What was read of t1 is stale: nothing of the clear is applied, the run included.
    await expect(store.clearTasks(plan(run.runId, 7))).rejects.toBeInstanceOf(ConflictError);
    expect((await store.getRun(dagId, run.runId))?.status).toBe('success');
    const tasks = await store.listTaskInstances(dagId, run.runId);
    expect(tasks.map((t) => [t.taskId, t.status, t.generation])).toEqual([
      ['t0', 'skipped', 0],
      ['t1', 'skipped', 0],
    ]);
    await store.clearTasks(plan(run.runId, 0));
    expect((await store.getRun(dagId, run.runId))?.status).toBe('running');
    const after = await store.listTaskInstances(dagId, run.runId);
    expect(after.map((t) => [t.taskId, t.status, t.attempt, t.generation])).toEqual([
      ['t0', 'queued', 1, 1],
      ['t1', 'queued', 1, 1],
    ]);
    // Queued by the clear itself: in the reaper's index, so a lost message is sent again.
    expect((await store.findQueuedBefore(later(3600), 10)).length).toBe(2);
  });

  it('keeps progress exact whether or not the old outcome was counted yet', async () => {
    const run = await finishedRun(2);
    await store.clearTasks(plan(run.runId, 0));
    // The old outcomes come again (a late duplicate): they are already counted.
    expect(
      await store.recordTaskFinished({ dagId, runId: run.runId, taskId: 't0' }, true, 2, 0),
    ).toBeUndefined();
    expect(
      await store.recordTaskFinished({ dagId, runId: run.runId, taskId: 't0' }, true, 2, 1),
    ).toBeUndefined();
    // One new outcome of two: not complete, whatever the old counts said.
    const last = await store.recordTaskFinished(
      { dagId, runId: run.runId, taskId: 't1' },
      false,
      2,
      1,
    );
    expect(last).toEqual({ total: 4, finished: 4, succeeded: 3, clears: 1 });
  });

  it('a run end read before a clear cannot land after it', async () => {
    const { run } = await store.createRun(newRun(1));
    await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
    const progress = await store.recordTaskFinished(
      { dagId, runId: run.runId, taskId: 't0' },
      true,
      1,
      0,
    );
    expect(progress?.clears).toBe(0);
    await store.clearTasks({
      dagId,
      runId: run.runId,
      taskCount: 1,
      runStatus: 'running',
      at: later(1),
      tasks: [],
    });
    await expect(
      store.transitionRun(dagId, run.runId, ['running'], 'success', later(2), { clears: 0 }),
    ).rejects.toBeInstanceOf(ConflictError);
    expect((await store.getRun(dagId, run.runId))?.status).toBe('running');
  });
});

describe('the reaper and a live worker', () => {
  it('a lease renewed after the reaper read it is not taken', async () => {
    const { run } = await store.createRun(newRun(1));
    const key = { dagId, runId: run.runId, taskId: 't0' };
    const queued = await store.transitionTask(
      key,
      queueTask({ status: 'pending', attempt: 0, leaseToken: null }, t0),
    );
    // Claimed at t0 with a 60 s lease; the reaper reads it expired at t0 + 61 s ...
    const read = await store.transitionTask(key, claimTask(queued, 'w', 60, t0));
    // ... and the worker heartbeats first, to t0 + 150 s.
    await store.transitionTask(key, heartbeatTask(read, 90, later(60)));
    const reap = {
      ...finishTask(read, { ok: false, error: 'lease expired', retryAt: null }, later(61)),
      leaseExpiredBy: later(61).toISOString(),
    };
    await expect(store.transitionTask(key, reap)).rejects.toBeInstanceOf(ConflictError);
    expect(await store.getTaskInstance(key)).toMatchObject({ status: 'running', leaseToken: 'w' });
    // Once the renewed lease has run out too, the same write goes through.
    await store.transitionTask(key, { ...reap, leaseExpiredBy: later(151).toISOString() });
    expect(await store.getTaskInstance(key)).toMatchObject({ status: 'failed' });
  });
});
