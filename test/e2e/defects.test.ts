import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import {
  api,
  listKeys,
  local,
  outputs,
  putDagFile,
  type RunView,
  s3,
  uniqueDagId,
  waitForRun,
} from './stack.ts';

/**
 * What a careless or hostile user tried against the local stack, each as it must now behave:
 * a clear 4xx naming the field with nothing written, runs that always end, and DAG files that
 * behave as Airflow's do.
 */

interface ImportError {
  key: string;
  dagId?: string;
  errors: { path: string; message: string }[];
}

async function importErrorFor(key: string): Promise<ImportError | undefined> {
  let token: string | undefined;
  for (let page = 0; page < 50; page++) {
    const q = token ? `?limit=100&nextToken=${encodeURIComponent(token)}` : '?limit=100';
    const r = await api.request<{ importErrors: ImportError[]; nextToken?: string }>(
      'GET',
      `/v1/import-errors${q}`,
    );
    const hit = r.body.importErrors.find((e) => e.key === key);
    if (hit) return hit;
    token = r.body.nextToken;
    if (!token) return undefined;
  }
  return undefined;
}

const waitImportError = (key: string) =>
  waitFor(
    () => importErrorFor(key),
    (e) => e !== undefined,
    { timeoutMs: 60_000, intervalMs: 500, what: `an import error for ${key}` },
  ) as Promise<ImportError>;

const dagStatus = async (dagId: string) => (await api.request('GET', `/v1/dags/${dagId}`)).status;

async function createDag(doc: object): Promise<string> {
  const dagId = uniqueDagId('e2e_defect');
  const r = await api.request('POST', '/v1/dags', { dagId, ...doc });
  expect(r.status).toBe(201);
  return dagId;
}

