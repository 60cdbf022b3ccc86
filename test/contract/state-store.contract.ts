import { randomUUID } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  ConflictError,
  InvalidTransitionError,
  NotFoundError,
  ValidationError,
} from '../../core/errors.ts';
import type {
  ClearPlan,
  NewRun,
  RunRecord,
  StateStore,
  TaskInstanceRecord,
  TaskKey,
} from '../../core/ports.ts';
import { NO_COUNTS, progressShard } from '../../core/readiness/index.ts';
import type { RunStatus, TaskStatus } from '../../core/state/index.ts';
import {
  cancelTask,
  claimTask,
  clearTask,
  deferTask,
  finishTask,
  heartbeatTask,
  indexLeaseTask,
  manualRunId,
  queueTask,
  releaseTask,
  resolveTask,
  scheduledRunId,
} from '../../core/state/index.ts';

export interface StateStoreContractOptions {
  /**
   * Leaves what a writer of a large run's task instances leaves when it dies holding the
   * creation lease: the lease (`token`, until `until`) and no task instances. Without it, the
   * test of a busy writer is skipped.
   */
  readonly holdCreationLease?: (
    store: StateStore,
    run: { readonly dagId: string; readonly runId: string },
    token: string,
    until: Date,
  ) => Promise<void>;
}

const uid = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;
const t0 = new Date('2026-03-09T06:30:00.000Z');
const later = (s: number) => new Date(t0.getTime() + s * 1000);
const iso = (s: number) => later(s).toISOString();

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (e: unknown) => e,
  );
}

/**
 * The behaviour every StateStore must have, whatever holds the state: the one suite run against
 * the DynamoDB store on the emulator (test/integration) and the in-memory store (test/unit).
 * `makeStore` gives a store of its own, empty, to each test.
 */
