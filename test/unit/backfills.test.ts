import { describe, expect, it } from 'vitest';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { backfillView, createBackfill } from '../../app/backfills.ts';
import { deleteDag, registerDag } from '../../app/dags.ts';
import { reap } from '../../app/reaper.ts';
import { triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import { NotFoundError, ValidationError } from '../../core/errors.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { scheduledRunId } from '../../core/state/index.ts';

/**
 * Backfills (app/backfills.ts, DESIGN.md section 11) on the in-memory ports: the runs of a
 * range's scheduled times, created a chunk at a time, existing ones left alone. The API and the
 * CLI run them on the emulator in test/e2e/backfill.test.ts.
 */
const T0 = new Date('2026-01-01T00:00:00Z');
const hour = (h: number) => new Date(T0.getTime() + h * 3600_000);

async function setup(doc: object = {}) {
  const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
  const deps = memoryDeps({ clock: clock.now });
  // Its own id: DAG versions are cached by id and version in the process (app/dags.ts).
  const dagId = `hourly_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(
    deps,
    JSON.stringify({
      dagId,
      schedule: { cron: '0 * * * *' },
      tasks: [{ taskId: 't', operator: 'noop' }],
      ...doc,
    }),
  );
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const runIds = async () =>
    (await deps.store.listRuns(dagId, { limit: 1000 })).items.map((x) => x.runId).sort();
  const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
  const drain = async () => {
    for (let i = 0; i < 5000 && deps.dispatcher.waiting.length > 0; i++) {
      await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
    }
  };
  return { deps, dagId, clock, runIds, drain };
}

describe('a backfill', () => {
  it('creates the run of each scheduled time in [from, to], leaves existing ones alone, and repeats as a no-op', async () => {
    const { deps, dagId, runIds, drain } = await setup();
    // A run exists already at the third hour.
    await triggerRun(deps, { dagId, scheduledTime: hour(2) });
    const b = await createBackfill(deps, dagId, { from: hour(0), to: hour(5) });
    expect(b).toMatchObject({ runs: 6, created: 5, cursor: null });
    expect(await runIds()).toEqual([0, 1, 2, 3, 4, 5].map((h) => scheduledRunId(hour(h))));
    const again = await createBackfill(deps, dagId, { from: hour(0), to: hour(5) });
    expect(again).toMatchObject({ runs: 6, created: 0, cursor: null });
    expect(await runIds()).toHaveLength(6);

    expect(await backfillView(deps, dagId, b.backfillId)).toMatchObject({
      runs: 6,
      done: 0,
      status: 'running',
    });
    await drain();
    expect(await backfillView(deps, dagId, b.backfillId)).toMatchObject({
      runs: 6,
      created: 5,
      done: 6,
      status: 'success',
    });
  });

  it('includes both ends, and a range between two scheduled times holds none', async () => {
    const { deps, dagId } = await setup();
    expect((await createBackfill(deps, dagId, { from: hour(1), to: hour(1) })).runs).toBe(1);
    const none = await createBackfill(deps, dagId, {
      from: new Date(hour(1).getTime() + 1),
      to: new Date(hour(2).getTime() - 1),
    });
    expect(none).toMatchObject({ runs: 0, cursor: null });
    expect((await backfillView(deps, dagId, none.backfillId)).status).toBe('success');
  });

  it('creates a large range a chunk at a time, the reaper going on with it, maxActiveRuns holding the rest queued', async () => {
    const { deps, dagId, runIds } = await setup({ maxActiveRuns: 3 });
    const b = await createBackfill(deps, dagId, { from: hour(0), to: hour(239) });
    expect(b.runs).toBe(240);
    expect(b.created).toBe(25);
    expect(b.cursor).toBe(hour(25).toISOString());
    const report = await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect(report.backfillRunsCreated).toBe(200);
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    const after = await deps.store.getBackfill(dagId, b.backfillId);
    expect(after).toMatchObject({ created: 240, cursor: null });
    expect(await runIds()).toHaveLength(240);
    const runs = (await deps.store.listRuns(dagId, { limit: 1000 })).items;
    expect(runs.filter((r) => r.status === 'running')).toHaveLength(3);
    // The oldest run first: the running ones are the first three hours.
    expect(
      runs
        .filter((r) => r.status === 'running')
        .map((r) => r.logicalDate)
        .sort(),
    ).toEqual([0, 1, 2].map((h) => hour(h).toISOString()));
    // Nothing left for the reaper.
    expect(await deps.store.listCreatingBackfills(10)).toEqual([]);
  });

  it('picks up after a crash between creating runs and moving its cursor', async () => {
    const { deps, dagId, runIds } = await setup();
    const b = await createBackfill(deps, dagId, { from: hour(0), to: hour(59) });
    // A reaper pass that created its runs and died before moving the cursor: the runs exist.
    for (let h = 25; h < 40; h++) await triggerRun(deps, { dagId, scheduledTime: hour(h) });
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect(await deps.store.getBackfill(dagId, b.backfillId)).toMatchObject({
      created: 25 + 20,
      cursor: null,
    });
    expect(await runIds()).toHaveLength(60);
  });

  it('refuses a range that ends before it starts, or holds too many times, naming the field', async () => {
    const { deps, dagId } = await setup();
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: unknown) => (e instanceof ValidationError ? e.issues : e),
      );
    expect(await refusal(createBackfill(deps, dagId, { from: hour(5), to: hour(1) }))).toEqual([
      { path: '$.to', message: expect.stringContaining('earlier than "from"') },
    ]);
    expect(
      await refusal(createBackfill(deps, dagId, { from: hour(0), to: hour(100) }, 100)),
    ).toEqual([
      { path: '$.to', message: expect.stringContaining('more than 100 scheduled times') },
    ]);
    expect((await deps.store.listRuns(dagId)).items).toEqual([]);
  });

  it('keeps to the schedule it was asked under, counts only its own runs, and says when it was stopped', async () => {
    const { deps, dagId, drain } = await setup();
    // Hourly runs of the first day exist and have ended.
    await createBackfill(deps, dagId, { from: hour(0), to: hour(23) });
    await drain();
    const b = await createBackfill(deps, dagId, { from: hour(24), to: hour(83) });
    expect(b).toMatchObject({ runs: 60, created: 25 });
    // The schedule becomes daily: the backfill still creates its hourly times.
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        schedule: { cron: '0 6 * * *' },
        tasks: [{ taskId: 't', operator: 'noop' }],
      }),
    );
    expect(r.ok).toBe(true);
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect(await deps.store.getBackfill(dagId, b.backfillId)).toMatchObject({
      created: 60,
      cursor: null,
    });
    // A daily backfill over the first day: one time of its own, not the 24 hourly runs there.
    const daily = await createBackfill(deps, dagId, { from: hour(0), to: hour(23) });
    expect(daily).toMatchObject({ runs: 1, created: 0 });
    expect(await backfillView(deps, dagId, daily.backfillId)).toMatchObject({
      done: 1,
      status: 'success',
    });
    expect(await backfillView(deps, dagId, b.backfillId)).toMatchObject({ status: 'running' });

    // Deleted mid-backfill: the reaper stops it, and the view says so.
    const big = await createBackfill(deps, dagId, { from: hour(100), to: hour(100 + 24 * 40) });
    expect(big.cursor).not.toBeNull();
    await deleteDag(deps, dagId);
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect((await backfillView(deps, dagId, big.backfillId)).status).toBe('stopped');
  });

  it('refuses a range that reaches into the future', async () => {
    const { deps, dagId, clock } = await setup();
    await expect(
      createBackfill(deps, dagId, { from: hour(0), to: new Date(clock.now().getTime() + 1000) }),
    ).rejects.toMatchObject({
      issues: [{ path: '$.to', message: expect.stringContaining('future') }],
    });
  });

  it('refuses a DAG without a schedule, and one that does not exist', async () => {
    const { deps, dagId } = await setup({ schedule: undefined });
    await expect(
      createBackfill(deps, dagId, { from: hour(0), to: hour(1) }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      createBackfill(deps, 'nope', { from: hour(0), to: hour(1) }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});
