import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../core/errors.ts';
import type { NewRun, TaskKey } from '../../core/ports.ts';
import {
  claimTask,
  finishTask,
  heartbeatTask,
  queueTask,
  scheduledRunId,
} from '../../core/state/index.ts';
import { createTable, localClients, unique } from '../../localstack/resources.ts';

let store: DynamoStateStore;
let dagId: string;
const t0 = new Date('2026-03-09T06:30:00.000Z');
const later = (s: number) => new Date(t0.getTime() + s * 1000);

beforeEach(async () => {
  store = new DynamoStateStore(localClients().dynamodb, await createTable());
  dagId = unique('dag');
});

function newRun(tasks: number, logicalDate = t0, extra: Partial<NewRun> = {}): NewRun {
  return {
    dagId,
    runId: scheduledRunId(logicalDate),
    dagVersion: 1,
    kind: 'scheduled',
    logicalDate,
    conf: { region: 'eu' },
    tasks: Array.from({ length: tasks }, (_, i) => ({
      taskId: `t${i}`,
      upstreamCount: i === 0 ? 0 : 1,
    })),
    at: t0,
    ...extra,
  };
}

const key = (runId: string, taskId = 't0'): TaskKey => ({ dagId, runId, taskId });

/** Creates a one-task run and queues its task: attempt 1, ready to claim. */
async function queuedTask() {
  const { run } = await store.createRun(newRun(1));
  const k = key(run.runId);
  const ti = await store.getTaskInstance(k);
  if (!ti) throw new Error('task instance missing');
  return { k, ti: await store.transitionTask(k, queueTask(ti, t0)) };
}