const runCount = async (dagId: string) =>
  (await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs?limit=100`)).body.runs
    .length;

const getRun = async (dagId: string, runId: string) =>
  (await api.request<RunView & { error?: string }>('GET', `/v1/dags/${dagId}/runs/${runId}`)).body;

describe('values that cannot be stored are refused before anything is written', () => {
  it('a conf over the limit is 413 with the limit, and no run exists', async () => {
    const dagId = await createDag({ tasks: [{ taskId: 'a', operator: 'noop' }] });
    for (const size of [70_000, 409_000, 409_180]) {
      const r = await api.request('POST', `/v1/dags/${dagId}/runs`, {
        conf: { blob: 'x'.repeat(size) },
      });
      expect(r.status).toBe(413);
      expect(r.body).toMatchObject({
        details: [{ path: '$.conf', message: expect.stringMatching(/limit is 65536 bytes/) }],
      });
    }
    expect(await runCount(dagId)).toBe(0);
    // Under the limit, a run exists and ends.
    const ok = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
      conf: { blob: 'x'.repeat(60_000) },
    });
    expect(ok.status).toBe(201);
    expect((await waitForRun(dagId, ok.body.runId)).status).toBe('success');
  });

  it.each([
    ['{"conf": {"n": 1e999}}', '$.conf.n'],
    ['{"conf": {"n": 12345678901234567890}}', '$.conf.n'],
    ['{"conf": {"s": "\\ud800"}}', '$.conf.s'],
    ['{"conf": {"__proto__": {"admin": true}}}', '$.conf.__proto__'],
    [`{"conf": {"deep": ${'['.repeat(5000)}${']'.repeat(5000)}}}`, '$.conf.deep'],
  ])('a trigger with %#: 400 naming the field, nothing stored', async (body, path) => {
    const dagId = await createDag({ tasks: [{ taskId: 'a', operator: 'noop' }] });
    const r = await api.request('POST', `/v1/dags/${dagId}/runs`, body);
    expect(r.status).toBe(400);
    const details = (r.body as { details: { path: string }[] }).details;
    expect(details.map((d) => d.path.slice(0, path.length))).toContain(path);
    expect(await runCount(dagId)).toBe(0);
  });

  it.each([
    [
      'params',
      (v: string) =>
        `{"dagId":"%ID%","params":{"v":${v}},"tasks":[{"taskId":"a","operator":"noop"}]}`,
      '$.params.v',
    ],
    [
      'noop output',
      (v: string) =>
        `{"dagId":"%ID%","tasks":[{"taskId":"a","operator":"noop","config":{"output":${v}}}]}`,
      '$.tasks[0].config.output',
    ],
  ])('a DAG whose %s cannot round-trip: 400 naming it, no DAG', async (_what, doc, path) => {
    for (const v of [
      '1e999',
      '9007199254740993',
      '"\\udfff"',
      `${'['.repeat(3000)}${']'.repeat(3000)}`,
    ]) {
      const dagId = uniqueDagId('e2e_value');
      const r = await api.request('POST', '/v1/dags', doc(v).replace('%ID%', dagId));
      expect(r.status).toBe(400);
      const details = (r.body as { details: { path: string }[] }).details;
      expect(details.map((d) => d.path.slice(0, path.length))).toContain(path);
      expect(await dagStatus(dagId)).toBe(404);
    }
  });
});

describe('the registrar never fails silently', () => {
  it('an upload nested 100,000 levels deep leaves an import error', async () => {
    const key = `dags/${uniqueDagId('e2e_deep')}.json`;
    await putDagFile(
      key,
      `{"dagId":"deep","params":${'['.repeat(100_000)}${']'.repeat(100_000)},"tasks":[]}`,
    );
    const e = await waitImportError(key);
    expect(e.errors[0]?.message).toMatch(/nested more than 64 levels/);
  });

  it('an upload with 10,000 invalid tasks leaves a bounded import error with a count', async () => {
    const key = `dags/${uniqueDagId('e2e_many')}.json`;
    const tasks = Array.from({ length: 10_000 }, (_, i) => ({ taskId: `t${i}`, operator: 'nope' }));
    await putDagFile(key, JSON.stringify({ dagId: 'many', tasks }));
    const e = await waitImportError(key);
    expect(e.errors).toHaveLength(51);
    expect(e.errors.at(-1)?.message).toMatch(/^and \d+ more problems$/);
  });
});

describe('DAG files behave as in Airflow', () => {
  it('deleting a DAG file removes its DAG; history is kept', async () => {
    const dagId = uniqueDagId('e2e_file_del');
    const key = `dags/${dagId}.json`;
    await putDagFile(key, JSON.stringify({ dagId, tasks: [{ taskId: 'a', operator: 'noop' }] }));
    await waitFor(
      () => dagStatus(dagId),
      (s) => s === 200,
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `DAG ${dagId} registered`,
      },
    );
    const run = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
    await waitForRun(dagId, run.body.runId);
    await s3.send(new DeleteObjectCommand({ Bucket: local.dagsBucket, Key: key }));
    await waitFor(
      () => dagStatus(dagId),
      (s) => s === 404,
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `DAG ${dagId} removed with its file`,
      },
    );
    // Recreating it from the file brings it back with its history.
    await putDagFile(key, JSON.stringify({ dagId, tasks: [{ taskId: 'a', operator: 'noop' }] }));
    await waitFor(
      () => dagStatus(dagId),
      (s) => s === 200,
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `DAG ${dagId} registered again`,
      },
    );
    expect(await runCount(dagId)).toBe(1);
  });

  it('a second file with the same dagId gets an import error naming the first', async () => {
    const dagId = uniqueDagId('e2e_dup');
    const first = `dags/${dagId}_first.json`;
    const second = `dags/${dagId}_second.json`;
    await putDagFile(
      first,
      JSON.stringify({ dagId, description: 'first', tasks: [{ taskId: 'a', operator: 'noop' }] }),
    );
    await waitFor(
      () => dagStatus(dagId),
      (s) => s === 200,
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `DAG ${dagId} registered`,
      },
    );
    await putDagFile(
      second,
      JSON.stringify({ dagId, description: 'second', tasks: [{ taskId: 'b', operator: 'noop' }] }),
    );
    const e = await waitImportError(second);
    expect(e.errors[0]).toMatchObject({ path: '$.dagId', message: expect.stringContaining(first) });
    const dag = await api.request<{ description: string; latestVersion: number }>(
      'GET',
      `/v1/dags/${dagId}`,
    );
    expect(dag.body).toMatchObject({ description: 'first', latestVersion: 1 });
  });

  it('a manual trigger of a paused DAG waits queued until the DAG is unpaused', async () => {
    const dagId = await createDag({ tasks: [{ taskId: 'a', operator: 'noop' }] });
    expect((await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true })).status).toBe(200);
    const r = await api.request<{ runId: string; status: string }>(
      'POST',
      `/v1/dags/${dagId}/runs`,
      {},
    );
    expect(r.body.status).toBe('queued');
    // Stays queued while paused: the reaper and a run end do not start it either.
    const view = await getRun(dagId, r.body.runId);
    expect(view.status).toBe('queued');
    expect(view.tasks.every((t) => t.status === 'pending')).toBe(true);
    expect((await api.request('PATCH', `/v1/dags/${dagId}`, { paused: false })).status).toBe(200);
    expect((await waitForRun(dagId, r.body.runId)).status).toBe('success');
  });

  it('a DAG deleted and created again starts unpaused, and an old idempotency key names a new run', async () => {
    const doc = { tasks: [{ taskId: 'a', operator: 'noop' }] };
    const dagId = await createDag(doc);
    const first = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
      idempotencyKey: 'nightly-1',
    });
    await waitForRun(dagId, first.body.runId);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    expect((await api.request('DELETE', `/v1/dags/${dagId}`)).status).toBe(204);
    expect((await api.request('POST', '/v1/dags', { dagId, ...doc })).status).toBe(201);
    const dag = await api.request<{ paused: boolean }>('GET', `/v1/dags/${dagId}`);
    expect(dag.body.paused).toBe(false);
    const again = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
      idempotencyKey: 'nightly-1',
    });
    expect(again.status).toBe(201);
    expect(again.body.runId).not.toBe(first.body.runId);
    expect((await waitForRun(dagId, again.body.runId)).status).toBe('success');
  });
});

describe('ids and time zones', () => {
  it.each(['.', '..', '...'])('a dagId of %j is refused', async (dagId) => {
    const r = await api.request('POST', '/v1/dags', {
      dagId,
      tasks: [{ taskId: 'a', operator: 'noop' }],
    });
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body)).toContain('$.dagId');
  });

  it('a time zone is stored under its canonical IANA name', async () => {
    const dagId = await createDag({
      schedule: { cron: '0 3 * * *', timezone: 'america/new_york' },
      tasks: [{ taskId: 'a', operator: 'noop' }],
    });
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    const dag = await api.request<{ schedule: { timezone: string } }>('GET', `/v1/dags/${dagId}`);
    expect(dag.body.schedule.timezone).toBe('America/New_York');
  });
});

describe('DAGs the API accepts can run', () => {
  it('a 6,000-task DAG registers, and its trigger answers at once and writes the run', async () => {
    const tasks = Array.from({ length: 6000 }, (_, i) => ({
      taskId: `task_${String(i).padStart(5, '0')}`,
      operator: 'noop',
      ...(i === 0 ? {} : { dependsOn: ['task_00000'] }),
    }));
    const dagId = uniqueDagId('e2e_huge');
    const body = JSON.stringify({ dagId, tasks });
    expect(body.length).toBeLessThan(1024 * 1024);
    expect((await api.request('POST', '/v1/dags', body)).status).toBe(201);
    // Paused, so that its 6,000 tasks need not run here: the run is written whole and waits.
    // (Before, the stored document, defaults filled in, was over the upload limit, and every
    // trigger answered 400.)
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    const r = await api.request<{ runId: string; status: string }>(
      'POST',
      `/v1/dags/${dagId}/runs`,
      {},
    );
    expect(r.status).toBe(201);
    expect(r.body.status).toBe('queued');
    const written = await waitFor(
      () => getRun(dagId, r.body.runId),
      (v) => v.tasks.length === 6000,
      { timeoutMs: 240_000, intervalMs: 2000, what: `the 6,000 task instances of ${r.body.runId}` },
    );
    expect(written.status).toBe('queued');
    expect(written.tasks.every((t) => t.status === 'pending')).toBe(true);
    // Deleted, the DAG never starts it; the reaper ends it.
    expect((await api.request('DELETE', `/v1/dags/${dagId}`)).status).toBe(204);
  });
});

describe('a record that can never be processed', () => {
  it('fails its run with the reason and holds up no other run', async () => {
    // a fails: its outcome goes to the advance function by the table's stream (a success would
    // be advanced by its own worker, which holds the DAG version it ran from in memory).
    // The stored DAG version disappears while a runs: readiness after its failure can never be
    // computed by the advance function, which has never read this version. That holds only if
    // a was still running once the version was gone, which a loaded machine can delay past a's
    // sleep; so that is checked, and a run that lost the race is tried again with a new DAG.
    const data = outputs.DataBucketName as string;
    let tried: { dagId: string; runId: string } | undefined;
    for (let attempt = 0; attempt < 3 && !tried; attempt++) {
      const dagId = await createDag({
        tasks: [
          { taskId: 'a', operator: 'noop', config: { sleepSeconds: 5, failAttempts: 1 } },
          { taskId: 'b', operator: 'noop', dependsOn: ['a'], triggerRule: 'all_done' },
        ],
      });
      const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
      const aRunning = (v: Awaited<ReturnType<typeof getRun>>) =>
        v.tasks.some((t) => t.taskId === 'a' && t.status === 'running');
      await waitFor(() => getRun(dagId, r.body.runId), aRunning, {
        timeoutMs: 60_000,
        intervalMs: 200,
        what: `task a of ${r.body.runId} running`,
      });
      for (const key of await listKeys(data, `dag-versions/${dagId}/`)) {
        await s3.send(new DeleteObjectCommand({ Bucket: data, Key: key }));
      }
      if (aRunning(await getRun(dagId, r.body.runId))) tried = { dagId, runId: r.body.runId };
    }
    if (!tried) throw new Error('task a ended before its DAG version was deleted, 3 times');
    const ended = await waitForRun(tried.dagId, tried.runId, 120);
    expect(ended.status).toBe('failed');
    expect((ended as RunView & { error?: string }).error).toMatch(
      /could not be processed.*missing/,
    );
    // Another DAG's run goes through as usual.
    const other = await createDag({
      tasks: [
        { taskId: 'x', operator: 'noop' },
        { taskId: 'y', operator: 'noop', dependsOn: ['x'] },
      ],
    });
    const o = await api.request<{ runId: string }>('POST', `/v1/dags/${other}/runs`, {});
    expect((await waitForRun(other, o.body.runId)).status).toBe('success');
  });
});
