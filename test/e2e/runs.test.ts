import { describe, expect, it } from 'vitest';
import { api, listKeys, outputs, uniqueDagId, waitForRun } from './stack.ts';

const dataBucket = () => outputs.DataBucketName as string;

describe('a DAG through the API: create, trigger with conf, read its status', () => {
  it('runs every task once, to success, with readable logs', async () => {
    const dagId = uniqueDagId('e2e_seed');
    const dag = {
      dagId,
      description: 'extract, two transforms, load',
      tasks: [
        { taskId: 'extract', operator: 'noop', config: { output: { rows: 3 } } },
        { taskId: 'clean', operator: 'noop', dependsOn: ['extract'] },
        { taskId: 'enrich', operator: 'noop', dependsOn: ['extract'] },
        { taskId: 'load', operator: 'noop', dependsOn: ['clean', 'enrich'] },
      ],
    };
    const created = await api.request('POST', '/v1/dags', dag);
    expect(created).toMatchObject({ status: 201, body: { dagId, version: 1 } });

    const conf = { day: '2026-03-09', region: 'eu' };
    const trig = await api.request<{ runId: string; status: string }>(
      'POST',
      `/v1/dags/${dagId}/runs`,
      { conf },
    );
    expect(trig.status).toBe(201);
    expect(trig.body.runId).toMatch(/^manual__/);

    const run = await waitForRun(dagId, trig.body.runId);
    expect(run.status).toBe('success');
    expect(run.conf).toEqual(conf);
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt]).sort()).toEqual([
      ['clean', 'success', 1],
      ['enrich', 'success', 1],
      ['extract', 'success', 1],
      ['load', 'success', 1],
    ]);
    // Each task names where it ran (DESIGN.md section 5): the default, lambda.
    expect(run.tasks.map((t) => (t as { executor?: string }).executor)).toEqual(
      run.tasks.map(() => 'lambda'),
    );

    for (const t of run.tasks) {
      const log = await api.request(
        'GET',
        `/v1/dags/${dagId}/runs/${encodeURIComponent(run.runId)}/tasks/${t.taskId}/logs?attempt=1`,
      );
      expect(log.status).toBe(200);
      expect(log.text).toContain(`noop ${t.taskId}`);
      expect(log.text.trim().split('\n').at(-1)).toMatch(/ success$/);
    }
    // Small logs of successes went with their outcomes: not one S3 PUT for them.
    expect(await listKeys(dataBucket(), `logs/${dagId}/${run.runId}/`)).toEqual([]);
    const extract = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(run.runId)}/tasks/extract/logs`,
    );
    expect(extract.text).toContain('output: {"rows":3}');

    // The run alone, for a caller that polls for its end: the same view without its tasks.
    const runPath = `/v1/dags/${dagId}/runs/${encodeURIComponent(run.runId)}`;
    const alone = await api.request<Record<string, unknown>>('GET', `${runPath}?tasks=false`);
    expect(alone.status).toBe(200);
    const { tasks: _tasks, ...rest } = run;
    expect(alone.body).toEqual(rest);
    const whole = await api.request<{ tasks: unknown[] }>('GET', `${runPath}?tasks=true`);
    expect(whole.body.tasks).toHaveLength(4);
    const bad = await api.request<{ error: string; details?: { path: string }[] }>(
      'GET',
      `${runPath}?tasks=no`,
    );
    expect(bad.status).toBe(400);
    expect(bad.body.details?.map((d) => d.path)).toEqual(['$.query.tasks']);

    const runs = await api.request<{ runs: { runId: string; status: string }[] }>(
      'GET',
      `/v1/dags/${dagId}/runs`,
    );
    expect(runs.body.runs).toEqual([
      expect.objectContaining({ runId: run.runId, status: 'success' }),
    ]);
  });

  it('fans out: 200 independent tasks each run exactly once', async () => {
    const dagId = uniqueDagId('e2e_fanout');
    const tasks = Array.from({ length: 200 }, (_, i) => ({
      taskId: `t${String(i).padStart(3, '0')}`,
      operator: 'noop',
    }));
    expect((await api.request('POST', '/v1/dags', { dagId, tasks })).status).toBe(201);
    const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
    const run = await waitForRun(dagId, trig.body.runId, 240);
    expect(run.status).toBe('success');
    expect(run.tasks).toHaveLength(200);
    expect(run.tasks.filter((t) => t.status !== 'success' || t.attempt !== 1)).toEqual([]);
    // Each log went inline with its outcome (no S3 object), and holds exactly one outcome.
    expect(await listKeys(dataBucket(), `logs/${dagId}/${run.runId}/`)).toEqual([]);
    for (const t of [tasks[0], tasks[57], tasks[199]]) {
      const log = await api.request(
        'GET',
        `/v1/dags/${dagId}/runs/${encodeURIComponent(run.runId)}/tasks/${t?.taskId}/logs?attempt=1`,
      );
      expect(log.text.split('\n').filter((l) => / (success|failed)$/.test(l))).toHaveLength(1);
    }
  });
});