describe('DAG versions and import errors', () => {
  it('stores a new version only when the document changes', async () => {
    const base = { dagId, sourceKey: 'dag-versions/x/1.json', taskCount: 3, at: t0 };
    const v1 = await store.putDagVersion({ ...base, sha256: 'aaa', owner: 'data' });
    expect(v1).toMatchObject({ created: true, version: { version: 1, sha256: 'aaa' } });
    expect(await store.putDagVersion({ ...base, sha256: 'aaa' })).toMatchObject({
      created: false,
      version: { version: 1 },
    });
    const v2 = await store.putDagVersion({
      ...base,
      sha256: 'bbb',
      at: later(60),
      schedule: { cron: '@daily', timezone: 'UTC', expression: 'cron(0 0 * * ? *)' },
    });
    expect(v2.version.version).toBe(2);
    expect(await store.getDag(dagId)).toMatchObject({
      dagId,
      latestVersion: 2,
      paused: false,
      deleted: false,
      schedule: { cron: '@daily' },
    });
    const versions = await store.listDagVersions(dagId);
    expect(versions.items.map((v) => v.version)).toEqual([2, 1]);
    expect(await store.getDagVersion(dagId, 1)).toMatchObject({ sha256: 'aaa' });
  });

  it('gives concurrent registrations distinct, consecutive versions', async () => {
    const base = { dagId, sourceKey: 'k', taskCount: 1, at: t0 };
    const results = await Promise.all(
      ['a', 'b', 'c', 'd'].map((sha256) => store.putDagVersion({ ...base, sha256 })),
    );
    expect(results.map((r) => r.version.version).sort()).toEqual([1, 2, 3, 4]);
  });

  it('pauses, lists and deletes DAGs, keeping history', async () => {
    await store.putDagVersion({ dagId, sourceKey: 'k', sha256: 'a', taskCount: 1, at: t0 });
    expect((await store.setDagPaused(dagId, true, later(1))).paused).toBe(true);
    const listed = await store.listDags({ limit: 1000 });
    expect(listed.items.map((d) => d.dagId)).toContain(dagId);
    await store.markDagDeleted(dagId, later(2));
    expect((await store.listDags({ limit: 1000 })).items.map((d) => d.dagId)).not.toContain(dagId);
    expect(await store.getDag(dagId)).toMatchObject({ deleted: true });
    expect((await store.listDagVersions(dagId)).items).toHaveLength(1);
    await expect(store.setDagPaused(dagId, false, later(3))).rejects.toBeInstanceOf(NotFoundError);
    await expect(store.setDagPaused('no-such-dag', true, t0)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('records, lists and clears import errors', async () => {
    const record = {
      key: `dags/${dagId}.json`,
      dagId,
      errors: [{ path: '$.tasks[0].dependsOn[0]', message: 'unknown task "x"' }],
      time: t0.toISOString(),
    };
    await store.putImportError(record);
    expect((await store.listImportErrors()).items).toContainEqual(record);
    await store.clearImportError(record.key);
    await store.clearImportError(record.key);
    expect((await store.listImportErrors()).items.map((e) => e.key)).not.toContain(record.key);
  });
});

describe('runs', () => {
  it('creates a run and its task instances, all pending', async () => {
    const { run, created } = await store.createRun(newRun(3));
    expect(created).toBe(true);
    expect(run).toMatchObject({ status: 'queued', taskCount: 3, conf: { region: 'eu' } });
    expect(await store.getRun(dagId, run.runId)).toEqual(run);
    const tis = await store.listTaskInstances(dagId, run.runId);
    expect(tis.map((t) => [t.taskId, t.status, t.attempt, t.upstreamCount])).toEqual([
      ['t0', 'pending', 0, 0],
      ['t1', 'pending', 0, 1],
      ['t2', 'pending', 0, 1],
    ]);
  });

  it.each([
    ['in one transaction', 5],
    ['in batches, for a run too large for one transaction', 250],
  ])('20 concurrent creations of the same scheduled run give one run (%s)', async (_, tasks) => {
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.createRun(newRun(tasks))),
    );
    expect(results.filter((r) => r.created)).toHaveLength(1);
    const ids = new Set(results.map((r) => r.run.runId));
    expect([...ids]).toEqual([scheduledRunId(t0)]);
    expect((await store.listRuns(dagId)).items).toHaveLength(1);
    if (tasks > 99) {
      // The run item alone; then 20 writers race to write its tasks: one holds the lease.
      expect(results.every((r) => !r.run.tasksWritten)).toBe(true);
      expect(await store.listTaskInstances(dagId, scheduledRunId(t0))).toHaveLength(0);
      const writes = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.writeRunTasks(newRun(tasks), { token: `w${i}`, seconds: 360, now: t0 }),
        ),
      );
      expect(writes.filter((w) => w === 'written').length).toBeGreaterThanOrEqual(1);
      expect((await store.getRun(dagId, scheduledRunId(t0)))?.tasksWritten).toBe(true);
    }
    expect(await store.listTaskInstances(dagId, scheduledRunId(t0))).toHaveLength(tasks);
  });

  it('lists runs newest first, a page at a time', async () => {
    const days = [3, 1, 4, 2, 5].map((d) => new Date(Date.UTC(2026, 2, d)));
    for (const d of days) await store.createRun(newRun(1, d));
    const seen: string[] = [];
    let nextToken: string | undefined;
    for (let page = 0; page < 5; page++) {
      const res = await store.listRuns(dagId, { limit: 2, nextToken });
      seen.push(...res.items.map((r) => r.logicalDate.slice(0, 10)));
      nextToken = res.nextToken;
      if (!nextToken) break;
    }
    expect(seen).toEqual(['2026-03-05', '2026-03-04', '2026-03-03', '2026-03-02', '2026-03-01']);
    await expect(store.listRuns(dagId, { nextToken: 'garbage!' })).rejects.toBeInstanceOf(
      ValidationError,
    );
    // Well-formed, but the keys of another query.
    const forged = Buffer.from(JSON.stringify({ pk: 'X', sk: 'Y' })).toString('base64url');
    await expect(store.listRuns(dagId, { nextToken: forged })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  it('moves a run through its statuses with conditional writes', async () => {
    const { run } = await store.createRun(newRun(1));
    const running = await store.transitionRun(dagId, run.runId, ['queued'], 'running', later(1));
    expect(running).toMatchObject({
      status: 'running',
      startTime: later(1).toISOString(),
      endTime: null,
    });
    await expect(
      store.transitionRun(dagId, run.runId, ['queued'], 'running', later(2)),
    ).rejects.toBeInstanceOf(ConflictError);
    const done = await store.transitionRun(dagId, run.runId, ['running'], 'success', later(3));
    expect(done).toMatchObject({
      status: 'success',
      startTime: later(1).toISOString(),
      endTime: later(3).toISOString(),
    });
  });
});

describe('maxActiveRuns slots', () => {
  it('hands out at most max slots, once per run, even to concurrent callers', async () => {
    await store.putDagVersion({ dagId, sourceKey: 'k', sha256: 'a', taskCount: 1, at: t0 });
    const runs = Array.from({ length: 6 }, (_, i) => `r${i}`);
    const got = await Promise.all(runs.map((r) => store.acquireRunSlot(dagId, r, 2)));
    expect(got.filter(Boolean)).toHaveLength(2);
    const holders = runs.filter((_, i) => got[i]);
    // A holder asking again still holds it; others are still refused.
    expect(await store.acquireRunSlot(dagId, holders[0] as string, 2)).toBe(true);
    expect(await store.acquireRunSlot(dagId, 'r-other', 2)).toBe(false);
    await store.releaseRunSlot(dagId, holders[0] as string);
    await store.releaseRunSlot(dagId, holders[0] as string);
    expect(await store.acquireRunSlot(dagId, 'r-other', 2)).toBe(true);
    expect(await store.acquireRunSlot(dagId, 'r-late', 2)).toBe(false);
  });

  it('lists queued runs oldest first', async () => {
    for (const d of [3, 1, 2]) await store.createRun(newRun(1, new Date(Date.UTC(2026, 2, d))));
    const first = await store.listRuns(dagId);
    const started = first.items.find((r) => r.logicalDate.startsWith('2026-03-01'));
    await store.transitionRun(dagId, started?.runId ?? '', ['queued'], 'running', t0);
    const queued = await store.listQueuedRuns(dagId, 10);
    expect(queued.map((r) => r.logicalDate.slice(0, 10))).toEqual(['2026-03-02', '2026-03-03']);
  });
});

describe('task transitions', () => {
  it('each core transition is one conditional write', async () => {
    const { k, ti } = await queuedTask();
    expect(ti).toMatchObject({
      status: 'queued',
      attempt: 1,
      leaseToken: null,
      queuedAt: t0.toISOString(),
    });
    const running = await store.transitionTask(k, claimTask(ti, 'lease-a', 60, later(1)));
    expect(running).toMatchObject({
      status: 'running',
      leaseToken: 'lease-a',
      leaseExpiresAt: later(61).toISOString(),
    });
    const beat = await store.transitionTask(k, heartbeatTask(running, 60, later(30)));
    expect(beat.leaseExpiresAt).toBe(later(90).toISOString());
    const done = await store.transitionTask(k, finishTask(beat, { ok: true }, later(40)));
    expect(done).toMatchObject({
      status: 'success',
      attempt: 1,
      leaseToken: null,
      leaseExpiresAt: null,
    });
  });

  it('20 concurrent claims of one task attempt: exactly one wins', async () => {
    const { k, ti } = await queuedTask();
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        store.transitionTask(k, claimTask(ti, `worker-${i}`, 60, later(1))),
      ),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(ConflictError);
    }
    const winner = (won[0] as PromiseFulfilledResult<{ leaseToken: string }>).value.leaseToken;
    expect((await store.getTaskInstance(k))?.leaseToken).toBe(winner);
  });

  it('a completion carrying a stale lease token is rejected, and changes nothing', async () => {
    const { k, ti } = await queuedTask();
    const a = await store.transitionTask(k, claimTask(ti, 'lease-a', 60, later(1)));
    // The lease expires; the reaper fails the attempt for retry and the task runs again.
    const retry = await store.transitionTask(
      k,
      finishTask(a, { ok: false, error: 'lease expired', retryAt: later(70) }, later(65)),
    );
    const requeued = await store.transitionTask(k, queueTask(retry, later(70)));
    const b = await store.transitionTask(k, claimTask(requeued, 'lease-b', 60, later(71)));
    expect(b).toMatchObject({ attempt: 2, leaseToken: 'lease-b' });

    // The first worker comes back and reports success for attempt 1 with its old lease.
    const stale = finishTask(a, { ok: true }, later(80));
    const err = await store.transitionTask(k, stale).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).current).toMatchObject({
      status: 'running',
      attempt: 2,
      leaseToken: 'lease-b',
    });
    // Same attempt number, wrong token: also refused.
    await expect(
      store.transitionTask(k, finishTask({ ...b, leaseToken: 'lease-a' }, { ok: true }, later(80))),
    ).rejects.toBeInstanceOf(ConflictError);
    expect(await store.getTaskInstance(k)).toMatchObject({
      status: 'running',
      attempt: 2,
      leaseToken: 'lease-b',
    });
  });

  it('a transition of a task instance that does not exist is NotFound, and creates nothing', async () => {
    const ghost = key('no-such-run');
    const ti = { status: 'pending' as const, attempt: 0, leaseToken: null };
    await expect(store.transitionTask(ghost, queueTask(ti, t0))).rejects.toBeInstanceOf(
      NotFoundError,
    );
    expect(await store.getTaskInstance(ghost)).toBeUndefined();
  });
});

