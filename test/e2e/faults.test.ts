import { InvokeCommand, LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import { describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import type { FaultRule } from '../../core/faults.ts';
import { waitFor } from '../poll.ts';
import { api, type RunView, uniqueDagId } from './stack.ts';

/**
 * Faults injected on purpose into the deployed stack (the test deploy's emulator-only switch,
 * lib/airless-function.ts, and a 30-second lease): crashes, stalls and repeats at the named
 * points of core/faults.ts. For each, the run must end as it would have without the fault, each
 * attempt with one outcome and one log, and no task may succeed twice.
 */

const lambda = new LambdaClient(clientConfig());
let reaperName: string | undefined;

/** One pass of the stack's reaper, now (its rule fires every minute; tests do not wait for it). */
async function reap(): Promise<void> {
  if (!reaperName) {
    const fns = (await lambda.send(new ListFunctionsCommand({}))).Functions ?? [];
    reaperName = fns.find((f) => f.FunctionName?.includes('ReaperFunction'))?.FunctionName;
  }
  const res = await lambda.send(new InvokeCommand({ FunctionName: reaperName }));
  expect(res.FunctionError).toBeUndefined();
}

const noop = (taskId: string, extra: object = {}) => ({ taskId, operator: 'noop', ...extra });

async function faultyRun(
  tasks: object[],
  faults: FaultRule[],
  trigger: object = {},
): Promise<{ dagId: string; runId: string }> {
  const dagId = uniqueDagId('e2e_fault');
  const created = await api.request('POST', '/v1/dags', {
    dagId,
    params: { airlessFaults: faults },
    tasks,
  });
  expect(created.status).toBe(201);
  const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, trigger);
  return { dagId, runId: r.body.runId };
}

const view = async (dagId: string, runId: string) =>
  (await api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`)).body;

/**
 * Waits for the run to end, running reaper passes meanwhile (two at once, to race them), within
 * the lease plus a reaper period and some slack for the emulator.
 */
async function endOf(dagId: string, runId: string, reaping = false): Promise<RunView> {
  return waitFor(
    async () => {
      if (reaping) await Promise.all([reap(), reap()]);
      return view(dagId, runId);
    },
    (v) => ['success', 'failed', 'cancelled'].includes(v.status),
    { timeoutMs: 150_000, intervalMs: 2000, what: `faulted run ${runId} to end` },
  );
}

/** Every attempt of every task has exactly one log, ending in exactly one outcome line. */
async function expectOneOutcomePerAttempt(run: RunView) {
  for (const t of run.tasks) {
    for (let attempt = 1; attempt <= t.attempt; attempt++) {
      const log = await api.request(
        'GET',
        `/v1/dags/${run.dagId}/runs/${encodeURIComponent(run.runId)}/tasks/${t.taskId}/logs?attempt=${attempt}`,
      );
      expect(log.status, `log of ${t.taskId} attempt ${attempt}`).toBe(200);
      const outcomes = log.text.split('\n').filter((l) => / (success|failed)$/.test(l));
      expect(outcomes.length, `outcomes in ${t.taskId} attempt ${attempt}`).toBeLessThanOrEqual(1);
    }
  }
}

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

  it('after the outcome was written: readiness goes on from the table, nothing reruns', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'worker.after-outcome', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('between queuing downstream tasks and sending them: the retried event sends them', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] }), noop('c', { dependsOn: ['a'] })],
      [{ point: 'advance.before-dispatch', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('before the run end is written: the retried event ends the run', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'advance.before-run-end', action: 'crash', times: 2 }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
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

describe('a DAG deleted while its run is active', () => {
  it('lets the run end (its version is kept), and starts nothing new', async () => {
    const dagId = uniqueDagId('e2e_fault');
    await api.request('POST', '/v1/dags', {
      dagId,
      maxActiveRuns: 1,
      tasks: [noop('a', { config: { sleepSeconds: 2 } }), noop('b', { dependsOn: ['a'] })],
    });
    const first = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
    const second = await api.request<{ runId: string; status: string }>(
      'POST',
      `/v1/dags/${dagId}/runs`,
      {},
    );
    expect(second.body.status).toBe('queued');
    expect((await api.request('DELETE', `/v1/dags/${dagId}`)).status).toBe(204);
    const run = await endOf(dagId, first.body.runId);
    expect(run.status).toBe('success');
    await expectOneOutcomePerAttempt(run);
    // The run waiting behind it never starts; the reaper ends it.
    const waiting = await endOf(dagId, second.body.runId, true);
    expect(waiting.status).toBe('cancelled');
    expect(waiting.tasks.every((t) => t.attempt === 0)).toBe(true);
  });
});
