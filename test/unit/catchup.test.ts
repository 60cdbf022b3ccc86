import { describe, expect, it } from 'vitest';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { catchUp } from '../../app/catchup.ts';
import { registerDag } from '../../app/dags.ts';
import { reap } from '../../app/reaper.ts';

/**
 * Catchup (app/catchup.ts, DESIGN.md section 11), on registering and unpausing a DAG, on the
 * in-memory ports. test/e2e/backfill.test.ts runs it on the emulator.
 */
const NOW = new Date('2026-06-01T10:30:00Z');

async function setup(schedule: object, extra: object = {}) {
  const clock = new ManualClock(NOW);
  const deps = memoryDeps({ clock: clock.now });
  const dagId = `catchup_${Math.random().toString(36).slice(2, 10)}`;
  const register = async (more: object = {}) => {
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        schedule: { cron: '0 * * * *', ...schedule },
        tasks: [{ taskId: 't', operator: 'noop' }],
        ...extra,
        ...more,
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
  };
  const logicalDates = async () =>
    (await deps.store.listRuns(dagId, { limit: 1000 })).items
      .map((r) => r.logicalDate.slice(11, 16))
      .sort();
  return { deps, clock, dagId, register, logicalDates };
}

describe('catchup', () => {
  it('on: registering creates the run of every scheduled time since startDate, both ends', async () => {
    const { register, logicalDates } = await setup({
      catchup: true,
      startDate: '2026-06-01T00:00:00Z',
    });
    await register();
    expect(await logicalDates()).toEqual(
      ['00', '01', '02', '03', '04', '05', '06', '07', '08', '09', '10'].map((h) => `${h}:00`),
    );
  });

  it('off: only the latest missed time runs', async () => {
    const { register, logicalDates } = await setup({ startDate: '2026-06-01T00:00:00Z' });
    await register();
    expect(await logicalDates()).toEqual(['10:00']);
  });

  it('has nothing to catch up without a start date or an earlier scheduled run', async () => {
    const { register, logicalDates } = await setup({ catchup: true });
    await register();
    expect(await logicalDates()).toEqual([]);
  });

  it('unpausing catches up what the pause missed: all of it with catchup, only the latest without', async () => {
    for (const [catchup, expected] of [
      [true, ['11:00', '12:00', '13:00', '14:00', '15:00']],
      [false, ['15:00']],
    ] as const) {
      const { deps, clock, dagId, register, logicalDates } = await setup({
        catchup,
        startDate: '2026-06-01T10:00:00Z',
      });
      await register();
      expect(await logicalDates()).toEqual(['10:00']);
      await deps.store.setDagPaused(dagId, true, clock.now());
      clock.advance(5 * 3600);
      // Paused: nothing.
      expect(await catchUp(deps, dagId)).toEqual({ missed: 0 });
      await deps.store.setDagPaused(dagId, false, clock.now());
      await catchUp(deps, dagId);
      expect(await logicalDates()).toEqual(['10:00', ...expected]);
      // Again: every run is found by its id; nothing new.
      await catchUp(deps, dagId);
      expect(await logicalDates()).toHaveLength(1 + expected.length);
    }
  });

  it('a new version catches up only what has no run yet', async () => {
    const { clock, register, logicalDates } = await setup({
      catchup: true,
      startDate: '2026-06-01T08:00:00Z',
    });
    await register();
    expect(await logicalDates()).toEqual(['08:00', '09:00', '10:00']);
    clock.advance(2 * 3600);
    await register({ description: 'version 2' });
    expect(await logicalDates()).toEqual(['08:00', '09:00', '10:00', '11:00', '12:00']);
  });

  it('catches up only the latest times past its limit, created a chunk at a time, maxActiveRuns holding them', async () => {
    const { deps, clock, dagId, register } = await setup(
      { cron: '*/5 * * * *', catchup: true, startDate: '2026-06-02T00:00:00Z' },
      { maxActiveRuns: 2 },
    );
    await register(); // the start date is ahead: nothing yet
    expect((await deps.store.listRuns(dagId)).items).toEqual([]);
    // A year later, every five minutes: far more than a limit of 60.
    clock.advance(365 * 86_400);
    await deps.store.setDagPaused(dagId, true, clock.now());
    await deps.store.setDagPaused(dagId, false, clock.now());
    const caught = await catchUp(deps, dagId, 60);
    expect(caught.missed).toBe(60);
    // 25 in the call; the reaper creates the rest.
    expect((await deps.store.listRuns(dagId, { limit: 1000 })).items).toHaveLength(25);
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    const runs = (await deps.store.listRuns(dagId, { limit: 1000 })).items;
    expect(runs).toHaveLength(60);
    const dates = runs.map((r) => r.logicalDate).sort();
    // The latest 60: the last one is the latest scheduled time at or before now.
    expect(dates.at(-1)).toBe('2027-06-01T10:30:00.000Z');
    expect(dates[0]).toBe('2027-06-01T05:35:00.000Z');
    expect(runs.filter((r) => r.status === 'running')).toHaveLength(2);
  });
});
