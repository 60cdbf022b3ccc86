import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import {
  endOf,
  expectOneOutcomePerAttempt,
  faultyRun,
  linesOfRun,
  noop,
  view,
} from './fault-support.ts';
import { api, type RunView, uniqueDagId } from './stack.ts';

/**
 * Faults injected on purpose into the deployed stack: crashes, repeats and stalls at the named
 * points of core/faults.ts (fault-support.ts says what each scenario checks).
 */

describe('crashes', () => {
  it('after the claim: the lease expires, the reaper retries, the run succeeds once', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 }), noop('b', { dependsOn: ['a'] })],
      [{ point: 'worker.after-claim', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after the operator ran, before its outcome: retried after the lease, no double success', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 })],
      [{ point: 'worker.before-outcome', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([['a', 'success', 2]]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after a success was written, before readiness: its message comes back and advances it, nothing reruns', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'worker.after-outcome', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('between queuing downstream tasks and sending them: the message that comes back sends them', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] }), noop('c', { dependsOn: ['a'] })],
      [{ point: 'advance.before-dispatch', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after a failure was written, before its retry timer was sent: the reaper queues the retry', async () => {
    const { dagId, runId } = await faultyRun(
      [
        noop('a', { retries: 1, retryDelaySeconds: 0, config: { failAttempts: 1 } }),
        noop('b', { dependsOn: ['a'] }),
      ],
      // The timer is lost with the process; the message comes back only after the visibility
      // timeout (16 minutes; 1 in the test deploy), and then finds the attempt already failed.
      [{ point: 'worker.after-outcome', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
  });

  it('before the run end is written: the message that comes back ends the run', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'advance.before-run-end', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    await expectOneOutcomePerAttempt(run);
  });

  it('a mapped task’s worker dies after expanding it: the reaper retries, the retry expands again, once per attempt', async () => {
    const { dagId, runId } = await faultyRun(
      [
        noop('each', { mapOver: [1, 2, 3], retries: 1, retryDelaySeconds: 0 }),
        noop('after', { dependsOn: ['each'] }),
      ],
      [{ point: 'mapping.after-expand', taskId: 'each', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    const tasks = run.tasks as (RunView['tasks'][number] & { mapIndex?: number })[];
    // The retry (attempt 2) expanded again: its instances are on their attempt 2 (attempt 1's
    // ran when attempt 1 sent them, and counted for nothing).
    expect(tasks.map((t) => [t.taskId, t.mapIndex, t.status, t.attempt])).toEqual([
      ['after', undefined, 'success', 1],
      ['each', undefined, 'success', 2],
      ['each', 0, 'success', 2],
      ['each', 1, 'success', 2],
      ['each', 2, 'success', 2],
    ]);
    // Each attempt has at most one outcome. An instance's attempt 1 may never have run: the
    // retry's expansion can replace it before a worker takes its message, and then that
    // message claims nothing.
    for (const t of tasks) {
      const one = t.mapIndex === undefined ? '' : `&mapIndex=${t.mapIndex}`;
      for (let attempt = 1; attempt <= t.attempt; attempt++) {
        const log = await api.request(
          'GET',
          `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/${t.taskId}/logs?attempt=${attempt}${one}`,
        );
        const superseded = t.mapIndex !== undefined && attempt === 1;
        if (superseded && log.status === 404) continue;
        expect(log.status, `log of ${t.taskId}${one} attempt ${attempt}`).toBe(200);
        const outcomes = log.text.split('\n').filter((l) => / (success|failed)$/.test(l));
        expect(outcomes.length).toBeLessThanOrEqual(1);
      }
    }
    // The mapped task's attempt 1: the reaper's account of the worker that died.
    const first = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/each/logs?attempt=1`,
    );
    expect(first.text).toMatch(/failed by the reaper, retry at/);
  });

  it('an instance’s success is written, then its worker dies: its message comes back and counts it, once', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('each', { mapOver: [1, 2, 3] }), noop('after', { dependsOn: ['each'] })],
      [{ point: 'worker.after-outcome', taskId: 'each[1]', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1, 1, 1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('between creating a run and starting it: the repeated trigger starts it, once', async () => {
    const dagId = uniqueDagId('e2e_fault');
    await api.request('POST', '/v1/dags', {
      dagId,
      params: { airlessFaults: [{ point: 'trigger.after-create', action: 'crash' }] },
      tasks: [noop('a')],
    });
    const first = await api.request('POST', `/v1/dags/${dagId}/runs`, { idempotencyKey: 'k1' });
    expect(first.status).toBe(500);
    const again = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
      idempotencyKey: 'k1',
    });
    expect(again.status).toBe(200);
    const run = await endOf(dagId, again.body.runId);
    expect(run.status).toBe('success');
    const runs = await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs`);
    expect(runs.body.runs).toHaveLength(1);
  });
});

describe('repeats', () => {
  it('a task message delivered again after its attempt ended changes nothing', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [
        { point: 'worker.after-outcome', taskId: 'a', action: 'repeat' },
        { point: 'advance.before-dispatch', taskId: 'a', action: 'repeat' },
      ],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1]);
    await expectOneOutcomePerAttempt(run);
  });
});

describe('stalls', () => {
  it('a worker stalled past its lease before its outcome: reaped, retried, its late outcome refused', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 }), noop('b', { dependsOn: ['a'] })],
      [
        {
          point: 'worker.before-outcome',
          taskId: 'a',
          attempt: 1,
          action: 'stall',
          stallSeconds: 45,
        },
      ],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    // The stalled worker wakes after the reaper failed its attempt: its outcome is refused.
    const late = await waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter(
          (l) => l.message === 'attempt finished' && l.taskId === 'a' && l.attempt === 1,
        ),
      (lines) => lines.length > 0,
      { timeoutMs: 90_000, intervalMs: 2000, what: 'the stalled worker to finish' },
    );
    expect(late.map((l) => l.outcome)).toEqual(['lease_lost']);
    // The reaper's word is the last in the attempt's log.
    const log = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/a/logs?attempt=1`,
    );
    expect(log.text.trim().split('\n').at(-1)).toMatch(/failed by the reaper, retry at/);
    const again = await view(dagId, runId);
    expect(again.tasks.map((t) => t.attempt)).toEqual([2, 1]);
  });

  it('a worker stalled after its claim keeps its lease by heartbeat: nothing is reaped', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 })],
      [{ point: 'worker.after-claim', taskId: 'a', action: 'stall', stallSeconds: 40 }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([['a', 'success', 1]]);
    await expectOneOutcomePerAttempt(run);
  });
});

describe('continuations: a worker runs a chain’s next task itself', () => {
  // The test deploy's Lambda worker has 60 s: a task whose whole timeout fits in what is left
  // (here 30 s) is continued; its message is never sent.
  const short = { timeoutSeconds: 30 };

  it('runs each next task in the same worker, once, with no message of its own', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(
      [
        noop('a', short),
        noop('b', { ...short, dependsOn: ['a'] }),
        noop('c', { ...short, dependsOn: ['b'] }),
      ],
      [],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 1],
      ['b', 'success', 1],
      ['c', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
    const finished = await waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter(
          (l) => l.message === 'attempt finished',
        ),
      (lines) => lines.length >= 3,
      { timeoutMs: 30_000, intervalMs: 1000, what: 'the worker to report three attempts' },
    );
    // a came from the queue; b and c were continued by the worker that finished their upstream.
    expect(finished.map((l) => [l.taskId, l.outcome, l.continued === true]).sort()).toEqual([
      ['a', 'success', false],
      ['b', 'success', true],
      ['c', 'success', true],
    ]);
  });

  // A continued task is in no lease index until it heartbeats: the return of a's message (after
  // the queue's visibility timeout) finds b under its expired lease and fails it, to retry.
  it('a worker that dies in a continued task: its first message comes back, reaps it, retried, nothing doubled', async () => {
    const { dagId, runId } = await faultyRun(
      [
        noop('a', short),
        noop('b', { ...short, dependsOn: ['a'], retries: 1, retryDelaySeconds: 0 }),
        noop('c', { ...short, dependsOn: ['b'] }),
      ],
      [{ point: 'worker.after-claim', taskId: 'b', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 1],
      ['b', 'success', 2],
      ['c', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
  });
});
