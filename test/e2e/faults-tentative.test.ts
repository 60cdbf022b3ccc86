import { describe, expect, it } from 'vitest';
import type { FaultRule } from '../../core/faults.ts';
import { waitFor } from '../poll.ts';
import { endOf, expectOneOutcomePerAttempt, faultyRun, linesOfRun, noop } from './fault-support.ts';

/**
 * A worker sends a success and the claim of the task it continues into in one request
 * (app/tasks.ts, claimAhead), so the claim is tentative: it stands only if the success landed.
 * Here the success is refused: the worker stalled past its lease before its outcome, and the
 * reaper took the attempt back, to retry it after 30 s. The claim of b that went with the refused
 * success landed all the same; b must run once, and only after a has succeeded.
 *
 * The test deploy's worker has 60 s and a 30 s lease. The stall (38 s) outlasts the lease by
 * more than the reaper passes' interval (endOf runs them every 2 s), and leaves the worker
 * enough time to continue into b (its 1 s timeout, plus the worker's 15 s margin): each scenario
 * checks that the claim was made and withdrawn, so a slower emulator fails it rather than
 * passing it by another path.
 */
describe('a refused success sent with its continuation’s claim', () => {
  const dag = [
    noop('a', { retries: 1, retryDelaySeconds: 30, timeoutSeconds: 50 }),
    noop('b', { dependsOn: ['a'], timeoutSeconds: 1 }),
  ];
  const stall = {
    point: 'worker.before-outcome',
    taskId: 'a',
    attempt: 1,
    action: 'stall',
    stallSeconds: 38,
  } as const;

  /** The worker's lines with this message about the run, once `n` of them are in. */
  const lines = (runId: string, since: number, message: string, n: number) =>
    waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter((l) => l.message === message),
      (found) => found.length >= n,
      { timeoutMs: 60_000, intervalMs: 1000, what: `${n} worker lines "${message}"` },
    );
  const outcomes = async (runId: string, since: number, n: number) =>
    (await lines(runId, since, 'attempt finished', n))
      .map((l) => [l.taskId, l.attempt, l.outcome])
      .sort();

  /**
   * Runs the DAG with these faults and checks what both scenarios end in: the run succeeds with
   * a at its second attempt and b at its first (b has no retries: no claim cost it an attempt),
   * one outcome per attempt, a's first attempt as reported `first`, and b's claim, made with a's
   * refused success, withdrawn once.
   */
  async function refused(faults: FaultRule[], first: string) {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(dag, [stall, ...faults]);
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
    expect(await outcomes(runId, since, 3)).toEqual([
      ['a', 1, first],
      ['a', 2, 'success'],
      ['b', 1, 'success'],
    ]);
    const settled = await lines(runId, since, 'tentative claim settled', 1);
    expect(settled.map((l) => [l.taskId, l.how, l.upstreamAttempt])).toEqual([
      ['b', 'withdraw', 1],
    ]);
  }

  it.concurrent('its worker withdraws the claim: b runs once, after a’s retry succeeded', async () => {
    // The stalled worker's success is refused, and it withdraws the claim itself.
    await refused([], 'lease_lost');
  });

  it.concurrent('its worker dies before withdrawing it: a’s retry withdraws it, and b runs once', async () => {
    // a's first worker dies (no outcome of its own); its message comes back, its claim refused.
    // The walk of a's retry finds the claim of its first attempt, whose success never landed.
    await refused(
      [{ point: 'worker.before-withdraw', taskId: 'a', attempt: 1, action: 'crash' }],
      'not_claimed',
    );
  });
});
