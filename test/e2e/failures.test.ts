import { describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { TRIGGER_RULES } from '../../core/dag/schema.ts';
import { ConflictError } from '../../core/errors.ts';
import { claimTask, finishTask, queueTask } from '../../core/state/index.ts';
import { localClients } from '../../localstack/resources.ts';
import { waitFor } from '../poll.ts';
import {
  api,
  functionLogLines,
  getText,
  invoke,
  listKeys,
  outputs,
  type RunView,
  uniqueDagId,
  waitForRun,
} from './stack.ts';

const statuses = (run: RunView) =>
  Object.fromEntries(run.tasks.map((t) => [t.taskId, [t.status, t.attempt]]));

async function createAndTrigger(
  dag: object,
  body: object = {},
): Promise<{ dagId: string; runId: string }> {
  const dagId = (dag as { dagId: string }).dagId;
  const created = await api.request('POST', '/v1/dags', dag);
  if (created.status !== 201) throw new Error(`create: ${created.status} ${created.text}`);
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, body);
  if (trig.status !== 201) throw new Error(`trigger: ${trig.status} ${trig.text}`);
  return { dagId, runId: trig.body.runId };
}

const runPath = (dagId: string, runId: string) =>
  `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`;

describe('retries', () => {
  it('a flaky task (fails once, two retries) ends success on attempt 2', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_flaky'),
      tasks: [
        {
          taskId: 'flaky',
          operator: 'noop',
          config: { failAttempts: 1 },
          retries: 2,
          retryDelaySeconds: 1,
        },
      ],
    });
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({ flaky: ['success', 2] });
    const first = await api.request('GET', `${runPath(dagId, runId)}/tasks/flaky/logs?attempt=1`);
    expect(first.text).toContain('failing attempt 1 of 1 on purpose');
  });

  it('exhausted retries fail the task; trigger rules decide its downstream; the run fails', async () => {
    const upstream = ['broken'];
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_exhausted'),
      tasks: [
        {
          taskId: 'broken',
          operator: 'noop',
          config: { failAttempts: 5 },
          retries: 1,
          retryDelaySeconds: 1,
        },
        { taskId: 'load', operator: 'noop', dependsOn: upstream },
        { taskId: 'alert', operator: 'noop', dependsOn: upstream, triggerRule: 'one_failed' },
        { taskId: 'cleanup', operator: 'noop', dependsOn: upstream, triggerRule: 'all_done' },
      ],
    });
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('failed');
    expect(statuses(run)).toEqual({
      broken: ['failed', 2],
      load: ['upstream_failed', 0],
      alert: ['success', 1],
      cleanup: ['success', 1],
    });
  });
});

describe('trigger rules end to end', () => {
  it('all twelve, below one upstream that succeeds and one that fails', async () => {
    const rules = TRIGGER_RULES;
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_rules'),
      tasks: [
        { taskId: 'ok', operator: 'noop' },
        { taskId: 'bad', operator: 'noop', config: { failAttempts: 1 } },
        ...rules.map((r) => ({
          taskId: r,
          operator: 'noop',
          dependsOn: ['ok', 'bad'],
          triggerRule: r,
        })),
      ],
    });
    const run = await waitForRun(dagId, runId);
    const status = Object.fromEntries(run.tasks.map((t) => [t.taskId, t.status]));
    // The 'S,F' row of the truth table in test/unit/readiness.test.ts.
    expect(status).toEqual({
      ok: 'success',
      bad: 'failed',
      all_success: 'upstream_failed',
      all_failed: 'skipped',
      all_done: 'success',
      one_success: 'success',
      one_failed: 'success',
      none_failed: 'upstream_failed',
      none_failed_min_one_success: 'upstream_failed',
      none_skipped: 'success',
      always: 'success',
      one_done: 'success',
      all_skipped: 'skipped',
      all_done_min_one_success: 'success',
    });
    expect(run.status).toBe('failed');
  });

  it("Airflow 3's rules below two skipped upstream tasks (the K,K row)", async () => {
    const rules = ['one_done', 'all_skipped', 'all_done_min_one_success', 'all_done'];
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_rules_skipped'),
      tasks: [
        { taskId: 'pick', operator: 'branch', config: { follow: [] } },
        { taskId: 'a', operator: 'noop', dependsOn: ['pick'] },
        { taskId: 'b', operator: 'noop', dependsOn: ['pick'] },
        ...rules.map((r) => ({
          taskId: r,
          operator: 'noop',
          dependsOn: ['a', 'b'],
          triggerRule: r,
        })),
      ],
    });
    const run = await waitForRun(dagId, runId);
    expect(Object.fromEntries(run.tasks.map((t) => [t.taskId, t.status]))).toEqual({
      pick: 'success',
      a: 'skipped',
      b: 'skipped',
      one_done: 'skipped',
      all_skipped: 'success',
      all_done_min_one_success: 'skipped',
      all_done: 'success',
    });
    expect(run.status).toBe('success');
  });
});