describe('readiness and progress counters', () => {
  it('counts each upstream outcome once, even when the event is delivered twice', async () => {
    const { run } = await store.createRun(newRun(3));
    const down = key(run.runId, 't2');
    const first = await store.recordUpstreamOutcome(down, 't0', 'success', 0);
    expect(first).toMatchObject({ counted: true, task: { counts: { success: 1, failed: 0 } } });
    const again = await store.recordUpstreamOutcome(down, 't0', 'success', 0);
    expect(again).toMatchObject({ counted: false, task: { counts: { success: 1 } } });
    const other = await store.recordUpstreamOutcome(down, 't1', 'upstream_failed', 0);
    expect(other.task.counts).toEqual({ success: 1, failed: 0, upstreamFailed: 1, skipped: 0 });
    // The same upstream task's next generation (after a clear) is another outcome.
    const next = await store.recordUpstreamOutcome(down, 't0', 'failed', 1);
    expect(next).toMatchObject({ counted: true, task: { counts: { success: 1, failed: 1 } } });
  });

  it('reports run progress once every task has finished, counting each task once', async () => {
    // 450 tasks: three progress shards.
    const tasks = 450;
    const { run } = await store.createRun(newRun(tasks));
    await store.writeRunTasks(newRun(tasks), { token: 'w', seconds: 360, now: t0 });
    const results = [];
    for (let i = 0; i < tasks; i++) {
      results.push(await store.recordTaskFinished(key(run.runId, `t${i}`), i !== 7, tasks, 0));
    }
    // Duplicate events change nothing.
    const dup = await store.recordTaskFinished(key(run.runId, 't7'), false, tasks, 0);
    const final = results.filter((r) => r !== undefined).at(-1);
    expect(final).toEqual({ total: tasks, finished: tasks, succeeded: tasks - 1, clears: 0 });
    expect(dup).toEqual(final);
    // Before the last task, no report said the run was complete.
    expect(results.slice(0, -1).every((r) => r === undefined || r.finished < tasks)).toBe(true);
  });
});