export function stateStoreContract(
  name: string,
  makeStore: () => Promise<StateStore>,
  options: StateStoreContractOptions = {},
): void {
  describe(`StateStore contract: ${name}`, () => {
    let store: StateStore;
    let dagId: string;

    beforeEach(async () => {
      store = await makeStore();
      dagId = uid('dag');
    });

    const version = (extra: Partial<Parameters<StateStore['putDagVersion']>[0]> = {}) =>
      store.putDagVersion({
        dagId,
        sourceKey: 'k',
        sha256: 'a',
        taskCount: 1,
        at: t0,
        ...extra,
      });

    /** A run of `tasks` tasks t0, t1, …: t0 has no upstream task, each other one has one. */
    function newRun(tasks: number, extra: Partial<NewRun> = {}): NewRun {
      return {
        dagId,
        runId: manualRunId(uid('r')),
        dagVersion: 1,
        kind: 'manual',
        logicalDate: t0,
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

    async function task(k: TaskKey): Promise<TaskInstanceRecord> {
      const ti = await store.getTaskInstance(k);
      if (!ti) throw new Error(`task instance ${k.runId}/${k.taskId} missing`);
      return ti;
    }

    /** A one-task run, started, with its task queued: attempt 1, ready to claim. */
    async function queuedTask(extra: Partial<NewRun> = {}) {
      const { run } = await store.createRun(newRun(1, extra));
      const k = key(run.runId);
      return { run, k, ti: await store.transitionTask(k, queueTask(await task(k), t0)) };
    }

    /** A started run whose tasks all ended `skipped`, counted, and the run `success`. */
    async function finishedRun(tasks: number): Promise<RunRecord> {
      const { run } = await store.createRun(newRun(tasks));
      await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
      for (let i = 0; i < tasks; i++) {
        const k = key(run.runId, `t${i}`);
        await store.transitionTask(k, resolveTask(await task(k), 'skipped', t0));
        await store.recordTaskFinished(k, true, tasks, 0);
      }
      return store.transitionRun(dagId, run.runId, ['running'], 'success', t0);
    }

    describe('DAG versions', () => {
      it('stores a new version only when the document changes', async () => {
        const v1 = await version({ sha256: 'aaa', owner: 'data', description: 'sales' });
        expect(v1).toEqual({
          created: true,
          version: {
            dagId,
            version: 1,
            sourceKey: 'k',
            sha256: 'aaa',
            taskCount: 1,
            createdAt: t0.toISOString(),
          },
        });
        const same = await version({ sha256: 'aaa', at: later(5) });
        expect(same).toEqual({ created: false, version: v1.version });
        const v2 = await version({
          sha256: 'bbb',
          sourceKey: 'k2',
          at: later(60),
          schedule: { cron: '@daily', timezone: 'UTC', expression: 'cron(0 0 * * ? *)' },
        });
        expect(v2).toMatchObject({ created: true, version: { version: 2, sourceKey: 'k2' } });
        // The DAG item describes the latest version: an owner it no longer has is gone.
        const dag = await store.getDag(dagId);
        expect(dag).toEqual({
          dagId,
          latestVersion: 2,
          paused: false,
          deleted: false,
          incarnation: 1,
          activeRuns: [],
          schedule: { cron: '@daily', timezone: 'UTC', expression: 'cron(0 0 * * ? *)' },
          updatedAt: iso(60),
        });
        expect((await store.listDagVersions(dagId)).items.map((v) => v.version)).toEqual([2, 1]);
        expect(await store.getDagVersion(dagId, 1)).toEqual(v1.version);
        expect(await store.getDagVersion(dagId, 3)).toBeUndefined();
        // Back to the first document: a new version, since it is not the latest one.
        expect((await version({ sha256: 'aaa' })).version.version).toBe(3);
      });

      it('gives concurrent registrations distinct, consecutive versions', async () => {
        const results = await Promise.all(
          ['a', 'b', 'c', 'd'].map((sha256) => version({ sha256 })),
        );
        expect(results.map((r) => r.version.version).sort()).toEqual([1, 2, 3, 4]);
        expect(results.every((r) => r.created)).toBe(true);
        expect((await store.getDag(dagId))?.latestVersion).toBe(4);
      });

      it('lists versions newest first, a page at a time', async () => {
        for (const sha256 of ['a', 'b', 'c', 'd', 'e']) await version({ sha256 });
        const seen: number[] = [];
        let nextToken: string | undefined;
        for (let page = 0; page < 6; page++) {
          const res = await store.listDagVersions(dagId, { limit: 2, nextToken });
          expect(res.items.length).toBeLessThanOrEqual(2);
          seen.push(...res.items.map((v) => v.version));
          nextToken = res.nextToken;
          if (!nextToken) break;
        }
        expect(seen).toEqual([5, 4, 3, 2, 1]);
      });

      it('knows nothing of a DAG never registered', async () => {
        expect(await store.getDag(dagId)).toBeUndefined();
        expect(await store.getDagVersion(dagId, 1)).toBeUndefined();
        expect((await store.listDagVersions(dagId)).items).toEqual([]);
        expect(await store.dagOfFile(`dags/${dagId}.json`)).toBeUndefined();
        await expect(store.setDagPaused(dagId, true, t0)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.markDagDeleted(dagId, t0)).rejects.toBeInstanceOf(NotFoundError);
      });

      it('pauses, lists and deletes DAGs, keeping history', async () => {
        await version();
        const paused = await store.setDagPaused(dagId, true, later(1));
        expect(paused).toMatchObject({ dagId, paused: true, updatedAt: iso(1) });
        expect((await store.listDags({ limit: 1000 })).items.map((d) => d.dagId)).toEqual([dagId]);
        await store.markDagDeleted(dagId, later(2));
        expect((await store.listDags({ limit: 1000 })).items).toEqual([]);
        expect(await store.getDag(dagId)).toMatchObject({ deleted: true, updatedAt: iso(2) });
        expect((await store.listDagVersions(dagId)).items).toHaveLength(1);
        // A deleted DAG is as good as gone for pausing; deleting it again is harmless.
        await expect(store.setDagPaused(dagId, false, later(3))).rejects.toBeInstanceOf(
          NotFoundError,
        );
        await store.markDagDeleted(dagId, later(4));
        expect(await store.getDag(dagId)).toMatchObject({ deleted: true, paused: true });
      });

      it('lists live DAGs by id, a page at a time', async () => {
        const ids = ['d3', 'd1', 'd5', 'd2', 'd4'].map((d) => `${dagId}-${d}`);
        for (const id of ids) await version({ dagId: id });
        await store.markDagDeleted(`${dagId}-d4`, t0);
        const seen: string[] = [];
        let nextToken: string | undefined;
        for (let page = 0; page < 6; page++) {
          const res = await store.listDags({ limit: 2, nextToken });
          seen.push(...res.items.map((d) => d.dagId));
          nextToken = res.nextToken;
          if (!nextToken) break;
        }
        expect(seen).toEqual(['d1', 'd2', 'd3', 'd5'].map((d) => `${dagId}-${d}`));
        await expect(store.listDags({ nextToken: 'garbage!' })).rejects.toBeInstanceOf(
          ValidationError,
        );
      });

      it('a DAG created again after a delete starts unpaused, in a new incarnation', async () => {
        expect(await version()).toMatchObject({ created: true });
        expect(await store.getDag(dagId)).toMatchObject({ incarnation: 1, paused: false });
        await store.setDagPaused(dagId, true, t0);
        await store.markDagDeleted(dagId, t0);
        // The same document: a new version all the same, since the DAG was gone.
        expect(await version({ at: later(1) })).toMatchObject({
          created: true,
          version: { version: 2 },
        });
        expect(await store.getDag(dagId)).toMatchObject({
          incarnation: 2,
          paused: false,
          deleted: false,
          latestVersion: 2,
        });
        expect((await store.listDags()).items.map((d) => d.dagId)).toEqual([dagId]);
        // A pause now is of this incarnation; registering again does not undo it.
        await store.setDagPaused(dagId, true, later(2));
        await version({ sha256: 'b', at: later(3) });
        expect(await store.getDag(dagId)).toMatchObject({ incarnation: 2, paused: true });
      });

      it('two files may not declare one dagId; the first keeps it until it is deleted', async () => {
        await version({ sha256: 'a', fileKey: 'dags/one.json' });
        const err = await rejection(version({ sha256: 'b', fileKey: 'dags/two.json' }));
        expect(err).toBeInstanceOf(ConflictError);
        expect((err as Error).message).toMatch(/already declared by dags\/one\.json/);
        // The same content from the other file is refused too, not answered "unchanged".
        await expect(version({ sha256: 'a', fileKey: 'dags/two.json' })).rejects.toBeInstanceOf(
          ConflictError,
        );
        // Registered without a file (the API's form), it keeps its file.
        await version({ sha256: 'c' });
        expect(await store.getDag(dagId)).toMatchObject({
          fileKey: 'dags/one.json',
          latestVersion: 2,
        });
        expect(await store.dagOfFile('dags/one.json')).toBe(dagId);
        expect(await store.dagOfFile('dags/two.json')).toBeUndefined();
        await store.markDagDeleted(dagId, t0);
        // Deleted, it has no file, but the file still names it.
        expect(await store.getDag(dagId)).not.toHaveProperty('fileKey');
        expect(await store.dagOfFile('dags/one.json')).toBe(dagId);
        await version({ sha256: 'b', fileKey: 'dags/two.json' });
        expect(await store.getDag(dagId)).toMatchObject({
          fileKey: 'dags/two.json',
          deleted: false,
        });
        expect(await store.dagOfFile('dags/two.json')).toBe(dagId);
      });

      it('a file that declares another dagId names the new one', async () => {
        await version({ fileKey: 'dags/f.json' });
        await version({ dagId: `${dagId}-b`, fileKey: 'dags/f.json' });
        expect(await store.dagOfFile('dags/f.json')).toBe(`${dagId}-b`);
      });
    });

    describe('import errors', () => {
      it('records, replaces, lists by key and clears import errors', async () => {
        const record = (k: string, message = 'unknown task "x"') => ({
          key: `dags/${k}.json`,
          dagId,
          errors: [{ path: '$.tasks[0].dependsOn[0]', message }],
          time: t0.toISOString(),
        });
        for (const k of ['c', 'a', 'b']) await store.putImportError(record(k));
        await store.putImportError(record('a', 'now another problem'));
        const { key: _k, dagId: _d, ...noDag } = record('d');
        await store.putImportError({ key: 'dags/d.json', ...noDag });
        const seen = [];
        let nextToken: string | undefined;
        for (let page = 0; page < 5; page++) {
          const res = await store.listImportErrors({ limit: 2, nextToken });
          seen.push(...res.items);
          nextToken = res.nextToken;
          if (!nextToken) break;
        }
        expect(seen).toEqual([
          record('a', 'now another problem'),
          record('b'),
          record('c'),
          { key: 'dags/d.json', ...noDag },
        ]);
        await store.clearImportError('dags/b.json');
        await store.clearImportError('dags/b.json');
        await store.clearImportError('dags/never.json');
        expect((await store.listImportErrors()).items.map((e) => e.key)).toEqual([
          'dags/a.json',
          'dags/c.json',
          'dags/d.json',
        ]);
      });
    });

    describe('runs', () => {
      it('creates a run and its task instances, all pending', async () => {
        const input = newRun(3, { dagVersion: 4 });
        const { run, created } = await store.createRun(input);
        expect(created).toBe(true);
        expect(run).toEqual({
          dagId,
          runId: input.runId,
          dagVersion: 4,
          kind: 'manual',
          status: 'queued',
          logicalDate: t0.toISOString(),
          conf: { region: 'eu' },
          taskCount: 3,
          tasksWritten: true,
          createdAt: t0.toISOString(),
          startTime: null,
          endTime: null,
        });
        // Its creator wrote every item; the stored flag may wait for the run's start, or this.
        expect(await store.confirmRunTasks(dagId, run.runId, true)).toBe(true);
        expect(await store.getRun(dagId, run.runId)).toEqual(run);
        const tis = await store.listTaskInstances(dagId, run.runId);
        expect(tis.map((t) => [t.taskId, t.status, t.attempt, t.upstreamCount])).toEqual([
          ['t0', 'pending', 0, 0],
          ['t1', 'pending', 0, 1],
          ['t2', 'pending', 0, 1],
        ]);
        expect(tis[1]).toEqual({
          dagId,
          runId: run.runId,
          taskId: 't1',
          dagVersion: 4,
          status: 'pending',
          attempt: 0,
          leaseToken: null,
          upstreamCount: 1,
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
        });
        expect(await store.getRun(dagId, 'no-such-run')).toBeUndefined();
        expect(await store.listTaskInstances(dagId, 'no-such-run')).toEqual([]);
        expect(await store.getTaskInstance(key(run.runId, 'nope'))).toBeUndefined();
      });

      it('creates a run once: a second creation returns the run as it is, changing nothing', async () => {
        const input = newRun(2);
        await store.createRun(input);
        await store.transitionRun(dagId, input.runId, ['queued'], 'running', later(1));
        const again = await store.createRun({ ...input, conf: { other: true }, at: later(2) });
        expect(again.created).toBe(false);
        expect(again.run).toMatchObject({
          status: 'running',
          conf: { region: 'eu' },
          createdAt: t0.toISOString(),
        });
        expect(await store.getTaskInstance(key(input.runId, 't0'))).toMatchObject({
          status: 'pending',
        });
      });

      it.each([
        ['in one write', 5],
        ['the run item alone, for a run too large for one transaction', 250],
      ])('20 concurrent creations of the same run give one run (%s)', async (_, tasks) => {
        const input = newRun(tasks, { runId: scheduledRunId(t0), kind: 'scheduled' });
        const results = await Promise.all(Array.from({ length: 20 }, () => store.createRun(input)));
        expect(results.filter((r) => r.created)).toHaveLength(1);
        expect(new Set(results.map((r) => r.run.runId))).toEqual(new Set([input.runId]));
        expect((await store.listRuns(dagId)).items).toHaveLength(1);
        if (tasks > 98) {
          // The run item alone; then 20 writers race to write its tasks: one holds the lease.
          expect(results.every((r) => !r.run.tasksWritten)).toBe(true);
          expect(await store.listTaskInstances(dagId, input.runId)).toHaveLength(0);
          const writes = await Promise.all(
            Array.from({ length: 20 }, (_, i) =>
              store.writeRunTasks(input, { token: `w${i}`, seconds: 360, now: t0 }),
            ),
          );
          expect(writes.filter((w) => w === 'written').length).toBeGreaterThanOrEqual(1);
          expect((await store.getRun(dagId, input.runId))?.tasksWritten).toBe(true);
        }
        expect(await store.listTaskInstances(dagId, input.runId)).toHaveLength(tasks);
      });

      it('writes runs of up to 98 tasks whole, larger ones as the run item first', async () => {
        // 98 tasks, one progress shard and the run: the 100 items of one transaction.
        const small = await store.createRun(newRun(98));
        expect(small.run.tasksWritten).toBe(true);
        expect(await store.listTaskInstances(dagId, small.run.runId)).toHaveLength(98);
        const large = await store.createRun(newRun(99));
        expect(large.run.tasksWritten).toBe(false);
        expect(await store.getRun(dagId, large.run.runId)).toMatchObject({
          tasksWritten: false,
          taskCount: 99,
        });
        expect(await store.listTaskInstances(dagId, large.run.runId)).toEqual([]);
        // Unwritten, it has no progress to count yet.
        await expect(
          store.recordTaskFinished(key(large.run.runId), true, 99, 0),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it('writes a large run resumably, under a creation lease', async () => {
        const input = newRun(150);
        const { run } = await store.createRun(input);
        expect((await store.findUnwrittenRuns(later(1), 10)).map((r) => r.runId)).toEqual([
          run.runId,
        ]);
        // Created at t0: not yet unwritten "before t0".
        expect(await store.findUnwrittenRuns(t0, 10)).toEqual([]);
        expect(await store.listQueuedRuns(dagId, 5)).toEqual([]);
        let writtenAt = later(1);
        if (options.holdCreationLease) {
          // A writer took the lease until t0 + 60 s and died.
          await options.holdCreationLease(store, run, 'dead', later(60));
          expect(
            await store.writeRunTasks(input, { token: 'w1', seconds: 360, now: later(30) }),
          ).toBe('busy');
          // Not even at the very moment the lease ends.
          expect(
            await store.writeRunTasks(input, { token: 'w1', seconds: 360, now: later(60) }),
          ).toBe('busy');
          expect(await store.listTaskInstances(dagId, run.runId)).toHaveLength(0);
          expect((await store.getRun(dagId, run.runId))?.tasksWritten).toBe(false);
          writtenAt = later(61);
        }
        expect(
          await store.writeRunTasks(input, { token: 'w2', seconds: 360, now: writtenAt }),
        ).toBe('written');
        const tis = await store.listTaskInstances(dagId, run.runId);
        expect(tis).toHaveLength(150);
        expect(tis.every((t) => t.status === 'pending' && t.attempt === 0)).toBe(true);
        expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
        // Written, it waits in the DAG's queue, and in the reaper's view since it was written.
        expect((await store.listQueuedRuns(dagId, 5)).map((r) => r.runId)).toEqual([run.runId]);
        expect(await store.findQueuedRunsBefore(writtenAt, 10)).toEqual([]);
        expect((await store.findQueuedRunsBefore(later(3600), 10)).map((r) => r.runId)).toEqual([
          run.runId,
        ]);
        // A late writer changes nothing.
        await store.transitionTask(key(run.runId), queueTask(tis[0] as TaskInstanceRecord, t0));
        expect(
          await store.writeRunTasks(input, { token: 'w3', seconds: 360, now: later(9999) }),
        ).toBe('written');
        expect((await task(key(run.runId))).status).toBe('queued');
        // The progress of all 150 tasks is there.
        for (let i = 0; i < 150; i++) {
          const p = await store.recordTaskFinished(key(run.runId, `t${i}`), true, 150, 0);
          if (i < 149) expect(p === undefined || p.finished < 150).toBe(true);
          else expect(p).toEqual({ total: 150, finished: 150, succeeded: 150, clears: 0 });
        }
      });

      it('a small run, or one that does not exist, needs no writing', async () => {
        const input = newRun(2);
        await store.createRun(input);
        expect(await store.confirmRunTasks(dagId, input.runId, false)).toBe(true);
        expect(await store.writeRunTasks(input, { token: 'w', seconds: 360, now: t0 })).toBe(
          'written',
        );
        await expect(
          store.writeRunTasks(newRun(150), { token: 'w', seconds: 360, now: t0 }),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it('a large run cancelled before it was written never waits in a queue', async () => {
        const input = newRun(120);
        const { run } = await store.createRun(input);
        await store.transitionRun(dagId, run.runId, ['queued'], 'cancelled', later(1));
        expect(await store.findUnwrittenRuns(later(3600), 10)).toEqual([]);
        expect(await store.writeRunTasks(input, { token: 'w', seconds: 360, now: later(2) })).toBe(
          'written',
        );
        expect(await store.listTaskInstances(dagId, run.runId)).toHaveLength(120);
        expect(await store.listQueuedRuns(dagId, 5)).toEqual([]);
        expect(await store.findQueuedRunsBefore(later(3600), 10)).toEqual([]);
      });

      it('keeps conf exactly, even what a DynamoDB map could not hold', async () => {
        let deep: unknown = 'leaf';
        for (let i = 0; i < 60; i++) deep = { [`l${i}`]: deep };
        const conf = {
          deep,
          tiny: 1.5e-200,
          big: 1.7976931348623157e308,
          text: 'é'.repeat(20_000),
        };
        const { run } = await store.createRun(newRun(1, { conf }));
        expect((await store.getRun(dagId, run.runId))?.conf).toEqual(conf);
      });

      it('lists the runs of a range of logical dates, both ends included', async () => {
        const days = [1, 2, 3, 4, 5].map((d) => new Date(Date.UTC(2026, 2, d)));
        for (const d of days) {
          await store.createRun(newRun(1, { logicalDate: d, runId: scheduledRunId(d) }));
        }
        const range = { from: days[1]?.toISOString() ?? '', to: days[3]?.toISOString() ?? '' };
        const seen: string[] = [];
        let nextToken: string | undefined;
        for (let page = 0; page < 5; page++) {
          const res = await store.listRuns(dagId, { limit: 2, nextToken }, range);
          seen.push(...res.items.map((r) => r.logicalDate.slice(0, 10)));
          nextToken = res.nextToken;
          if (!nextToken) break;
        }
        expect(seen).toEqual(['2026-03-04', '2026-03-03', '2026-03-02']);
      });

      it('keeps a backfill, moves its cursor only from where it is, and lists those creating', async () => {
        const backfill = {
          dagId,
          backfillId: uid('bf'),
          from: iso(0),
          to: iso(3600),
          runs: 2,
          created: 0,
          cursor: iso(0),
          createdAt: iso(1),
          cron: '0 * * * *',
          timezone: 'UTC',
        };
        await store.putBackfill(backfill);
        await expect(store.putBackfill(backfill)).rejects.toBeInstanceOf(ConflictError);
        expect(await store.getBackfill(dagId, backfill.backfillId)).toEqual(backfill);
        expect((await store.listCreatingBackfills(100)).map((b) => b.backfillId)).toContain(
          backfill.backfillId,
        );
        const moved = await store.advanceBackfill(dagId, backfill.backfillId, iso(0), iso(3600), 1);
        expect(moved).toMatchObject({ cursor: iso(3600), created: 1 });
        // From a cursor read before that move: refused, with nothing changed.
        await expect(
          store.advanceBackfill(dagId, backfill.backfillId, iso(0), null, 1),
        ).rejects.toBeInstanceOf(ConflictError);
        const done = await store.advanceBackfill(dagId, backfill.backfillId, iso(3600), null, 1);
        expect(done).toMatchObject({ cursor: null, created: 2 });
        expect((await store.listCreatingBackfills(100)).map((b) => b.backfillId)).not.toContain(
          backfill.backfillId,
        );
        expect(await store.getBackfill(dagId, 'bf_none')).toBeUndefined();
      });

      it('lists runs newest first, a page at a time, refusing tokens it did not give', async () => {
        const days = [3, 1, 4, 2, 5].map((d) => new Date(Date.UTC(2026, 2, d)));
        for (const d of days) {
          await store.createRun(newRun(1, { logicalDate: d, runId: scheduledRunId(d) }));
        }
        const seen: string[] = [];
        let nextToken: string | undefined;
        for (let page = 0; page < 5; page++) {
          const res = await store.listRuns(dagId, { limit: 2, nextToken });
          seen.push(...res.items.map((r) => r.logicalDate.slice(0, 10)));
          nextToken = res.nextToken;
          if (!nextToken) break;
        }
        expect(seen).toEqual([
          '2026-03-05',
          '2026-03-04',
          '2026-03-03',
          '2026-03-02',
          '2026-03-01',
        ]);
        expect((await store.listRuns(`${dagId}-other`)).items).toEqual([]);
        await expect(store.listRuns(dagId, { nextToken: 'garbage!' })).rejects.toBeInstanceOf(
          ValidationError,
        );
        // Well-formed, but the keys of another query.
        const forged = Buffer.from(JSON.stringify({ pk: 'X', sk: 'Y' })).toString('base64url');
        await expect(store.listRuns(dagId, { nextToken: forged })).rejects.toBeInstanceOf(
          ValidationError,
        );
      });

      it('hands out copies: changing a record changes nothing stored', async () => {
        const input = newRun(2, { conf: { nested: { n: 1 } } });
        const { run } = await store.createRun(input);
        (input.conf.nested as { n: number }).n = 2;
        (run.conf.nested as { n: number }).n = 3;
        expect((await store.getRun(dagId, run.runId))?.conf).toEqual({ nested: { n: 1 } });
        const ti = await task(key(run.runId, 't1'));
        (ti.counts as { success: number }).success = 9;
        expect((await task(key(run.runId, 't1'))).counts).toEqual(NO_COUNTS);
        await version();
        await store.acquireRunSlot(dagId, run.runId, 2);
        const dag = await store.getDag(dagId);
        (dag?.activeRuns as string[] | undefined)?.push('intruder');
        expect((await store.getDag(dagId))?.activeRuns).toEqual([run.runId]);
      });
    });

    describe('run transitions', () => {
      it('moves a run through its statuses with conditional writes', async () => {
        const { run } = await store.createRun(newRun(1));
        const running = await store.transitionRun(
          dagId,
          run.runId,
          ['queued'],
          'running',
          later(1),
        );
        expect(running).toMatchObject({ status: 'running', startTime: iso(1), endTime: null });
        const err = await rejection(
          store.transitionRun(dagId, run.runId, ['queued'], 'running', later(2)),
        );
        expect(err).toBeInstanceOf(ConflictError);
        expect((err as ConflictError).current).toMatchObject({
          runId: run.runId,
          status: 'running',
        });
        const failed = await store.transitionRun(
          dagId,
          run.runId,
          ['running'],
          'failed',
          later(3),
          {
            reason: `x${'y'.repeat(3000)}`,
          },
        );
        expect(failed).toMatchObject({ status: 'failed', startTime: iso(1), endTime: iso(3) });
        expect(failed.error).toHaveLength(2000);
        expect(await store.getRun(dagId, run.runId)).toEqual(failed);
        // Reopened (a clear): the start stays, the end and the reason go.
        const reopened = await store.transitionRun(
          dagId,
          run.runId,
          ['failed'],
          'running',
          later(4),
        );
        expect(reopened).toMatchObject({ status: 'running', startTime: iso(1), endTime: null });
        expect(reopened).not.toHaveProperty('error');
        const cancelled = await store.transitionRun(
          dagId,
          run.runId,
          ['queued', 'running'],
          'cancelled',
          later(5),
        );
        expect(cancelled).toMatchObject({ status: 'cancelled', endTime: iso(5) });
      });

      it.each<[RunStatus[], RunStatus]>([
        [['cancelled'], 'success'],
        [['running'], 'queued'],
        [['success'], 'failed'],
        [['cancelled'], 'cancelled'],
        [['running', 'success'], 'cancelled'],
      ])('refuses the transition %j → %s, changing nothing', async (from, to) => {
        const { run } = await store.createRun(newRun(1));
        await store.confirmRunTasks(dagId, run.runId, false);
        await expect(
          store.transitionRun(dagId, run.runId, from, to, later(1)),
        ).rejects.toBeInstanceOf(InvalidTransitionError);
        expect(await store.getRun(dagId, run.runId)).toEqual(run);
      });

      it('a transition of a run that does not exist is NotFound', async () => {
        await expect(
          store.transitionRun(dagId, 'no-such-run', ['queued'], 'running', t0),
        ).rejects.toBeInstanceOf(NotFoundError);
        expect(await store.getRun(dagId, 'no-such-run')).toBeUndefined();
      });

      it('a run end read before a clear cannot land after it', async () => {
        const { run } = await store.createRun(newRun(1));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        const progress = await store.recordTaskFinished(key(run.runId), true, 1, 0);
        expect(progress).toEqual({ total: 1, finished: 1, succeeded: 1, clears: 0 });
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
        // Read after the clear, the progress carries its count, and the end lands.
        expect(await store.recordTaskFinished(key(run.runId), true, 1, 0)).toEqual({
          total: 1,
          finished: 1,
          succeeded: 1,
          clears: 1,
        });
        expect(
          await store.transitionRun(dagId, run.runId, ['running'], 'success', later(3), {
            clears: 1,
          }),
        ).toMatchObject({ status: 'success' });
      });

      it('a run never cleared matches clears 0', async () => {
        const { run } = await store.createRun(newRun(1));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0, { clears: 0 });
        await expect(
          store.transitionRun(dagId, run.runId, ['running'], 'success', t0, { clears: 1 }),
        ).rejects.toBeInstanceOf(ConflictError);
      });
    });

    describe('maxActiveRuns slots', () => {
      it('hands out at most max slots, once per run, even to concurrent callers', async () => {
        await version();
        const runs = Array.from({ length: 6 }, (_, i) => `r${i}`);
        const got = await Promise.all(runs.map((r) => store.acquireRunSlot(dagId, r, 2)));
        expect(got.filter(Boolean)).toHaveLength(2);
        const holders = runs.filter((_, i) => got[i]);
        expect([...((await store.getDag(dagId))?.activeRuns ?? [])].sort()).toEqual(holders);
        // A holder asking again still holds it; others are still refused.
        expect(await store.acquireRunSlot(dagId, holders[0] as string, 2)).toBe(true);
        expect(await store.acquireRunSlot(dagId, 'r-other', 2)).toBe(false);
        await store.releaseRunSlot(dagId, holders[0] as string);
        await store.releaseRunSlot(dagId, holders[0] as string);
        expect(await store.acquireRunSlot(dagId, 'r-other', 2)).toBe(true);
        expect(await store.acquireRunSlot(dagId, 'r-late', 2)).toBe(false);
        // A larger max (a new version) makes room.
        expect(await store.acquireRunSlot(dagId, 'r-late', 3)).toBe(true);
      });

      it('gives no slot while the DAG is paused or deleted; a run keeps the one it holds', async () => {
        await version();
        expect(await store.acquireRunSlot(dagId, 'r0', 5)).toBe(true);
        await store.setDagPaused(dagId, true, t0);
        expect(await store.acquireRunSlot(dagId, 'r1', 5)).toBe(false);
        expect(await store.acquireRunSlot(dagId, 'r0', 5)).toBe(true);
        await store.setDagPaused(dagId, false, t0);
        expect(await store.acquireRunSlot(dagId, 'r1', 5)).toBe(true);
        await store.markDagDeleted(dagId, t0);
        expect(await store.acquireRunSlot(dagId, 'r2', 5)).toBe(false);
        // Releasing still works on a deleted DAG: its ended runs give their slots back.
        await store.releaseRunSlot(dagId, 'r1');
        expect((await store.getDag(dagId))?.activeRuns).toEqual(['r0']);
      });

      it('keeps the slot of a run that is live again (a clear reopened it after its end)', async () => {
        await version();
        const { run } = await store.createRun(newRun(1));
        expect(await store.acquireRunSlot(dagId, run.runId, 1)).toBe(true);
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        // The release of an end that a clear overtook: the running run keeps its slot.
        await store.releaseRunSlot(dagId, run.runId);
        expect((await store.getDag(dagId))?.activeRuns).toEqual([run.runId]);
        expect(await store.acquireRunSlot(dagId, 'other', 1)).toBe(false);
        await store.transitionRun(dagId, run.runId, ['running'], 'success', later(1));
        await store.releaseRunSlot(dagId, run.runId);
        expect((await store.getDag(dagId))?.activeRuns).toEqual([]);
      });

      it('has no slots for a DAG that does not exist', async () => {
        await expect(store.acquireRunSlot(dagId, 'r', 1)).rejects.toBeInstanceOf(NotFoundError);
        // Giving back a slot of a DAG that does not exist has nothing to do.
        await expect(store.releaseRunSlot(dagId, 'r')).resolves.toBeUndefined();
        expect(await store.getDag(dagId)).toBeUndefined();
      });
    });

    describe('the queued-run index', () => {
      it('lists the DAG queued runs oldest first, until they start', async () => {
        for (const d of [3, 1, 2, 4]) {
          const logicalDate = new Date(Date.UTC(2026, 2, d));
          const runId = scheduledRunId(logicalDate);
          await store.createRun(newRun(1, { logicalDate, runId, at: later(d) }));
          // As its creator does when the run must wait for a slot.
          await store.confirmRunTasks(dagId, runId, false);
        }
        const other = { ...newRun(1), dagId: `${dagId}-other`, at: later(10) };
        await store.createRun(other);
        await store.confirmRunTasks(other.dagId, other.runId, false);
        const started = scheduledRunId(new Date(Date.UTC(2026, 2, 1)));
        await store.transitionRun(dagId, started, ['queued'], 'running', t0);
        const cancelled = scheduledRunId(new Date(Date.UTC(2026, 2, 4)));
        await store.transitionRun(dagId, cancelled, ['queued'], 'cancelled', t0);
        const queued = await store.listQueuedRuns(dagId, 10);
        expect(queued.map((r) => r.logicalDate.slice(0, 10))).toEqual(['2026-03-02', '2026-03-03']);
        expect(queued.every((r) => r.status === 'queued')).toBe(true);
        expect((await store.listQueuedRuns(dagId, 1)).map((r) => r.runId)).toEqual([
          queued[0]?.runId,
        ]);
        // The reaper's view, across DAGs, by when the run began to wait (its creation).
        const waitingSince = async (s: number) =>
          (await store.findQueuedRunsBefore(later(s), 10)).map((r) => r.runId).sort();
        expect(await waitingSince(2)).toEqual([]);
        expect(await waitingSince(2.5)).toEqual([scheduledRunId(new Date(Date.UTC(2026, 2, 2)))]);
        expect((await waitingSince(100)).length).toBe(3);
      });

      it('finds the next queued run with one read, however many runs the DAG has had', async () => {
        for (let i = 0; i < 30; i++) {
          const { run } = await store.createRun(
            newRun(1, { logicalDate: new Date(Date.UTC(2026, 0, 1, 0, i)) }),
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
    });

    describe('task transitions', () => {
      it('queue, claim, heartbeat and finish are each one conditional write', async () => {
        const { k, ti } = await queuedTask();
        expect(ti).toMatchObject({
          status: 'queued',
          attempt: 1,
          leaseToken: null,
          queuedAt: t0.toISOString(),
          retryAt: null,
        });
        const running = await store.transitionTask(k, claimTask(ti, 'lease-a', 60, later(1)));
        expect(running).toMatchObject({
          status: 'running',
          attempt: 1,
          leaseToken: 'lease-a',
          leaseExpiresAt: iso(61),
          startTime: iso(1),
          endTime: null,
        });
        const beat = await store.transitionTask(k, heartbeatTask(running, 60, later(30)));
        expect(beat).toMatchObject({ leaseToken: 'lease-a', leaseExpiresAt: iso(90) });
        const done = await store.transitionTask(k, finishTask(beat, { ok: true }, later(40)));
        expect(done).toMatchObject({
          status: 'success',
          attempt: 1,
          leaseToken: null,
          leaseExpiresAt: null,
          startTime: iso(1),
          endTime: iso(40),
          error: null,
          queuedAt: t0.toISOString(),
        });
        expect(await store.getTaskInstance(k)).toEqual(done);
      });

      it('a success keeps a small log with it, and says whether its writer advances it', async () => {
        const { run, k, ti } = await queuedTask();
        const running = await store.transitionTask(k, claimTask(ti, 'lease-a', 60, later(1)));
        expect(running.advanceInline).toBeUndefined();
        const done = await store.transitionTask(
          k,
          finishTask(running, { ok: true, log: 'one line\n', advanceInline: true }, later(2)),
        );
        expect(done).toMatchObject({ log: 'one line\n', logAttempt: 1, advanceInline: true });
        expect(await store.getTaskInstance(k)).toEqual(done);
        // A later write that does not set it clears the flag, and leaves the log as it is (it
        // belongs to attempt 1, whatever the task does next).
        const cleared = await store.transitionTask(k, clearTask(done, later(3)));
        expect(cleared.advanceInline).toBeUndefined();
        expect(cleared).toMatchObject({ log: 'one line\n', logAttempt: 1, status: 'pending' });
        // Resolutions are advanced inline by readiness: flagged.
        const { run: r2 } = await store.createRun(newRun(2));
        const k2 = key(r2.runId, 't1');
        const resolved = await store.transitionTask(
          k2,
          resolveTask(await task(k2), 'skipped', later(4)),
        );
        expect(resolved.advanceInline).toBe(true);
        expect(run.runId).not.toBe(r2.runId);
      });

      it("lists the outcomes counted in a run's progress", async () => {
        const { run } = await store.createRun(newRun(3));
        expect(await store.finishedTasks(dagId, run.runId)).toEqual(new Set());
        await store.recordTaskFinished(key(run.runId, 't0'), true, 3, 0);
        await store.recordTaskFinished(key(run.runId, 't2'), false, 3, 1);
        await store.recordTaskFinished(key(run.runId, 't2'), false, 3, 1); // counted once
        expect(await store.finishedTasks(dagId, run.runId)).toEqual(new Set(['t0#0', 't2#1']));
      });

      it('a failure waits to retry, is queued again with the next attempt, then fails for good', async () => {
        const { k, ti } = await queuedTask();
        const a1 = await store.transitionTask(k, claimTask(ti, 'l1', 60, later(1)));
        const wait = await store.transitionTask(
          k,
          finishTask(a1, { ok: false, error: 'boom', retryAt: later(70) }, later(10)),
        );
        expect(wait).toMatchObject({
          status: 'up_for_retry',
          attempt: 1,
          leaseToken: null,
          leaseExpiresAt: null,
          retryAt: iso(70),
          error: 'boom',
          endTime: null,
        });
        const q2 = await store.transitionTask(k, queueTask(wait, later(70)));
        expect(q2).toMatchObject({
          status: 'queued',
          attempt: 2,
          retryAt: null,
          queuedAt: iso(70),
        });
        const a2 = await store.transitionTask(k, claimTask(q2, 'l2', 60, later(71)));
        const failed = await store.transitionTask(
          k,
          finishTask(a2, { ok: false, error: 'boom again', retryAt: null }, later(80)),
        );
        expect(failed).toMatchObject({
          status: 'failed',
          attempt: 2,
          error: 'boom again',
          startTime: iso(71),
          endTime: iso(80),
        });
      });

      it('resolves, cancels and clears', async () => {
        const { run } = await store.createRun(newRun(6));
        const k = (i: number) => key(run.runId, `t${i}`);
        expect(
          await store.transitionTask(k(0), resolveTask(await task(k(0)), 'skipped', later(1))),
        ).toMatchObject({ status: 'skipped', attempt: 0, endTime: iso(1) });
        expect(
          await store.transitionTask(
            k(1),
            resolveTask(await task(k(1)), 'upstream_failed', later(1)),
          ),
        ).toMatchObject({ status: 'upstream_failed', endTime: iso(1) });
        // Cancel from each unfinished status.
        const pending = await task(k(2));
        const queued = await store.transitionTask(k(3), queueTask(await task(k(3)), t0));
        const running = await store.transitionTask(
          k(4),
          claimTask(await store.transitionTask(k(4), queueTask(await task(k(4)), t0)), 'l', 60, t0),
        );
        const waiting = await store.transitionTask(
          k(5),
          finishTask(
            await store.transitionTask(
              k(5),
              claimTask(
                await store.transitionTask(k(5), queueTask(await task(k(5)), t0)),
                'l',
                60,
                t0,
              ),
            ),
            { ok: false, error: 'x', retryAt: later(100) },
            later(1),
          ),
        );
        for (const ti of [pending, queued, running, waiting]) {
          expect(await store.transitionTask(ti, cancelTask(ti, later(2)))).toMatchObject({
            status: 'cancelled',
            attempt: ti.attempt,
            leaseToken: null,
            leaseExpiresAt: null,
            retryAt: null,
            endTime: iso(2),
          });
        }
        // Nothing waits for a deadline any more.
        expect(await store.findQueuedBefore(later(9999), 10)).toEqual([]);
        expect(await store.findExpiredLeases(later(9999), 10)).toEqual([]);
        expect(await store.findRetriesDue(later(9999), 10)).toEqual([]);
        // A cleared task keeps its attempt count, which becomes the base of its retries.
        const cancelled = await task(k(5));
        expect(await store.transitionTask(k(5), clearTask(cancelled, later(3)))).toMatchObject({
          status: 'pending',
          attempt: 1,
          retryBase: 1,
          leaseToken: null,
          retryAt: null,
          startTime: null,
          endTime: null,
          error: null,
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
        const winner = (won[0] as PromiseFulfilledResult<TaskInstanceRecord>).value.leaseToken;
        expect((await task(k)).leaseToken).toBe(winner);
      });

      it('a completion carrying a stale lease token is refused, and changes nothing', async () => {
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
        const err = await rejection(
          store.transitionTask(k, finishTask(a, { ok: true }, later(80))),
        );
        expect(err).toBeInstanceOf(ConflictError);
        expect((err as ConflictError).current).toMatchObject({
          taskId: 't0',
          status: 'running',
          attempt: 2,
          leaseToken: 'lease-b',
        });
        // Same attempt number, wrong token: also refused; so is a heartbeat with the old token.
        await expect(
          store.transitionTask(
            k,
            finishTask({ ...b, leaseToken: 'lease-a' }, { ok: true }, later(80)),
          ),
        ).rejects.toBeInstanceOf(ConflictError);
        await expect(
          store.transitionTask(k, heartbeatTask(a, 60, later(81))),
        ).rejects.toBeInstanceOf(ConflictError);
        // A claim expecting no lease is refused once someone holds one.
        await expect(
          store.transitionTask(k, claimTask(requeued, 'lease-c', 60, later(82))),
        ).rejects.toBeInstanceOf(ConflictError);
        expect(await task(k)).toEqual(b);
      });

      it('a transition expecting another status or attempt is refused with the task as it is', async () => {
        const { k, ti } = await queuedTask();
        const stale = { ...ti, attempt: 0 };
        const err = await rejection(store.transitionTask(k, claimTask(stale, 'l', 60, t0)));
        expect(err).toBeInstanceOf(ConflictError);
        expect((err as ConflictError).current).toEqual(ti);
        // Queued already: a second queue (a duplicate event) is refused.
        await expect(
          store.transitionTask(
            k,
            queueTask({ status: 'pending', attempt: 0, leaseToken: null }, t0),
          ),
        ).rejects.toBeInstanceOf(ConflictError);
        expect(await task(k)).toEqual(ti);
      });

      it('the reaper takes a lease only if it is still expired', async () => {
        const { k, ti } = await queuedTask();
        // Claimed at t0 with a 60 s lease; the reaper reads it expired at t0 + 61 s ...
        const read = await store.transitionTask(k, claimTask(ti, 'w', 60, t0));
        // ... and the worker heartbeats first, to t0 + 150 s.
        await store.transitionTask(k, heartbeatTask(read, 90, later(60)));
        const reap = {
          ...finishTask(read, { ok: false, error: 'lease expired', retryAt: null }, later(61)),
          leaseExpiredBy: iso(61),
        };
        await expect(store.transitionTask(k, reap)).rejects.toBeInstanceOf(ConflictError);
        expect(await task(k)).toMatchObject({ status: 'running', leaseToken: 'w' });
        // A lease that expires exactly then has not expired before it.
        await expect(
          store.transitionTask(k, { ...reap, leaseExpiredBy: iso(150) }),
        ).rejects.toBeInstanceOf(ConflictError);
        // Once the renewed lease has run out too, the same write goes through.
        await store.transitionTask(k, { ...reap, leaseExpiredBy: iso(151) });
        expect(await task(k)).toMatchObject({ status: 'failed', leaseToken: null });
      });

      it('a deferred attempt keeps its lease token and work; its finish keeps the output and drops the work', async () => {
        const { k, ti } = await queuedTask();
        const running = await store.transitionTask(k, claimTask(ti, 'w', 60, t0));
        const work = JSON.stringify({ operator: 'stepfunctions', name: 'n1', timeoutAt: iso(900) });
        const deferred = await store.transitionTask(
          k,
          deferTask(running, work, later(300), later(2)),
        );
        expect(deferred).toMatchObject({
          status: 'running',
          leaseToken: 'w',
          leaseExpiresAt: iso(300),
          deferred: work,
        });
        // In the deadline index at its check time, as any lease.
        expect((await store.findExpiredLeases(later(299), 100)).map((t) => t.taskId)).not.toContain(
          k.taskId,
        );
        expect((await store.findExpiredLeases(later(301), 100)).map((t) => t.taskId)).toContain(
          k.taskId,
        );
        // The finish is fenced by the same token: a stale one is refused.
        await expect(
          store.transitionTask(
            k,
            finishTask({ ...deferred, leaseToken: 'other' }, { ok: true }, later(5)),
          ),
        ).rejects.toBeInstanceOf(ConflictError);
        const done = await store.transitionTask(
          k,
          finishTask(deferred, { ok: true, output: { inline: '{"rows":3}' } }, later(5)),
        );
        expect(done).toMatchObject({
          status: 'success',
          deferred: null,
          output: '{"rows":3}',
          outputKey: null,
        });
        expect(await store.getTaskInstance(k)).toEqual(done);
      });

      it('a released attempt is queued again with the same attempt, for another claim', async () => {
        const { k, ti } = await queuedTask();
        const running = await store.transitionTask(k, claimTask(ti, 'w1', 60, t0));
        const back = await store.transitionTask(k, releaseTask(running, later(10)));
        expect(back).toMatchObject({
          status: 'queued',
          attempt: 1,
          leaseToken: null,
          leaseExpiresAt: null,
          startTime: null,
          queuedAt: iso(10),
        });
        const again = await store.transitionTask(k, claimTask(back, 'w2', 60, later(12)));
        expect(again).toMatchObject({ status: 'running', attempt: 1, leaseToken: 'w2' });
        // Only the holder of the lease may release it: the first worker no longer does.
        await expect(
          store.transitionTask(k, releaseTask(running, later(13))),
        ).rejects.toBeInstanceOf(ConflictError);
        expect(await store.getTaskInstance(k)).toMatchObject({
          status: 'running',
          leaseToken: 'w2',
        });
      });

      it('a deferral name leads back to its attempt', async () => {
        const ref = { dagId, runId: uid('run'), taskId: 't', attempt: 2 };
        const name = uid('work');
        expect(await store.getDeferral(name)).toBeUndefined();
        await store.putDeferral(name, ref);
        await store.putDeferral(name, ref);
        expect(await store.getDeferral(name)).toEqual(ref);
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

    describe('upstream counts and run progress', () => {
      it('counts each upstream outcome once per generation, even when delivered twice', async () => {
        const { run } = await store.createRun(newRun(3));
        const down = key(run.runId, 't2');
        const first = await store.recordUpstreamOutcome(down, 't0', 'success', 0);
        expect(first).toMatchObject({ counted: true, task: { taskId: 't2', status: 'pending' } });
        expect(first.task.counts).toEqual({ ...NO_COUNTS, success: 1 });
        const again = await store.recordUpstreamOutcome(down, 't0', 'success', 0);
        expect(again).toMatchObject({ counted: false, task: { counts: { success: 1 } } });
        // Counted already, whatever outcome the duplicate claims.
        expect(await store.recordUpstreamOutcome(down, 't0', 'failed', 0)).toMatchObject({
          counted: false,
          task: { counts: { success: 1, failed: 0 } },
        });
        const other = await store.recordUpstreamOutcome(down, 't1', 'upstream_failed', 0);
        expect(other.task.counts).toEqual({ success: 1, failed: 0, upstreamFailed: 1, skipped: 0 });
        // The same upstream task's next generation (after a clear) is another outcome.
        const next = await store.recordUpstreamOutcome(down, 't0', 'failed', 1);
        expect(next).toMatchObject({ counted: true, task: { counts: { success: 1, failed: 1 } } });
        // A cancellation counts as a failure; a skip as a skip.
        const d1 = key(run.runId, 't1');
        await store.recordUpstreamOutcome(d1, 't0', 'cancelled', 0);
        await store.recordUpstreamOutcome(d1, 'tx', 'skipped', 0);
        expect((await task(d1)).counts).toEqual({ ...NO_COUNTS, failed: 1, skipped: 1 });
      });

      it('counts outcomes that arrive at once each once, as if one after another', async () => {
        const ups = Array.from({ length: 20 }, (_, i) => `u${i}`);
        const { run } = await store.createRun(
          newRun(1, { tasks: [{ taskId: 'join', upstreamCount: ups.length }] }),
        );
        const join = key(run.runId, 'join');
        const status = (i: number): TaskStatus =>
          i % 5 === 1 ? 'failed' : i % 5 === 2 ? 'skipped' : 'success';
        const count = (crowd: (readonly [string, TaskStatus])[]) =>
          Promise.all(crowd.map(([u, s]) => store.recordUpstreamOutcome(join, u, s, 0)));
        const at = (i: number) => [`u${i}`, status(i)] as const;
        // u0 … u13, with a duplicate of u3 in the same crowd, right after it.
        const crowd = ups.slice(0, 14).map((_, i) => at(i));
        crowd.splice(4, 0, ['u3', 'success']);
        const first = await count(crowd);
        // u14 … u19, with a repeat of u0 among them.
        const second = await count([
          at(14),
          at(15),
          at(16),
          ['u0', 'failed'],
          at(17),
          at(18),
          at(19),
        ]);
        const total = (r: { task: TaskInstanceRecord }) =>
          Object.values(r.task.counts).reduce((a, b) => a + b, 0);
        // Each saw the counts up to its own, in the order they came; a duplicate or a repeat,
        // as they stood when it came: not counted, and not completing the join.
        expect([...first, ...second].map((r) => [r.counted, total(r)])).toEqual([
          ...[1, 2, 3, 4].map((n) => [true, n]),
          [false, 4],
          ...[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17].map((n) => [true, n]),
          [false, 17],
          ...[18, 19, 20].map((n) => [true, n]),
        ]);
        // u0, u3, u4, u5, … success; u1, u6, u11, u16 failed; u2, u7, u12, u17 skipped.
        expect((await task(join)).counts).toEqual({
          success: 12,
          failed: 4,
          upstreamFailed: 0,
          skipped: 4,
        });
      });

      it('counts ends that arrive at once each once; only the end that completes the run sees it', async () => {
        const { run } = await store.createRun(newRun(30));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        const end =
          (taskId: string, succeeded = true, extra = false) =>
          () =>
            store.recordTaskFinished(key(run.runId, taskId), succeeded, 30, 0, extra);
        const ends = Array.from({ length: 30 }, (_, i) => end(`t${i}`, i !== 7));
        // A duplicate of an end, in the same crowd a little after it.
        ends.splice(11, 0, end('t5'));
        // After the end that completes the run: an uncounted task's failure, beyond the total
        // (progressEntry `extra`), and a duplicate of an end.
        ends.push(end('x', false, true), end('t27'));
        // Called in this order, all before any answers.
        const results = await Promise.all(ends.map((e) => e()));
        const failed = { total: 31, finished: 31, succeeded: 29, clears: 0 };
        expect(results.slice(0, 30).every((r) => r === undefined)).toBe(true);
        // t29 completed the run; what it reads may include the failure counted after it.
        expect(results[30]).toMatchObject({ succeeded: 29, clears: 0 });
        expect(results[30]?.finished).toBe(results[30]?.total);
        expect(results.slice(31)).toEqual([failed, failed]);

        // A repeat of an end counted before, in a crowd of new ones.
        const { run: small } = await store.createRun(newRun(3));
        await store.recordTaskFinished(key(small.runId, 't0'), true, 3, 0);
        const again = await Promise.all(
          ['t1', 't0', 't2'].map((t) => store.recordTaskFinished(key(small.runId, t), true, 3, 0)),
        );
        expect(again).toEqual([
          undefined,
          undefined,
          { total: 3, finished: 3, succeeded: 3, clears: 0 },
        ]);
      });

      it('counts and queues in one write a pending task with nothing counted, once', async () => {
        const { run } = await store.createRun(newRun(3));
        const down = key(run.runId, 't1');
        const both = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(5),
        });
        expect(both).toMatchObject({
          counted: true,
          task: { status: 'queued', attempt: 1, queuedAt: iso(5), counts: { success: 1 } },
        });
        expect(await store.getTaskInstance(down)).toEqual(both.task);
        // The queued index has it, as if queueTask had written it.
        expect((await store.findQueuedBefore(later(6), 100)).map((t) => t.taskId)).toContain('t1');
        // A duplicate neither counts nor queues again.
        const again = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(7),
        });
        expect(again).toMatchObject({ counted: false, task: { status: 'queued', attempt: 1 } });
        expect((await task(down)).queuedAt).toBe(iso(5));
        // With an outcome counted already (here another upstream's), it only counts: the
        // caller decides from the counts as usual.
        const other = key(run.runId, 't2');
        await store.recordUpstreamOutcome(other, 'tx', 'skipped', 0);
        const counted = await store.recordUpstreamOutcome(other, 't0', 'success', 0, {
          queueAt: later(8),
        });
        expect(counted).toMatchObject({
          counted: true,
          task: { status: 'pending', attempt: 0, counts: { success: 1, skipped: 1 } },
        });
      });

      it('keeps the attempts that did not succeed, and writes the history a clear gives', async () => {
        const { run, k, ti } = await queuedTask();
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        const running = await store.transitionTask(k, claimTask(ti, 'lease-1', 60, later(1)));
        const failed = await store.transitionTask(
          k,
          finishTask(running, { ok: false, error: 'boom', retryAt: later(30) }, later(2)),
        );
        expect(failed.history).toEqual([
          { attempt: 1, status: 'up_for_retry', startTime: iso(1), endTime: iso(2), error: 'boom' },
        ]);
        const again = await store.transitionTask(k, queueTask(failed, later(30)));
        const second = await store.transitionTask(k, claimTask(again, 'lease-2', 60, later(31)));
        expect(second).toMatchObject({ error: null, history: [{ attempt: 1 }] });
        const done = await store.transitionTask(k, finishTask(second, { ok: true }, later(32)));
        expect(done.history).toHaveLength(1);
        const past = {
          attempt: 2,
          status: 'success' as const,
          startTime: iso(31),
          endTime: iso(32),
        };
        await store.clearTasks({
          dagId,
          runId: run.runId,
          taskCount: 1,
          runStatus: 'running',
          at: later(40),
          tasks: [
            {
              taskId: 't0',
              expect: { status: 'success', attempt: 2, generation: 0, counts: done.counts },
              status: 'queued',
              attempt: 3,
              newGeneration: true,
              generation: 1,
              counts: done.counts,
              counted: [],
              oldSucceeded: true,
              history: [...(done.history ?? []), past],
            },
          ],
        });
        expect((await task(k)).history).toEqual([
          { attempt: 1, status: 'up_for_retry', startTime: iso(1), endTime: iso(2), error: 'boom' },
          past,
        ]);
      });

      it('counts, queues and claims in one write for a worker that runs the task itself', async () => {
        const { run } = await store.createRun(newRun(3));
        const down = key(run.runId, 't1');
        const claim = { leaseToken: 'lease-a', leaseExpiresAt: iso(65) };
        const all = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(5),
          claim,
        });
        expect(all).toMatchObject({
          counted: true,
          task: {
            status: 'running',
            attempt: 1,
            leaseToken: 'lease-a',
            leaseExpiresAt: iso(65),
            startTime: iso(5),
            queuedAt: iso(5),
            counts: { success: 1 },
            continued: true,
          },
        });
        expect(await store.getTaskInstance(down)).toEqual(all.task);
        // In no deadline index: neither queued nor under its lease, even once it has run out
        // (its repair is the return of its worker's message, app/advance.ts).
        expect((await store.findQueuedBefore(later(6), 100)).map((t) => t.taskId)).not.toContain(
          't1',
        );
        expect((await store.findExpiredLeases(later(70), 100)).map((t) => t.taskId)).not.toContain(
          't1',
        );
        // A duplicate neither counts nor claims again: the lease stays the first claim's.
        const again = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(7),
          claim: { leaseToken: 'lease-b', leaseExpiresAt: iso(67) },
        });
        expect(again).toMatchObject({
          counted: false,
          task: { status: 'running', attempt: 1, leaseToken: 'lease-a' },
        });
        // Its first heartbeat puts it under its lease, as any running attempt, and it is a
        // continuation no longer: from then on the reaper repairs it.
        const beat = await store.transitionTask(down, heartbeatTask(again.task, 60, later(30)));
        expect(beat.continued).toBeUndefined();
        expect((await store.findExpiredLeases(later(89), 100)).map((t) => t.taskId)).not.toContain(
          't1',
        );
        expect((await store.findExpiredLeases(later(91), 100)).map((t) => t.taskId)).toContain(
          't1',
        );
        expect((await store.getTaskInstance(down))?.continued).toBeUndefined();
      });

      it('indexes a continued task under the lease it has, and only while it is one', async () => {
        const { run } = await store.createRun(newRun(3));
        const down = key(run.runId, 't1');
        const { task: read } = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(5),
          claim: { leaseToken: 'lease-a', leaseExpiresAt: iso(65) },
        });
        // Indexed, not renewed: found once that lease has run out, and a continuation no longer.
        const indexed = await store.transitionTask(down, indexLeaseTask(read, later(10)));
        expect(indexed).toMatchObject({
          status: 'running',
          leaseToken: 'lease-a',
          leaseExpiresAt: iso(65),
        });
        expect(indexed.continued).toBeUndefined();
        expect((await store.findExpiredLeases(later(64), 100)).map((t) => t.taskId)).not.toContain(
          't1',
        );
        expect((await store.findExpiredLeases(later(66), 100)).map((t) => t.taskId)).toContain(
          't1',
        );
        // Again from the same read (after a heartbeat renewed the lease, say): refused, so that
        // the renewed lease is not moved back.
        const beat = await store.transitionTask(down, heartbeatTask(indexed, 120, later(20)));
        await expect(
          store.transitionTask(down, indexLeaseTask(read, later(21))),
        ).rejects.toBeInstanceOf(ConflictError);
        expect((await store.getTaskInstance(down))?.leaseExpiresAt).toBe(beat.leaseExpiresAt);
      });

      it('claims tentatively, and settles a tentative claim only under its lease, once', async () => {
        const { run } = await store.createRun(newRun(3));
        const down = key(run.runId, 't1');
        const pending = (await store.getTaskInstance(down)) as TaskInstanceRecord;
        const tentative = { leaseToken: 'lease-a', leaseExpiresAt: iso(65), tentative: 1 };
        const { task: claimed } = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(5),
          claim: tentative,
        });
        expect(claimed).toMatchObject({ status: 'running', attempt: 1, tentative: 1 });
        expect(await store.getTaskInstance(down)).toEqual(claimed);
        // Only a success is counted so.
        await expect(
          store.recordUpstreamOutcome(key(run.runId, 't2'), 't1', 'failed', 0, {
            queueAt: later(5),
            claim: tentative,
          }),
        ).rejects.toThrow(/success only/);
        // Where it cannot claim (claimed already; queued; something counted), it counts nothing.
        const counts = claimed.counts;
        const q = (await queuedTask()).k;
        const { run: third } = await store.createRun(newRun(3));
        const some = key(third.runId, 't1');
        await store.recordUpstreamOutcome(some, 'tz', 'failed', 0);
        for (const k of [down, q, some]) {
          const before = (await store.getTaskInstance(k)) as TaskInstanceRecord;
          const again = await store.recordUpstreamOutcome(k, 'tx', 'success', 0, {
            queueAt: later(6),
            claim: { ...tentative, leaseToken: 'lease-x' },
          });
          expect(again.counted).toBe(false);
          expect(await store.getTaskInstance(k)).toEqual(before);
        }
        expect(counts).toMatchObject({ success: 1 });
        // Not under another lease.
        await expect(
          store.settleTentative(down, 'lease-b', 'withdraw', later(6)),
        ).rejects.toBeInstanceOf(ConflictError);
        // Put in the lease index, it stays tentative: the reaper settles it first.
        const indexed = await store.transitionTask(down, indexLeaseTask(claimed, later(7)));
        expect(indexed.tentative).toBe(1);
        // Withdrawn: as it was before the claim, so that the outcome counts again, and queues it.
        const withdrawn = await store.settleTentative(down, 'lease-a', 'withdraw', later(8));
        expect(withdrawn).toEqual(pending);
        // Out of the lease index it was put in: the reaper finds nothing there once it expires.
        expect((await store.findExpiredLeases(later(66), 100)).map((t) => t.taskId)).not.toContain(
          't1',
        );
        expect(await store.getTaskInstance(down)).toEqual(withdrawn);
        // Once: it is tentative no more.
        await expect(
          store.settleTentative(down, 'lease-a', 'withdraw', later(9)),
        ).rejects.toBeInstanceOf(ConflictError);
        const recount = await store.recordUpstreamOutcome(down, 't0', 'success', 0, {
          queueAt: later(10),
        });
        expect(recount).toMatchObject({
          counted: true,
          task: { status: 'queued', attempt: 1, counts: { success: 1 } },
        });
        // Confirmed: the claim stands, tentative no more; its worker's next write is unchanged.
        const other = key(run.runId, 't2');
        const { task: t2 } = await store.recordUpstreamOutcome(other, 't1', 'success', 0, {
          queueAt: later(11),
          claim: { ...tentative, leaseToken: 'lease-c' },
        });
        expect(t2.tentative).toBe(1);
        const confirmed = await store.settleTentative(other, 'lease-c', 'confirm', later(12));
        expect(confirmed).toMatchObject({ status: 'running', attempt: 1, leaseToken: 'lease-c' });
        expect(confirmed.tentative).toBeUndefined();
        expect(await store.getTaskInstance(other)).toEqual(confirmed);
        await expect(
          store.settleTentative(other, 'lease-c', 'withdraw', later(13)),
        ).rejects.toBeInstanceOf(ConflictError);
        // Any other transition ends it: a heartbeat, here.
        const { run: second } = await store.createRun(newRun(3));
        const { task: beating } = await store.recordUpstreamOutcome(
          key(second.runId, 't1'),
          't0',
          'success',
          0,
          { queueAt: later(14), claim: tentative },
        );
        const beat = await store.transitionTask(beating, heartbeatTask(beating, 60, later(15)));
        expect(beat.tentative).toBeUndefined();
        expect((await store.getTaskInstance(beating))?.tentative).toBeUndefined();
        await expect(
          store.settleTentative(key(run.runId, 'nope'), 'lease-a', 'confirm', later(16)),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it('counts whatever status the downstream task is in', async () => {
        const { k, ti } = await queuedTask();
        expect(await store.recordUpstreamOutcome(k, 'up', 'success', 0)).toMatchObject({
          counted: true,
          task: { status: 'queued', attempt: ti.attempt, counts: { success: 1 } },
        });
      });

      it('refuses an outcome that is not one, and a task that does not exist', async () => {
        const { run } = await store.createRun(newRun(2));
        for (const status of ['pending', 'queued', 'running', 'up_for_retry'] as TaskStatus[]) {
          await expect(
            store.recordUpstreamOutcome(key(run.runId, 't1'), 't0', status, 0),
          ).rejects.toThrow(/not a finished status/);
        }
        expect((await task(key(run.runId, 't1'))).counts).toEqual(NO_COUNTS);
        await expect(
          store.recordUpstreamOutcome(key(run.runId, 'nope'), 't0', 'success', 0),
        ).rejects.toBeInstanceOf(NotFoundError);
        await expect(
          store.recordTaskFinished(key('no-such-run'), true, 1, 0),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it('reports run progress once every task has finished, counting each task once', async () => {
        // 450 tasks: three progress shards.
        const tasks = 450;
        const input = newRun(tasks);
        const { run } = await store.createRun(input);
        await store.writeRunTasks(input, { token: 'w', seconds: 360, now: t0 });
        const results = [];
        for (let i = 0; i < tasks; i++) {
          results.push(await store.recordTaskFinished(key(run.runId, `t${i}`), i !== 7, tasks, 0));
        }
        // Duplicate events change nothing.
        const dup = await store.recordTaskFinished(key(run.runId, 't7'), true, tasks, 0);
        const final = results.filter((r) => r !== undefined).at(-1);
        expect(final).toEqual({ total: tasks, finished: tasks, succeeded: tasks - 1, clears: 0 });
        expect(dup).toEqual(final);
        // Before the last task, no report said the run was complete.
        expect(results.slice(0, -1).every((r) => r === undefined || r.finished < tasks)).toBe(true);
        expect(results.at(-1)).toEqual(final);
      });

      it('leaves uncounted tasks out of the total; an extra end raises it, once', async () => {
        // t0 → t1 → t2: t0 and t1 uncounted (core/readiness uncountedTasks).
        const input = newRun(3);
        const tasks = input.tasks.map((t) => ({ ...t, uncounted: t.taskId !== 't2' }));
        const { run } = await store.createRun({ ...input, tasks });
        expect((await task(key(run.runId, 't0'))).uncounted).toBe(true);
        expect((await task(key(run.runId, 't2'))).uncounted).toBeUndefined();
        // t0 failed: counted beyond the total, so the run can neither end sooner nor succeed.
        expect(await store.recordTaskFinished(key(run.runId, 't0'), false, 3, 0, true)).toBe(
          undefined,
        );
        expect(
          await store.recordTaskFinished(key(run.runId, 't0'), false, 3, 0, true),
        ).toBeUndefined();
        expect(await store.recordTaskFinished(key(run.runId, 't2'), true, 3, 0)).toEqual({
          total: 2,
          finished: 2,
          succeeded: 1,
          clears: 0,
        });
        // Without t0's failure the total is t2 alone.
        const other = newRun(3);
        const { run: run2 } = await store.createRun({
          ...other,
          tasks: other.tasks.map((t) => ({ ...t, uncounted: t.taskId !== 't2' })),
        });
        expect(await store.recordTaskFinished(key(run2.runId, 't2'), true, 3, 0)).toEqual({
          total: 1,
          finished: 1,
          succeeded: 1,
          clears: 0,
        });
      });

      it('counts a task once per generation in its run progress', async () => {
        const { run } = await store.createRun(newRun(2));
        expect(await store.recordTaskFinished(key(run.runId, 't0'), true, 2, 0)).toBeUndefined();
        expect(await store.recordTaskFinished(key(run.runId, 't0'), false, 2, 0)).toBeUndefined();
        expect(await store.recordTaskFinished(key(run.runId, 't1'), false, 2, 0)).toEqual({
          total: 2,
          finished: 2,
          succeeded: 1,
          clears: 0,
        });
        // A second generation with no clear to make room for it overcounts: clears must bump.
        expect(await store.recordTaskFinished(key(run.runId, 't1'), true, 2, 1)).toEqual({
          total: 2,
          finished: 3,
          succeeded: 2,
          clears: 0,
        });
      });
    });

    describe('clear', () => {
      const plan = (
        runId: string,
        expectT1Attempt: number,
        extra: Partial<ClearPlan> = {},
      ): ClearPlan => ({
        dagId,
        runId,
        taskCount: 2,
        runStatus: 'success',
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
          counts: NO_COUNTS,
          counted: [],
          oldSucceeded: true,
        })),
        ...extra,
      });

      it('applies whole or not at all', async () => {
        const run = await finishedRun(2);
        // What was read of t1 is stale: nothing of the clear is applied, the run included.
        await expect(store.clearTasks(plan(run.runId, 7))).rejects.toBeInstanceOf(ConflictError);
        expect(await store.getRun(dagId, run.runId)).toEqual(run);
        const tasks = await store.listTaskInstances(dagId, run.runId);
        expect(tasks.map((t) => [t.taskId, t.status, t.generation])).toEqual([
          ['t0', 'skipped', 0],
          ['t1', 'skipped', 0],
        ]);
        // So is a plan read from a run in another status.
        await expect(
          store.clearTasks(plan(run.runId, 0, { runStatus: 'failed' })),
        ).rejects.toBeInstanceOf(ConflictError);
        await store.clearTasks(plan(run.runId, 0));
        expect(await store.getRun(dagId, run.runId)).toMatchObject({
          status: 'running',
          endTime: null,
          startTime: run.startTime,
        });
        const after = await store.listTaskInstances(dagId, run.runId);
        expect(after.map((t) => [t.taskId, t.status, t.attempt, t.generation])).toEqual([
          ['t0', 'queued', 1, 1],
          ['t1', 'queued', 1, 1],
        ]);
        expect(after[0]).toMatchObject({ queuedAt: iso(5), retryBase: 0, endTime: null });
        // Queued by the clear itself: in the reaper's index, so a lost message is sent again.
        expect(await store.findQueuedBefore(later(5), 10)).toEqual([]);
        expect((await store.findQueuedBefore(later(3600), 10)).length).toBe(2);
        // The same plan again: what it expects is gone.
        await expect(store.clearTasks(plan(run.runId, 0))).rejects.toBeInstanceOf(ConflictError);
      });

      it('writes each cleared task as planned: new generation, counts, outcomes counted', async () => {
        const { run } = await store.createRun(newRun(3));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        const k = (i: number) => key(run.runId, `t${i}`);
        // t0 failed for good at attempt 2 (retries), t1 upstream_failed, t2 still pending.
        let t = await store.transitionTask(k(0), queueTask(await task(k(0)), t0));
        t = await store.transitionTask(k(0), claimTask(t, 'l', 60, t0));
        t = await store.transitionTask(
          k(0),
          finishTask(t, { ok: false, error: 'x', retryAt: later(1) }, t0),
        );
        t = await store.transitionTask(k(0), queueTask(t, later(1)));
        t = await store.transitionTask(k(0), claimTask(t, 'l2', 60, later(1)));
        await store.transitionTask(
          k(0),
          finishTask(t, { ok: false, error: 'y', retryAt: null }, later(2)),
        );
        await store.recordUpstreamOutcome(k(1), 't0', 'failed', 0);
        await store.transitionTask(
          k(1),
          resolveTask(await task(k(1)), 'upstream_failed', later(3)),
        );
        await store.clearTasks({
          dagId,
          runId: run.runId,
          taskCount: 3,
          runStatus: 'running',
          at: later(10),
          tasks: [
            {
              taskId: 't0',
              expect: { status: 'failed', attempt: 2, generation: 0, counts: NO_COUNTS },
              status: 'queued',
              attempt: 3,
              newGeneration: true,
              generation: 1,
              counts: NO_COUNTS,
              counted: [],
              oldSucceeded: false,
            },
            {
              taskId: 't1',
              expect: {
                status: 'upstream_failed',
                attempt: 0,
                generation: 0,
                counts: { ...NO_COUNTS, failed: 1 },
              },
              status: 'pending',
              attempt: 0,
              newGeneration: true,
              generation: 1,
              counts: NO_COUNTS,
              counted: ['t0#0'],
              oldSucceeded: false,
            },
            {
              taskId: 't2',
              expect: { status: 'pending', attempt: 0, generation: 0, counts: NO_COUNTS },
              status: 'skipped',
              attempt: 0,
              newGeneration: false,
              generation: 0,
              counts: { ...NO_COUNTS, skipped: 1 },
              counted: ['t1#1'],
            },
          ],
        });
        expect(await task(k(0))).toMatchObject({
          status: 'queued',
          attempt: 3,
          generation: 1,
          retryBase: 2,
          error: null,
          startTime: null,
          endTime: null,
          retryAt: null,
          leaseExpiresAt: null,
          queuedAt: iso(10),
        });
        expect(await task(k(1))).toMatchObject({
          status: 'pending',
          generation: 1,
          counts: NO_COUNTS,
          endTime: null,
        });
        expect(await task(k(2))).toMatchObject({
          status: 'skipped',
          generation: 0,
          counts: { ...NO_COUNTS, skipped: 1 },
          endTime: iso(10),
        });
        // The outcomes named counted are counted: their events change nothing.
        expect(await store.recordUpstreamOutcome(k(1), 't0', 'failed', 0)).toMatchObject({
          counted: false,
          task: { counts: NO_COUNTS },
        });
        expect((await store.recordUpstreamOutcome(k(2), 't1', 'skipped', 1)).counted).toBe(false);
        expect((await store.recordUpstreamOutcome(k(1), 't0', 'success', 1)).counted).toBe(true);
        expect((await store.getRun(dagId, run.runId))?.status).toBe('running');
      });

      it('reopens a failed run, removing its end and its reason', async () => {
        const { run } = await store.createRun(newRun(1));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', later(1));
        await store.transitionRun(dagId, run.runId, ['running'], 'failed', later(2), {
          reason: 'could not be processed',
        });
        await store.clearTasks({
          dagId,
          runId: run.runId,
          taskCount: 1,
          runStatus: 'failed',
          at: later(3),
          tasks: [],
        });
        const reopened = await store.getRun(dagId, run.runId);
        expect(reopened).toMatchObject({ status: 'running', startTime: iso(1), endTime: null });
        expect(reopened).not.toHaveProperty('error');
      });

      it('does not clear a task that holds a lease, or one that does not exist', async () => {
        const { run, k, ti } = await queuedTask();
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        const running = await store.transitionTask(k, claimTask(ti, 'l', 60, t0));
        const one = (taskId: string, status: TaskStatus): ClearPlan => ({
          dagId,
          runId: run.runId,
          taskCount: 1,
          runStatus: 'running',
          at: later(1),
          tasks: [
            {
              taskId,
              expect: { status, attempt: 1, generation: 0, counts: NO_COUNTS },
              status: 'pending',
              attempt: 1,
              newGeneration: false,
              generation: 0,
              counts: NO_COUNTS,
              counted: [],
            },
          ],
        });
        await expect(store.clearTasks(one('t0', 'running'))).rejects.toBeInstanceOf(ConflictError);
        await expect(store.clearTasks(one('nope', 'pending'))).rejects.toBeInstanceOf(
          ConflictError,
        );
        expect(await task(k)).toEqual(running);
        // Nothing was applied: the run's clear count is unchanged.
        await store.transitionRun(dagId, run.runId, ['running'], 'success', t0, { clears: 0 });
      });

      it('keeps progress exact whether or not the old outcome was counted yet', async () => {
        const run = await finishedRun(2);
        await store.clearTasks(plan(run.runId, 0));
        // The old outcomes come again (a late duplicate): they are already counted.
        expect(await store.recordTaskFinished(key(run.runId, 't0'), true, 2, 0)).toBeUndefined();
        expect(await store.recordTaskFinished(key(run.runId, 't0'), true, 2, 1)).toBeUndefined();
        // One new outcome of two: not complete, whatever the old counts said.
        const last = await store.recordTaskFinished(key(run.runId, 't1'), false, 2, 1);
        expect(last).toEqual({ total: 4, finished: 4, succeeded: 3, clears: 1 });
      });

      it('keeps progress exact when the old outcome is counted after the clear', async () => {
        const { run } = await store.createRun(newRun(2));
        await store.transitionRun(dagId, run.runId, ['queued'], 'running', t0);
        // t0 failed; its event has not been handled yet when it is cleared.
        await store.recordTaskFinished(key(run.runId, 't1'), true, 2, 0);
        await store.clearTasks({
          ...plan(run.runId, 0),
          runStatus: 'running',
          tasks: [
            {
              taskId: 't0',
              expect: { status: 'pending', attempt: 0, generation: 0, counts: NO_COUNTS },
              status: 'pending',
              attempt: 0,
              newGeneration: true,
              generation: 1,
              counts: NO_COUNTS,
              counted: [],
              oldSucceeded: false,
            },
          ],
        });
        // The old failure, late: one extra "successful" task balances it.
        expect(await store.recordTaskFinished(key(run.runId, 't0'), false, 2, 0)).toBeUndefined();
        expect(await store.recordTaskFinished(key(run.runId, 't0'), true, 2, 1)).toEqual({
          total: 3,
          finished: 3,
          succeeded: 3,
          clears: 1,
        });
      });
    });

    describe('use counters', () => {
      it('counts at most max uses of a name, even to concurrent callers', async () => {
        const name = uid('fault');
        const got = await Promise.all(Array.from({ length: 8 }, () => store.countUse(name, 3)));
        expect(got.filter(Boolean)).toHaveLength(3);
        expect(await store.countUse(name, 3)).toBe(false);
        // Each name counts on its own; a higher limit makes room.
        expect(await store.countUse(`${name}-other`, 1)).toBe(true);
        expect(await store.countUse(`${name}-other`, 1)).toBe(false);
        expect(await store.countUse(name, 4)).toBe(true);
      });
    });

    describe('deadline queries', () => {
      it('finds an expired lease behind more waiting attempts than its limit', async () => {
        // Five attempts queued first, never claimed; then one claimed with a 60 s lease.
        for (let i = 0; i < 5; i++) await queuedTask();
        const { run } = await store.createRun(newRun(1, { logicalDate: later(7200) }));
        const k = key(run.runId);
        const queued = await store.transitionTask(k, queueTask(await task(k), later(5)));
        await store.transitionTask(k, claimTask(queued, 'dead', 60, later(6)));
        expect((await store.findExpiredLeases(later(66), 2)).map((t) => t.runId)).toEqual([]);
        expect((await store.findExpiredLeases(later(67), 2)).map((t) => t.runId)).toEqual([
          run.runId,
        ]);
        // The claimed attempt is not among the queued ones, whatever the limit.
        expect((await store.findQueuedBefore(later(9999), 100)).map((t) => t.runId)).not.toContain(
          run.runId,
        );
      });

      it('finds expired leases, stale queued attempts and due retries', async () => {
        const a = await queuedTask();
        const { run: r2 } = await store.createRun(newRun(1, { logicalDate: later(3600) }));
        const k2 = key(r2.runId);
        const queued2 = await store.transitionTask(k2, queueTask(await task(k2), later(10)));

        // a: claimed with a 60 s lease at t0+1 → expires at t0+61.
        await store.transitionTask(a.k, claimTask(a.ti, 'lease', 60, later(1)));
        expect((await store.findExpiredLeases(later(61), 10)).map((t) => t.runId)).toEqual([]);
        expect((await store.findExpiredLeases(later(62), 10)).map((t) => t.runId)).toEqual([
          a.k.runId,
        ]);

        // k2: queued at t0+10, never claimed.
        expect(await store.findQueuedBefore(later(10), 10)).toEqual([]);
        expect((await store.findQueuedBefore(later(11), 10)).map((t) => t.runId)).toEqual([
          k2.runId,
        ]);

        // k2 claimed, fails, waits to retry at t0+100: it leaves the queued index, joins the retry one.
        const running = await store.transitionTask(k2, claimTask(queued2, 'l2', 60, later(20)));
        expect((await store.findExpiredLeases(later(9999), 10)).length).toBe(2);
        const waiting = await store.transitionTask(
          k2,
          finishTask(running, { ok: false, error: 'x', retryAt: later(100) }, later(21)),
        );
        expect(await store.findQueuedBefore(later(1000), 10)).toEqual([]);
        expect(await store.findRetriesDue(later(100), 10)).toEqual([]);
        const due = await store.findRetriesDue(later(101), 10);
        expect(due).toEqual([waiting]);
        // Queued again, it leaves the retry index for the queued one.
        await store.transitionTask(k2, queueTask(waiting, later(200)));
        expect(await store.findRetriesDue(later(9999), 10)).toEqual([]);
        expect((await store.findQueuedBefore(later(201), 10)).map((t) => t.attempt)).toEqual([2]);
        expect((await store.findExpiredLeases(later(9999), 10)).map((t) => t.runId)).toEqual([
          a.k.runId,
        ]);
      });

      it('a heartbeat moves the lease deadline; a finish takes the task out', async () => {
        const { k, ti } = await queuedTask();
        const running = await store.transitionTask(k, claimTask(ti, 'l', 60, t0));
        await store.transitionTask(k, heartbeatTask(running, 60, later(50)));
        expect(await store.findExpiredLeases(later(100), 10)).toEqual([]);
        expect((await store.findExpiredLeases(later(111), 10)).length).toBe(1);
        const beat = await task(k);
        await store.transitionTask(k, finishTask(beat, { ok: true }, later(120)));
        expect(await store.findExpiredLeases(later(9999), 10)).toEqual([]);
      });

      it('returns at most limit of each kind', async () => {
        const { run } = await store.createRun(newRun(5));
        for (let i = 0; i < 5; i++) {
          const k = key(run.runId, `t${i}`);
          await store.transitionTask(k, queueTask(await task(k), later(i)));
        }
        expect(await store.findQueuedBefore(later(9999), 3)).toHaveLength(3);
        expect(await store.findQueuedBefore(later(9999), 10)).toHaveLength(5);
        expect(await store.findQueuedBefore(later(2), 10)).toHaveLength(2);
      });
    });

    describe('pools and gates', () => {
      const message = (k: TaskKey) => ({
        dagId: k.dagId,
        runId: k.runId,
        taskId: k.taskId,
        attempt: 1,
        dagVersion: 1,
      });

      /** A run of `n` tasks, every one queued (attempt 1) at `since` seconds + its index. */
      async function queuedTasks(n: number, since = 0) {
        const { run } = await store.createRun(newRun(n));
        const out: TaskInstanceRecord[] = [];
        for (let i = 0; i < n; i++) {
          const k = key(run.runId, `t${i}`);
          out.push(await store.transitionTask(k, queueTask(await task(k), later(since + i))));
        }
        return out;
      }

      it('creates, lists, resizes and deletes a pool', async () => {
        const pool = uid('pool');
        await store.putPool(pool, 3, t0);
        expect((await store.listPools()).find((p) => p.pool === pool)).toEqual({
          pool,
          slots: 3,
          used: 0,
          queued: 0,
        });
        expect(await store.putPool(pool, 1, t0)).toEqual({ pool, slots: 1, used: 0, queued: 0 });
        expect((await store.listPools()).find((p) => p.pool === pool)?.slots).toBe(1);
        await store.deletePool(pool);
        expect((await store.listPools()).find((p) => p.pool === pool)).toBeUndefined();
        expect(await rejection(store.deletePool(pool))).toBeInstanceOf(NotFoundError);
      });

      it('a gated claim takes a slot in the same write; a full gate writes nothing', async () => {
        const pool = uid('pool');
        await store.putPool(pool, 1, t0);
        const gates = [{ id: `pool:${pool}` }];
        const [a, b] = await queuedTasks(2);
        if (!a || !b) throw new Error('no tasks');
        const first = await store.claimGated(a, claimTask(a, 'la', 60, t0), gates);
        expect('claimed' in first && first.claimed).toMatchObject({
          status: 'running',
          gates: [`pool:${pool}`],
        });
        expect(await store.claimGated(b, claimTask(b, 'lb', 60, t0), gates)).toEqual({
          full: `pool:${pool}`,
        });
        expect(await task(b)).toMatchObject({ status: 'queued', leaseToken: null });
        expect((await store.gateView(`pool:${pool}`, 5)).used).toBe(1);
        // The end gives the slot back with the outcome, and only an end that says so.
        const running = await task(a);
        const stale = { ...running, gates: null };
        expect(
          await rejection(store.transitionTask(a, finishTask(stale, { ok: true }, later(1)))),
        ).toBeInstanceOf(ConflictError);
        const done = await store.transitionTask(a, finishTask(running, { ok: true }, later(1)));
        expect(done.status).toBe('success');
        expect(done.gates).toBeUndefined();
        expect((await store.gateView(`pool:${pool}`, 5)).used).toBe(0);
        const second = await store.claimGated(b, claimTask(b, 'lb', 60, t0), gates);
        expect('claimed' in second).toBe(true);
        // A running attempt in the reaper's view by its lease, as any claimed one.
        expect((await store.findExpiredLeases(later(9999), 10)).map((t) => t.taskId)).toContain(
          't1',
        );
      });

      it('a pool that does not exist has no room; a DAG cap is made by its first claim', async () => {
        const [a, b, c] = await queuedTasks(3);
        if (!a || !b || !c) throw new Error('no tasks');
        const missing = `pool:${uid('none')}`;
        expect(await store.claimGated(a, claimTask(a, 'l', 60, t0), [{ id: missing }])).toEqual({
          full: missing,
        });
        const cap = `dag:${dagId}`;
        const gates = [{ id: cap, slots: 2 }];
        expect('claimed' in (await store.claimGated(a, claimTask(a, 'la', 60, t0), gates))).toBe(
          true,
        );
        expect('claimed' in (await store.claimGated(b, claimTask(b, 'lb', 60, t0), gates))).toBe(
          true,
        );
        expect(await store.claimGated(c, claimTask(c, 'lc', 60, t0), gates)).toEqual({ full: cap });
        expect(await store.gateView(cap, 5)).toEqual({ slots: 2, used: 2, waiters: [] });
        // Cancelling a running attempt gives its slot back too.
        const ra = await task(a);
        await store.transitionTask(a, cancelTask(ra, later(1)));
        expect((await store.gateView(cap, 5)).used).toBe(1);
      });

      it('parks a queued attempt in readiness order, out of the reaper’s view, until claimed or cancelled', async () => {
        const pool = uid('pool');
        await store.putPool(pool, 0, t0);
        const gate = `pool:${pool}`;
        const [a, b, c] = await queuedTasks(3);
        if (!a || !b || !c) throw new Error('no tasks');
        // Parked in another order than they became ready: listed oldest first.
        for (const ti of [c, a, b]) {
          expect(await store.parkTask(ti, `${gate}@${ti.queuedAt}`, message(ti))).toBe(true);
        }
        const view = await store.gateView(gate, 10);
        expect(view.waiters.map((w) => w.message.taskId)).toEqual(['t0', 't1', 't2']);
        expect(view.waiters[0]?.message).toEqual(message(a));
        expect(await store.findQueuedBefore(later(9999), 10)).toEqual([]);
        // Waiting since before a time: the reaper's look at gates whose wake was lost.
        expect(await store.findWaitingGates(later(9999), 100)).toContain(gate);
        expect(await store.findWaitingGates(t0, 100)).not.toContain(gate);
        expect((await store.listPools()).find((p) => p.pool === pool)?.queued).toBe(3);
        expect(await rejection(store.deletePool(pool))).toBeInstanceOf(ConflictError);
        // Parked: a plain claim (from an old delivery) is refused; a gated one takes it out.
        const pa = await task(a);
        expect(pa.parked).toBe(`${gate}@${a.queuedAt}`);
        expect(
          await rejection(store.transitionTask(a, claimTask({ ...pa, parked: null }, 'x', 60, t0))),
        ).toBeInstanceOf(ConflictError);
        await store.putPool(pool, 1, t0);
        const claimed = await store.claimGated(a, claimTask(pa, 'la', 60, t0), [{ id: gate }]);
        expect('claimed' in claimed && claimed.claimed.parked).toBeUndefined();
        // Cancelled while waiting: it leaves the waiters.
        await store.transitionTask(b, cancelTask(await task(b), later(1)));
        expect((await store.gateView(gate, 10)).waiters.map((w) => w.message.taskId)).toEqual([
          't2',
        ]);
        // A park from a stale read (it moved on) writes nothing.
        expect(await store.parkTask(b, `${gate}@${b.queuedAt}`, message(b))).toBe(false);
      });

      it('lists a pool that tasks wait for but that does not exist, with no slots', async () => {
        const pool = uid('nopool');
        const [a, b] = await queuedTasks(2);
        if (!a || !b) throw new Error('no tasks');
        for (const ti of [a, b]) {
          expect(await store.parkTask(ti, `pool:${pool}@${ti.queuedAt}`, message(ti))).toBe(true);
        }
        expect((await store.listPools()).find((p) => p.pool === pool)).toEqual({
          pool,
          slots: null,
          used: 0,
          queued: 2,
        });
        // Created: listed once, with its slots.
        await store.putPool(pool, 1, t0);
        expect((await store.listPools()).filter((p) => p.pool === pool)).toEqual([
          { pool, slots: 1, used: 0, queued: 2 },
        ]);
      });

      it('finds every gate with old waiters, one busy with many waiters or not, each in turn', async () => {
        // Gates that share one shard of a store that shards its deadline index by gate (DynamoDB:
        // progressShard over 8 shards), with the busy gate's waiters the oldest: a look that
        // counted waiters, not gates, would see only the busy one.
        const busy = `pool:${uid('busy')}`;
        const others: string[] = [];
        while (others.length < 3) {
          const g = `pool:${uid('other')}`;
          if (progressShard(g, 8) === progressShard(busy, 8)) others.push(g);
        }
        // Long before any other test's waiters, so that only these are older than `before`.
        const old = -300 * 86_400;
        for (const ti of await queuedTasks(12, old)) {
          expect(await store.parkTask(ti, `${busy}@${ti.queuedAt}`, message(ti))).toBe(true);
        }
        for (const [i, gate] of others.entries()) {
          const [ti] = await queuedTasks(1, old + 100 + i);
          if (!ti) throw new Error('no task');
          expect(await store.parkTask(ti, `${gate}@${ti.queuedAt}`, message(ti))).toBe(true);
        }
        const before = later(old + 3600);
        expect((await store.findWaitingGates(before, 4)).sort()).toEqual([busy, ...others].sort());
        // Bounded by gates: as many as asked, each once.
        const two = await store.findWaitingGates(before, 2);
        expect(two.length).toBe(2);
        expect(new Set(two).size).toBe(2);
        // Each look goes on where the last stopped: one gate a look, every gate in turn (a
        // look that always began at the same place would find only the first, for ever).
        const seen = new Set<string>();
        for (let i = 0; i < 4; i++) {
          const found = await store.findWaitingGates(before, 1);
          expect(found.length).toBe(1);
          seen.add(found[0] as string);
        }
        expect([...seen].sort()).toEqual([busy, ...others].sort());
        // Waiting only since after `before`: not found.
        expect(await store.findWaitingGates(later(old + 50), 4)).toEqual([busy]);
      });

      it('50 concurrent gated claims on a 5-slot pool: exactly 5 claim it', async () => {
        const pool = uid('pool');
        await store.putPool(pool, 5, t0);
        const gates = [{ id: `pool:${pool}` }];
        const tis = await queuedTasks(50);
        const results = await Promise.allSettled(
          tis.map((ti, i) => store.claimGated(ti, claimTask(ti, `l${i}`, 60, t0), gates)),
        );
        const claimed = results.filter((r) => r.status === 'fulfilled' && 'claimed' in r.value);
        // A claim refused for a concurrent transaction (DynamoDB's TransactionConflict) is a
        // retryable error: never a claim past the slots.
        const refused = results.filter(
          (r) => r.status === 'rejected' && !(r.reason as { retryable?: boolean }).retryable,
        );
        expect(refused).toEqual([]);
        expect(claimed.length).toBe(5);
        const running = (await store.listTaskInstances(dagId, tis[0]?.runId ?? '')).filter(
          (t) => t.status === 'running',
        );
        expect(running.length).toBe(5);
        expect((await store.gateView(`pool:${pool}`, 1)).used).toBe(5);
      });
    });

    describe('dynamic mapping', () => {
      /** A run whose task t0 is running: the mapped task's attempt, about to expand. */
      async function mappedRun() {
        const { run } = await store.createRun(newRun(2));
        const k = key(run.runId);
        const queued = await store.transitionTask(k, queueTask(await task(k), t0));
        const parent = await store.transitionTask(k, claimTask(queued, 'lp', 60, t0));
        return { run, k, parent };
      }

      it('expands into queued instances once per attempt, keeping small items', async () => {
        const { run, k, parent } = await mappedRun();
        const items = Array.from({ length: 450 }, (_, i) => (i === 7 ? null : JSON.stringify(i)));
        const made = await store.expandMap(parent, items, later(1));
        expect(made).toHaveLength(450);
        expect(made[3]).toMatchObject({
          taskId: 't0[3]',
          status: 'queued',
          attempt: 1,
          mapAttempt: 1,
          mapLength: 450,
          mapItem: '3',
        });
        expect(made[7]?.mapItem).toBeUndefined();
        const listed = await store.listMapInstances(k);
        expect(listed.map((t) => t.taskId).slice(0, 3)).toEqual(['t0[0]', 't0[1]', 't0[2]']);
        expect(listed).toHaveLength(450);
        // Queued, so in the reaper's view of unsent attempts.
        const lost = await store.findQueuedBefore(later(2), 1000);
        expect(lost.filter((t) => t.runId === run.runId)).toHaveLength(450);
        // A repeat for the same attempt leaves what it wrote alone (here: an instance running).
        const i0 = await task(key(run.runId, 't0[0]'));
        await store.transitionTask(i0, claimTask(i0, 'li', 60, later(1)));
        await store.recordMapOutcome(key(run.runId, 't0[1]'), 1, 1, 450, 'success', 0);
        const again = await store.expandMap(parent, items, later(3));
        expect(again[0]).toMatchObject({ status: 'running', attempt: 1 });
        expect(await store.mapOutcomes(k, 1)).toEqual({ ...NO_COUNTS, success: 1 });
      });

      it('counts each instance once on its shard, and says when the shard is complete', async () => {
        const { run, k, parent } = await mappedRun();
        await store.expandMap(parent, ['1', '2', '3'], later(1));
        const at = (i: number) => key(run.runId, `t0[${i}]`);
        expect(await store.recordMapOutcome(at(0), 0, 1, 3, 'success', 0)).toBe(false);
        expect(await store.recordMapOutcome(at(0), 0, 1, 3, 'success', 0)).toBe(false);
        expect(await store.recordMapOutcome(at(1), 1, 1, 3, 'failed', 0)).toBe(false);
        expect(await store.recordMapOutcome(at(2), 2, 1, 3, 'cancelled', 0)).toBe(true);
        expect(await store.recordMapOutcome(at(2), 2, 1, 3, 'cancelled', 0)).toBe(true);
        expect(await store.mapOutcomes(k, 1)).toEqual({ ...NO_COUNTS, success: 1, failed: 2 });
        // The mapped task learns of complete shards, once each.
        const { mapTask } = await import('../../core/state/index.ts');
        const waiting = await store.transitionTask(k, mapTask(parent, 3, 1, undefined, later(2)));
        expect(waiting).toMatchObject({
          status: 'running',
          leaseToken: null,
          mapAttempt: 1,
          mapShards: 1,
          mapDone: 0,
        });
        expect(
          (await store.findExpiredLeases(later(3600), 100)).some((t) => t.taskId === 't0'),
        ).toBe(false);
        expect((await store.markMapShardDone(k, 1, 0))?.mapDone).toBe(1);
        expect((await store.markMapShardDone(k, 1, 0))?.mapDone).toBe(1);
        // An older attempt's shard does not count for this one.
        expect((await store.markMapShardDone(k, 0, 0))?.mapDone).toBe(1);
        expect(await store.markMapShardDone(key(run.runId, 'nope'), 1, 0)).toBeUndefined();
      });

      it('continues an earlier expansion’s instances with their next attempt', async () => {
        const { k, parent } = await mappedRun();
        await store.expandMap(parent, ['1', '2'], later(1));
        // The mapped task's next attempt (retried or cleared) expands again.
        const failed = await store.transitionTask(
          k,
          finishTask(parent, { ok: false, error: 'x', retryAt: later(2) }, later(2)),
        );
        const queued = await store.transitionTask(k, queueTask(failed, later(2)));
        const next = await store.transitionTask(k, claimTask(queued, 'lp2', 60, later(2)));
        // The attempt that lost its lease can no longer write instances: refused, none written.
        expect(await rejection(store.expandMap(parent, ['9', '9', '9'], later(2)))).toBeInstanceOf(
          ConflictError,
        );
        expect(await store.listMapInstances(k)).toHaveLength(2);
        const made = await store.expandMap(next, ['1'], later(2));
        expect(made[0]).toMatchObject({
          attempt: 2,
          retryBase: 1,
          generation: 1,
          mapAttempt: 2,
          mapLength: 1,
        });
        const all = await store.listMapInstances(k);
        expect(all.map((t) => [t.taskId, t.mapAttempt])).toEqual([
          ['t0[0]', 2],
          ['t0[1]', 1],
        ]);
      });

      it('clears one instance in one write: queued again, its count taken off, its shard not done', async () => {
        const { run, k, parent } = await mappedRun();
        await store.expandMap(parent, ['1', '2'], later(1));
        const { mapTask } = await import('../../core/state/index.ts');
        await store.transitionTask(k, mapTask(parent, 2, 1, undefined, later(1)));
        const ik = key(run.runId, 't0[0]');
        const i0 = await task(ik);
        const ran = await store.transitionTask(ik, claimTask(i0, 'w', 60, later(2)));
        const done = await store.transitionTask(ik, finishTask(ran, { ok: true }, later(3)));
        await store.recordMapOutcome(ik, 0, 1, 2, 'success', 0);
        expect(await store.mapOutcomeCounted(ik, 0, 1, 2, 0)).toBe(true);
        expect(await store.mapOutcomeCounted(ik, 1, 1, 2, 0)).toBe(false);
        await store.markMapShardDone(k, 1, 0);
        const plan: ClearPlan = {
          dagId,
          runId: run.runId,
          taskCount: 2,
          runStatus: 'queued',
          at: later(4),
          tasks: [],
          instance: {
            taskId: 't0[0]',
            parentTaskId: 't0',
            expect: { status: 'success', attempt: done.attempt, generation: 0 },
            attempt: 2,
            generation: 1,
            mapAttempt: 1,
            mapLength: 2,
            mapIndex: 0,
            counted: 'success',
            waiting: true,
          },
        };
        await store.clearTasks(plan);
        expect(await task(ik)).toMatchObject({
          status: 'queued',
          attempt: 2,
          generation: 1,
          retryBase: 1,
        });
        expect(await store.mapOutcomes(k, 1)).toEqual(NO_COUNTS);
        expect((await task(k)).mapDone).toBe(0);
        // The old outcome's late event counts nothing; the new one counts.
        expect(await store.recordMapOutcome(ik, 0, 1, 2, 'success', 0)).toBe(false);
        expect(await store.mapOutcomes(k, 1)).toEqual(NO_COUNTS);
        await store.recordMapOutcome(ik, 0, 1, 2, 'success', 1);
        expect(await store.mapOutcomes(k, 1)).toEqual({ ...NO_COUNTS, success: 1 });
        // The same clear again: the instance moved on, so nothing changes.
        expect(await rejection(store.clearTasks({ ...plan, runStatus: 'running' }))).toBeInstanceOf(
          ConflictError,
        );
        expect(await store.mapOutcomes(k, 1)).toEqual({ ...NO_COUNTS, success: 1 });
        expect((await task(ik)).attempt).toBe(2);
      });

      it('counts a mapped upstream task’s instances downstream in one write, once', async () => {
        const { run } = await store.createRun(newRun(2));
        const d = key(run.runId, 't1');
        const weight = { counts: { ...NO_COUNTS, success: 3, failed: 1 }, extraUpstream: 3 };
        const first = await store.recordUpstreamOutcome(d, 't0', 'failed', 0, { weight });
        expect(first.counted).toBe(true);
        expect(first.task).toMatchObject({ upstreamCount: 4, status: 'pending' });
        expect(first.task.counts).toEqual({ ...NO_COUNTS, success: 3, failed: 1 });
        const again = await store.recordUpstreamOutcome(d, 't0', 'failed', 0, { weight });
        expect(again.counted).toBe(false);
        expect((await task(d)).counts).toEqual({ ...NO_COUNTS, success: 3, failed: 1 });
        expect((await task(d)).upstreamCount).toBe(4);
      });
    });
  });
}