describe('a worker that dies mid-attempt', () => {
  it('is reaped and retried; its stale completion is then rejected; no attempt runs twice', async () => {
    const dagId = uniqueDagId('e2e_zombie');
    await api.request('POST', '/v1/dags', {
      dagId,
      tasks: [{ taskId: 'work', operator: 'noop', retries: 1, retryDelaySeconds: 1 }],
    });
    // Stand in for a worker that claimed attempt 1 and then vanished: the run and its claim are
    // written straight to the state store, with a lease that has already expired.
    const store = new DynamoStateStore(localClients().dynamodb, outputs.TableName as string);
    const runId = `manual__zombie-${Date.now()}`;
    const now = Date.now();
    await store.createRun({
      dagId,
      runId,
      dagVersion: 1,
      kind: 'manual',
      logicalDate: new Date(now),
      conf: {},
      tasks: [{ taskId: 'work', upstreamCount: 0 }],
      at: new Date(now),
    });
    await store.transitionRun(dagId, runId, ['queued'], 'running', new Date(now));
    const key = { dagId, runId, taskId: 'work' };
    const queued = await store.transitionTask(
      key,
      queueTask({ status: 'pending', attempt: 0, leaseToken: null }, new Date(now - 20_000)),
    );
    const dead = await store.transitionTask(
      key,
      claimTask(queued, 'dead-worker', 5, new Date(now - 10_000)),
    );

    // The reaper's next pass (invoked now rather than waiting for its one-minute rule).
    // invoke() expects no FunctionError.
    const report = (await invoke('ReaperFunction')) as { expiredLeases: number };
    expect(report.expiredLeases).toEqual(expect.any(Number));
    // Once this pass has returned, the dead worker's lease has been taken back: by this pass, or
    // by the stack's own one-minute pass if that came first (then this one counted nothing for
    // it, so its report alone cannot say), as the conditional write lets only one do it.
    expect(await store.getTaskInstance(key)).not.toMatchObject({
      attempt: 1,
      leaseToken: 'dead-worker',
    });

    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({ work: ['success', 2] });

    // The dead worker comes back and reports attempt 1: fenced.
    await expect(
      store.transitionTask(key, finishTask(dead, { ok: true }, new Date())),
    ).rejects.toBeInstanceOf(ConflictError);
    expect(await store.getTaskInstance(key)).toMatchObject({ status: 'success', attempt: 2 });
    // Attempt 1's worker never got to write anything, so the reaper wrote its log: what
    // happened to it. Attempt 2 ran once, and its small log went with its outcome, not to S3.
    const prefix = `logs/${dagId}/${runId}/work`;
    expect(await listKeys(outputs.DataBucketName as string, `logs/${dagId}/${runId}/`)).toEqual([
      `${prefix}/1.log`,
    ]);
    const second = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/work/logs?attempt=2`,
    );
    expect(second.status).toBe(200);
    expect(second.text.trim().split('\n').at(-1)).toMatch(/ success$/);
    const first = await getText(outputs.DataBucketName as string, `${prefix}/1.log`);
    expect(first).toMatch(/its worker stopped without writing a log/);
    expect(first).toMatch(/lease expired/);
    expect(first).not.toMatch(/success/);
  });
});

describe('cancel and clear', () => {
  it('cancel during a run stops new tasks', async () => {
    const since = Date.now();
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_cancel'),
      tasks: [
        { taskId: 'slow', operator: 'noop', config: { sleepSeconds: 4 } },
        { taskId: 'next', operator: 'noop', dependsOn: ['slow'] },
        { taskId: 'last', operator: 'noop', dependsOn: ['next'] },
      ],
    });
    await waitFor(
      () => api.request<RunView>('GET', runPath(dagId, runId)),
      (r) => r.body.tasks?.some((t) => t.taskId === 'slow' && t.status === 'running') === true,
      { timeoutMs: 30_000, intervalMs: 200, what: `task slow of ${runId} to be running` },
    );
    const cancel = await api.request('POST', `${runPath(dagId, runId)}/cancel`);
    expect(cancel).toMatchObject({ status: 200, body: { status: 'cancelled' } });
    // The slow task's worker finishes its attempt (the sleep ends, or a heartbeat finds the
    // attempt cancelled), and may not record success: it reports its lease lost. A duplicate
    // delivery of its message, if any, is not claimed.
    const ran = (l: Record<string, unknown>) =>
      l.message === 'attempt finished' &&
      l.dagId === dagId &&
      l.runId === runId &&
      l.taskId === 'slow' &&
      l.outcome !== 'not_claimed';
    const finished = await waitFor(
      async () => (await functionLogLines('WorkerFunction', since)).filter(ran),
      (lines) => lines.length > 0,
      { timeoutMs: 60_000, intervalMs: 1000, what: `the worker to finish task slow of ${runId}` },
    );
    expect(finished.map((l) => [l.attempt, l.outcome])).toEqual([[1, 'lease_lost']]);
    const run = (await api.request<RunView>('GET', runPath(dagId, runId))).body;
    expect(run.status).toBe('cancelled');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.startTime === null]).sort()).toEqual([
      ['last', 'cancelled', true],
      ['next', 'cancelled', true],
      ['slow', 'cancelled', false],
    ]);
    expect((await api.request('POST', `${runPath(dagId, runId)}/cancel`)).status).toBe(409);
  });

  it('clear reruns a failed task and its downstream tasks to success, with new attempt numbers', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_clear'),
      tasks: [
        { taskId: 'extract', operator: 'noop' },
        // Fails attempt 1 only, with no retries: the run fails, and a clear makes attempt 2.
        {
          taskId: 'transform',
          operator: 'noop',
          dependsOn: ['extract'],
          config: { failAttempts: 1 },
        },
        { taskId: 'load', operator: 'noop', dependsOn: ['transform'] },
      ],
    });
    const failed = await waitForRun(dagId, runId);
    expect(failed.status).toBe('failed');
    expect(statuses(failed)).toEqual({
      extract: ['success', 1],
      transform: ['failed', 1],
      load: ['upstream_failed', 0],
    });
    const clear = await api.request('POST', `${runPath(dagId, runId)}/tasks/transform/clear`);
    expect(clear).toMatchObject({ status: 200, body: { status: 'running' } });
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({
      extract: ['success', 1],
      transform: ['success', 2],
      load: ['success', 1],
    });
    // A task that has not finished cannot be cleared.
    expect((await api.request('POST', `${runPath(dagId, runId)}/tasks/nope/clear`)).status).toBe(
      404,
    );
  });
});

describe('idempotent manual trigger', () => {
  it('ten concurrent triggers with one idempotencyKey give one run', async () => {
    const dagId = uniqueDagId('e2e_idem');
    await api.request('POST', '/v1/dags', { dagId, tasks: [{ taskId: 'only', operator: 'noop' }] });
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
          idempotencyKey: 'nightly-2026-03-09',
        }),
      ),
    );
    expect(results.map((r) => r.status).sort()).toEqual([
      200, 200, 200, 200, 200, 200, 200, 200, 200, 201,
    ]);
    expect(new Set(results.map((r) => r.body.runId))).toEqual(
      new Set(['manual__nightly-2026-03-09']),
    );
    const runs = await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs`);
    expect(runs.body.runs).toHaveLength(1);
    expect((await waitForRun(dagId, 'manual__nightly-2026-03-09')).status).toBe('success');
  });
});
