import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { api, type RunView, uniqueDagId, waitForRun } from './stack.ts';

/**
 * Data between tasks on the local stack (DESIGN.md section 10): outputs, templated configs, the
 * `branch` operator, and a task's attempt history. The renderer and readiness are tested in
 * depth in test/unit/template.test.ts, templates-app.test.ts, branch.test.ts, attempts.test.ts.
 */
const runPath = (dagId: string, runId: string) =>
  `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`;

async function createAndTrigger(dag: object, conf: object = {}) {
  const dagId = (dag as { dagId: string }).dagId;
  const created = await api.request('POST', '/v1/dags', dag);
  expect(created.status, created.text).toBe(201);
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, { conf });
  expect(trig.status, trig.text).toBe(201);
  return { dagId, runId: trig.body.runId };
}

const statuses = (run: RunView) => Object.fromEntries(run.tasks.map((t) => [t.taskId, t.status]));

describe('a pipeline that passes data and branches', () => {
  it('renders upstream outputs and conf into configs, follows the branch conf names, and joins', async () => {
    const { dagId, runId } = await createAndTrigger(
      {
        dagId: uniqueDagId('e2e_flow'),
        params: { bucket: 'data-lake' },
        tasks: [
          {
            taskId: 'list',
            operator: 'noop',
            config: { output: { files: ['a.csv', 'b.csv', 'c.csv'] } },
          },
          {
            taskId: 'process',
            operator: 'noop',
            dependsOn: ['list'],
            config: {
              output: {
                files: '{{ tasks.list.output.files }}',
                first: 's3://{{ params.bucket }}/{{ ds }}/{{ tasks.list.output.files[0] }}',
                apiToken: '{{ conf.token }}',
              },
            },
          },
          {
            taskId: 'pick',
            operator: 'branch',
            dependsOn: ['process'],
            config: { follow: '{{ conf.mode }}' },
          },
          { taskId: 'fast', operator: 'noop', dependsOn: ['pick'] },
          { taskId: 'slow', operator: 'noop', dependsOn: ['pick'] },
          { taskId: 'slow_report', operator: 'noop', dependsOn: ['slow'] },
          {
            taskId: 'join',
            operator: 'noop',
            dependsOn: ['fast', 'slow_report'],
            triggerRule: 'none_failed_min_one_success',
            config: {
              output: { count: '{{ tasks.process.output.files }}', by: '{{ tasks.pick.output }}' },
            },
          },
        ],
      },
      { mode: 'fast', token: 'secret-token-123' },
    );
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({
      list: 'success',
      process: 'success',
      pick: 'success',
      fast: 'success',
      slow: 'skipped',
      slow_report: 'skipped',
      join: 'success',
    });
    const out = await api.request<{ output: unknown }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/join/output`,
    );
    expect(out.body.output).toEqual({ count: ['a.csv', 'b.csv', 'c.csv'], by: ['fast'] });
    const processed = await api.request<{ output: { first: string } }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/process/output`,
    );
    expect(processed.body.output.first).toMatch(/^s3:\/\/data-lake\/\d{4}-\d{2}-\d{2}\/a\.csv$/);
    const log = await api.request('GET', `${runPath(dagId, runId)}/tasks/process/logs`);
    expect(log.text).toContain('rendered config: {"output":{"files":["a.csv","b.csv","c.csv"]');
    expect(log.text).not.toContain('secret-token-123');
  });

  it('fails a task whose template does not resolve, naming the path', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_unresolved'),
      tasks: [
        { taskId: 't', operator: 'noop', retries: 2, config: { output: '{{ conf.region }}' } },
      ],
    });
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('failed');
    const task = await api.request<{ status: string; attempts: { error?: string }[] }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/t`,
    );
    // Not retried: the next attempt would render the same.
    expect(task.body.status).toBe('failed');
    expect(task.body.attempts).toHaveLength(1);
    expect(task.body.attempts[0]?.error).toContain(
      '{{ conf.region }} does not resolve: no "region"',
    );
  });

  it('refuses a template that reads a task not upstream, with its JSON path, and writes nothing', async () => {
    const dagId = uniqueDagId('e2e_bad_tpl');
    const res = await api.request<{ details: { path: string; message: string }[] }>(
      'POST',
      '/v1/dags',
      {
        dagId,
        tasks: [
          { taskId: 'a', operator: 'noop', config: { output: '{{ tasks.b.output }}' } },
          { taskId: 'b', operator: 'noop' },
          { taskId: 'c', operator: 'branch', dependsOn: ['a'], config: { follow: 'b' } },
        ],
      },
    );
    expect(res.status).toBe(400);
    expect(res.body.details).toEqual([
      {
        path: '$.tasks[0].config.output',
        message: expect.stringContaining('"b" is not upstream of "a"'),
      },
      {
        path: '$.tasks[2].config.follow',
        message: expect.stringContaining('"b" is not directly downstream'),
      },
    ]);
    expect((await api.request('GET', `/v1/dags/${dagId}`)).status).toBe(404);
  });
});

describe('the example DAG report_by_region', () => {
  it('runs as written: a region loaded per file (mapped), the full report chosen by an upstream output, then publish', async () => {
    const doc = JSON.parse(readFileSync('examples/dags/report_by_region.json', 'utf8'));
    const { dagId, runId } = await createAndTrigger({ ...doc, dagId: uniqueDagId('e2e_example') });
    const run = await waitForRun(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toMatchObject({
      load_region: 'success',
      full_report: 'success',
      quick_report: 'skipped',
      publish: 'success',
    });
    // One instance per file, and the summary got their outputs in order.
    const mapped = run.tasks.filter(
      (t) => t.taskId === 'load_region' && (t as { mapIndex?: number }).mapIndex !== undefined,
    );
    expect(mapped.map((t) => t.status)).toEqual(['success', 'success', 'success']);
    const summary = await api.request<{ output: { loaded: { file: string; part: number }[] } }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/summarize/output`,
    );
    expect(summary.body.output.loaded.map((l) => [l.file.split('/').at(-1), l.part])).toEqual([
      ['eu.csv', 0],
      ['us.csv', 1],
      ['apac.csv', 2],
    ]);
    const out = await api.request<{ output: string }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/publish/output`,
    );
    expect(out.body.output).toMatch(
      new RegExp(`^published \\d{4}-\\d{2}-\\d{2} \\(${dagId}, run `),
    );
  });
});

describe('a task with its attempt history', () => {
  it('lists each attempt with its status, times and error', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_attempts'),
      tasks: [
        {
          taskId: 'flaky',
          operator: 'noop',
          config: { failAttempts: 1 },
          retries: 1,
          retryDelaySeconds: 1,
        },
      ],
    });
    expect((await waitForRun(dagId, runId)).status).toBe('success');
    const res = await api.request<{
      taskId: string;
      status: string;
      attempt: number;
      executor: string;
      attempts: {
        attempt: number;
        status: string;
        startTime: string;
        endTime: string;
        error?: string;
      }[];
    }>('GET', `${runPath(dagId, runId)}/tasks/flaky`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      taskId: 'flaky',
      status: 'success',
      attempt: 2,
      executor: 'lambda',
    });
    expect(res.body.attempts.map((a) => [a.attempt, a.status])).toEqual([
      [1, 'up_for_retry'],
      [2, 'success'],
    ]);
    expect(res.body.attempts[0]?.error).toContain('failing attempt 1 of 1 on purpose');
    expect(res.body.attempts[1]?.error).toBeUndefined();
    for (const a of res.body.attempts)
      expect(Date.parse(a.endTime)).toBeGreaterThanOrEqual(Date.parse(a.startTime));
    expect((await api.request('GET', `${runPath(dagId, runId)}/tasks/nope`)).status).toBe(404);
  });
});
