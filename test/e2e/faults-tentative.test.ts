import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { endOf, expectOneOutcomePerAttempt, faultyRun, linesOfRun, noop } from './fault-support.ts';

/**
 * A worker sends a success and the claim of the task it continues into in one request
 * (app/tasks.ts, claimAhead), so the claim is tentative: it stands only if the success landed.
 * Here the success is refused: the worker stalled past its lease before its outcome, and the
 * reaper took the attempt back, to retry it after 30 s. The claim of b that went with the refused
 * success landed all the same; b must run once, and only after a has succeeded.
 *
 * The test deploy's worker has 60 s and a 30 s lease: after a 40 s stall, a task whose whole
 * timeout fits in what is left (less the worker's 15 s margin) is still continued.
 */
describe('a refused success sent with its continuation’s claim', () => {
  const dag = [
    noop('a', { retries: 1, retryDelaySeconds: 30, timeoutSeconds: 50 }),
    noop('b', { dependsOn: ['a'], retries: 1, retryDelaySeconds: 0, timeoutSeconds: 2 }),
  ];
  const stall = {
    point: 'worker.before-outcome',
    taskId: 'a',
    attempt: 1,
    action: 'stall',
    stallSeconds: 40,
  } as const;

  /** The workers' reports of finished attempts of the run, once `n` of them are in. */
  const finished = (runId: string, since: number, n: number) =>
    waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter(
          (l) => l.message === 'attempt finished',
        ),
      (lines) => lines.length >= n,
      { timeoutMs: 60_000, intervalMs: 1000, what: `the workers to report ${n} attempts` },
    );

  it.concurrent('its worker withdraws the claim: b runs once, after a’s retry succeeded', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(dag, [stall]);
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    // b's claim was withdrawn, not failed: its one attempt is the one a's retry made.
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
    const lines = await finished(runId, since, 3);
    expect(lines.map((l) => [l.taskId, l.attempt, l.outcome]).sort()).toEqual([
      ['a', 1, 'lease_lost'],
      ['a', 2, 'success'],
      ['b', 1, 'success'],
    ]);
  });

  it.concurrent('its worker dies before withdrawing it: a’s retry confirms it, the reaper retries b, which runs once', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(dag, [
      stall,
      { point: 'worker.before-withdraw', taskId: 'a', attempt: 1, action: 'crash' },
    ]);
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    // b's first attempt was the dead worker's claim, which stood once a succeeded: its lease ran
    // out, and the reaper failed it, to retry. It never ran.
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 2],
    ]);
    await expectOneOutcomePerAttempt(run);
    // a's first message came back after the crash: its claim refused, and nothing to advance.
    const lines = await finished(runId, since, 3);
    expect(lines.map((l) => [l.taskId, l.attempt, l.outcome]).sort()).toEqual([
      ['a', 1, 'not_claimed'],
      ['a', 2, 'success'],
      ['b', 2, 'success'],
    ]);
  });
});
