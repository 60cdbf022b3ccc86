import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, type RunView, uniqueDagId, waitForRun } from './stack.ts';

/**
 * Dynamic task mapping on the local stack (DESIGN.md section 10, core/mapping): a pipeline that
 * lists, maps, reduces and branches; a 1,000-item map; an empty map; a failing instance with
 * retries and an all_done reducer; cancel and clear. test/unit/mapping.test.ts covers the
 * readiness truth table and the edge cases on the in-memory ports.
 */
type MappedRunView = Omit<RunView, 'tasks'> & {
  tasks: (RunView['tasks'][number] & { mapIndex?: number; mapLength?: number })[];
};

const runPath = (dagId: string, runId: string) =>
  `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`;

async function createAndTrigger(dag: { dagId: string; tasks: object[] }, conf: object = {}) {
  const created = await api.request('POST', '/v1/dags', dag);
  expect(created.status, created.text).toBe(201);
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dag.dagId}/runs`, {
    conf,
  });
  expect(trig.status, trig.text).toBe(201);
  return { dagId: dag.dagId, runId: trig.body.runId };
}

const waitMapped = (dagId: string, runId: string, seconds = 120) =>
  waitForRun(dagId, runId, seconds) as unknown as Promise<MappedRunView>;

/** `taskId` or `taskId[mapIndex]` → status, as the run view lists them. */
const statuses = (run: MappedRunView) =>
  Object.fromEntries(
    run.tasks.map((t) => [
      t.mapIndex === undefined ? t.taskId : `${t.taskId}[${t.mapIndex}]`,
      t.status,
    ]),
  );

describe('dynamic task mapping', () => {
  it('lists, maps with a templated config, reduces the outputs in order, and branches on conf', async () => {
    const { dagId, runId } = await createAndTrigger(
      {
        dagId: uniqueDagId('e2e_map'),
        tasks: [
          { taskId: 'list', operator: 'noop', config: { output: { files: ['a', 'b', 'c'] } } },
          {
            taskId: 'process',
            operator: 'noop',
            dependsOn: ['list'],
            mapOver: '{{ tasks.list.output.files }}',
            config: { output: { file: 's3://{{ conf.bucket }}/{{ item }}', n: '{{ mapIndex }}' } },
          },
          {
            taskId: 'reduce',
            operator: 'noop',
            dependsOn: ['process'],
            config: { output: '{{ tasks.process.output }}' },
          },
          {
            taskId: 'pick',
            operator: 'branch',
            dependsOn: ['reduce'],
            config: { follow: '{{ conf.mode }}' },
          },
          { taskId: 'publish', operator: 'noop', dependsOn: ['pick'] },
          { taskId: 'archive', operator: 'noop', dependsOn: ['pick'] },
        ],
      },
      { bucket: 'lake', mode: 'publish' },
    );
    const run = await waitMapped(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({
      archive: 'skipped',
      list: 'success',
      pick: 'success',
      process: 'success',
      'process[0]': 'success',
      'process[1]': 'success',
      'process[2]': 'success',
      publish: 'success',
      reduce: 'success',
    });
    // The run view: the mapped task with its length, then its instances in index order.
    const i = run.tasks.findIndex((t) => t.taskId === 'process' && t.mapIndex === undefined);
    expect(run.tasks[i]?.mapLength).toBe(3);
    expect(run.tasks.slice(i + 1, i + 4).map((t) => [t.taskId, t.mapIndex])).toEqual([
      ['process', 0],
      ['process', 1],
      ['process', 2],
    ]);
    const expected = ['a', 'b', 'c'].map((f, n) => ({ file: `s3://lake/${f}`, n }));
    const out = await api.request('GET', `${runPath(dagId, runId)}/tasks/process/output`);
    expect(out.body).toEqual({ output: expected });
    const reduced = await api.request('GET', `${runPath(dagId, runId)}/tasks/reduce/output`);
    expect(reduced.body).toEqual({ output: expected });
    // One instance: its output, attempt history and log.
    const one = await api.request(
      'GET',
      `${runPath(dagId, runId)}/tasks/process/output?mapIndex=1`,
    );
    expect(one.body).toEqual({ output: expected[1] });
    const detail = await api.request<{ mapIndex: number; attempts: unknown[] }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/process?mapIndex=1`,
    );
    expect(detail.body).toMatchObject({ taskId: 'process', mapIndex: 1, status: 'success' });
    const log = await api.request('GET', `${runPath(dagId, runId)}/tasks/process/logs?mapIndex=2`);
    expect(log.status).toBe(200);
    expect(log.text).toContain('rendered config');
    expect(log.text).toContain('s3://lake/c');
    const parentLog = await api.request('GET', `${runPath(dagId, runId)}/tasks/process/logs`);
    expect(parentLog.text).toContain('expanded into 3 instances');
    // An index it does not have, and one that is not an index.
    const missing = await api.request('GET', `${runPath(dagId, runId)}/tasks/process?mapIndex=3`);
    expect(missing.status).toBe(404);
    const bad = await api.request('GET', `${runPath(dagId, runId)}/tasks/process?mapIndex=x`);
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('mapIndex');
  });

  it('runs each instance of a 1,000-item map exactly once', async () => {
    const n = 1000;
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_map1k'),
      tasks: [
        {
          taskId: 'list',
          operator: 'noop',
          config: { output: Array.from({ length: n }, (_, i) => i) },
        },
        {
          taskId: 'each',
          operator: 'noop',
          dependsOn: ['list'],
          mapOver: '{{ tasks.list.output }}',
          config: { output: '{{ item }}' },
        },
        {
          taskId: 'sum',
          operator: 'noop',
          dependsOn: ['each'],
          config: { output: '{{ tasks.each.output }}' },
        },
      ],
    });
    const run = await waitMapped(dagId, runId, 600);
    expect(run.status).toBe('success');
    const instances = run.tasks.filter((t) => t.taskId === 'each' && t.mapIndex !== undefined);
    expect(instances.map((t) => t.mapIndex)).toEqual(Array.from({ length: n }, (_, i) => i));
    // Exactly once: every instance succeeded on its first attempt, none taken back or retried.
    expect(instances.filter((t) => t.status !== 'success' || t.attempt !== 1)).toEqual([]);
    const sum = await api.request<{ output: number[] }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/sum/output`,
    );
    expect(sum.body.output).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('skips a task mapped over an empty list, and what needs it', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_map0'),
      tasks: [
        { taskId: 'list', operator: 'noop', config: { output: [] } },
        {
          taskId: 'each',
          operator: 'noop',
          dependsOn: ['list'],
          mapOver: '{{ tasks.list.output }}',
        },
        { taskId: 'after', operator: 'noop', dependsOn: ['each'] },
      ],
    });
    const run = await waitMapped(dagId, runId);
    expect(run.status).toBe('success');
    expect(statuses(run)).toEqual({ list: 'success', each: 'skipped', after: 'skipped' });
  });

  it('retries a failing instance on its own, fails the map, and runs an all_done reducer', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_mapfail'),
      tasks: [
        {
          taskId: 'each',
          operator: 'noop',
          mapOver: [0, 1, 5],
          retries: 2,
          retryDelaySeconds: 1,
          config: { failAttempts: '{{ item }}', output: '{{ mapIndex }}' },
        },
        {
          taskId: 'reduce',
          operator: 'noop',
          dependsOn: ['each'],
          triggerRule: 'all_done',
          config: { output: '{{ tasks.each.output }}' },
        },
      ],
    });
    const run = await waitMapped(dagId, runId);
    expect(run.status).toBe('failed');
    expect(statuses(run)).toEqual({
      each: 'failed',
      'each[0]': 'success',
      'each[1]': 'success',
      'each[2]': 'failed',
      reduce: 'success',
    });
    const attempts = run.tasks.filter((t) => t.mapIndex !== undefined).map((t) => t.attempt);
    expect(attempts).toEqual([1, 2, 3]);
    const out = await api.request('GET', `${runPath(dagId, runId)}/tasks/reduce/output`);
    expect(out.body).toEqual({ output: [0, 1, null] });
    const failed = await api.request<{ attempts: { status: string }[] }>(
      'GET',
      `${runPath(dagId, runId)}/tasks/each?mapIndex=2`,
    );
    expect(failed.body.attempts.map((a) => a.status)).toEqual([
      'up_for_retry',
      'up_for_retry',
      'failed',
    ]);
  });

  it('cancels running instances with the run', async () => {
    const dagId = uniqueDagId('e2e_mapcancel');
    const { runId } = await createAndTrigger(
      {
        dagId,
        tasks: [
          {
            taskId: 'each',
            operator: 'noop',
            mapOver: [1, 2, 3],
            config: { sleepSeconds: '{{ conf.sleep }}' },
          },
        ],
      },
      { sleep: 600 },
    );
    await waitFor(
      () => api.request<MappedRunView>('GET', runPath(dagId, runId)),
      (r) =>
        r.body.tasks.filter((t) => t.mapIndex !== undefined && t.status === 'running').length === 3,
      { timeoutMs: 60_000, intervalMs: 500, what: 'three instances running' },
    );
    const cancelled = await api.request('POST', `${runPath(dagId, runId)}/cancel`);
    expect(cancelled.status).toBe(200);
    const run = await waitMapped(dagId, runId);
    expect(run.status).toBe('cancelled');
    expect(new Set(run.tasks.map((t) => t.status))).toEqual(new Set(['cancelled']));
    expect(run.tasks).toHaveLength(4);
  });

  it('clears one instance: it runs again alone, and the map and the reducer after it', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_mapone'),
      tasks: [
        {
          taskId: 'each',
          operator: 'noop',
          mapOver: [0, 1, 0],
          config: { failAttempts: '{{ item }}', output: '{{ mapIndex }}-{{ attempt }}' },
        },
        {
          taskId: 'reduce',
          operator: 'noop',
          dependsOn: ['each'],
          triggerRule: 'all_done',
          config: { output: '{{ tasks.each.output }}' },
        },
      ],
    });
    const first = await waitMapped(dagId, runId);
    expect(first.status).toBe('failed');
    expect(statuses(first)).toMatchObject({ 'each[1]': 'failed', each: 'failed' });
    const cleared = await api.request(
      'POST',
      `${runPath(dagId, runId)}/tasks/each/clear?mapIndex=1`,
    );
    expect(cleared.status, cleared.text).toBe(200);
    const run = await waitFor(
      () => api.request<MappedRunView>('GET', runPath(dagId, runId)),
      (r) => r.body.status === 'success',
      { timeoutMs: 90_000, intervalMs: 500, what: 'the run to succeed after the clear' },
    );
    const attempts = Object.fromEntries(
      run.body.tasks.map((t) => [
        t.mapIndex === undefined ? t.taskId : `${t.taskId}[${t.mapIndex}]`,
        t.attempt,
      ]),
    );
    // Instance 1 ran again (attempt 2 succeeds: failAttempts 1); the others were left alone.
    expect(attempts).toEqual({ each: 1, 'each[0]': 1, 'each[1]': 2, 'each[2]': 1, reduce: 2 });
    const out = await api.request('GET', `${runPath(dagId, runId)}/tasks/reduce/output`);
    expect(out.body).toEqual({ output: ['0-1', '1-2', '2-1'] });
    // An instance that is not there, and a task that is not mapped.
    const none = await api.request('POST', `${runPath(dagId, runId)}/tasks/each/clear?mapIndex=7`);
    expect(none.status).toBe(404);
    const plain = await api.request(
      'POST',
      `${runPath(dagId, runId)}/tasks/reduce/clear?mapIndex=0`,
    );
    expect(plain.status).toBe(400);
    expect(plain.text).toContain('not mapped');
  });

  it('clears a finished mapped task: every instance runs again on its next attempt', async () => {
    const { dagId, runId } = await createAndTrigger({
      dagId: uniqueDagId('e2e_mapclear'),
      tasks: [
        { taskId: 'each', operator: 'noop', mapOver: ['x', 'y'], config: { output: '{{ item }}' } },
        {
          taskId: 'reduce',
          operator: 'noop',
          dependsOn: ['each'],
          config: { output: '{{ tasks.each.output }}' },
        },
      ],
    });
    expect((await waitMapped(dagId, runId)).status).toBe('success');
    const cleared = await api.request('POST', `${runPath(dagId, runId)}/tasks/each/clear`);
    expect(cleared.status, cleared.text).toBe(200);
    const run = await waitFor(
      () => api.request<MappedRunView>('GET', runPath(dagId, runId)),
      (r) => r.body.status === 'success' && r.body.tasks.every((t) => t.attempt === 2),
      { timeoutMs: 90_000, intervalMs: 500, what: 'the cleared map to run again' },
    );
    expect(statuses(run.body)).toEqual({
      each: 'success',
      'each[0]': 'success',
      'each[1]': 'success',
      reduce: 'success',
    });
    const out = await api.request('GET', `${runPath(dagId, runId)}/tasks/reduce/output`);
    expect(out.body).toEqual({ output: ['x', 'y'] });
  });

  it('refuses a mapOver that cannot give a list, naming the field, and writes nothing', async () => {
    const dagId = uniqueDagId('e2e_mapbad');
    const r = await api.request<{ details: { path: string; message: string }[] }>(
      'POST',
      '/v1/dags',
      {
        dagId,
        tasks: [
          { taskId: 'a', operator: 'noop' },
          {
            taskId: 'b',
            operator: 'noop',
            dependsOn: ['a'],
            mapOver: 'files: {{ tasks.a.output }}',
          },
        ],
      },
    );
    expect(r.status).toBe(400);
    expect(r.body.details).toMatchObject([
      { path: '$.tasks[1].mapOver', message: expect.stringMatching(/one placeholder/) },
    ]);
    expect((await api.request('GET', `/v1/dags/${dagId}`)).status).toBe(404);
  });
});