describe('deadline queries', () => {
  it('finds expired leases, stale queued attempts and due retries', async () => {
    const a = await queuedTask();
    const { run: r2 } = await store.createRun(newRun(1, later(3600)));
    const k2 = key(r2.runId);
    const pending2 = await store.getTaskInstance(k2);
    if (!pending2) throw new Error('task instance missing');
    const queued2 = await store.transitionTask(k2, queueTask(pending2, later(10)));

    // a: claimed with a 60 s lease at t0+1 → expires at t0+61.
    await store.transitionTask(a.k, claimTask(a.ti, 'lease', 60, later(1)));
    expect((await store.findExpiredLeases(later(30), 10)).map((t) => t.runId)).not.toContain(
      a.k.runId,
    );
    expect((await store.findExpiredLeases(later(62), 10)).map((t) => t.runId)).toContain(a.k.runId);

    // k2: queued at t0+10, never claimed.
    expect((await store.findQueuedBefore(later(5), 10)).map((t) => t.runId)).not.toContain(
      k2.runId,
    );
    expect((await store.findQueuedBefore(later(11), 10)).map((t) => t.runId)).toEqual([k2.runId]);

    // k2 claimed, fails, waits to retry at t0+100: it leaves the queued index, joins the retry one.
    const running = await store.transitionTask(k2, claimTask(queued2, 'l2', 60, later(20)));
    await store.transitionTask(
      k2,
      finishTask(running, { ok: false, error: 'x', retryAt: later(100) }, later(21)),
    );
    expect(await store.findQueuedBefore(later(1000), 10)).toEqual([]);
    expect(await store.findRetriesDue(later(99), 10)).toEqual([]);
    expect((await store.findRetriesDue(later(101), 10)).map((t) => [t.runId, t.status])).toEqual([
      [k2.runId, 'up_for_retry'],
    ]);
  });
});
