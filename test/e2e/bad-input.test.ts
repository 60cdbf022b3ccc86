import { describe, expect, it } from 'vitest';
import { api, listKeys, local, uniqueDagId } from './stack.ts';

/** Nothing about this DAG id exists anywhere: not in the API, not in the DAGs bucket. */
async function expectNothingStored(dagId: string) {
  expect((await api.request('GET', `/v1/dags/${dagId}`)).status).toBe(404);
  expect((await api.request('GET', `/v1/dags/${dagId}/runs`)).status).toBe(404);
  expect(await listKeys(local.dagsBucket, `dags/${dagId}`)).toEqual([]);
}

describe('bad input gets a 4xx that names the problem, and nothing is written', () => {
  it('malformed JSON', async () => {
    const r = await api.request('POST', '/v1/dags', '{"dagId": "x", "tasks": [');
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      error: 'invalid request',
      details: [{ path: '$', message: expect.stringMatching(/^invalid JSON: /) }],
    });
    await expectNothingStored('x');
  });

  it('a cyclic DAG', async () => {
    const dagId = uniqueDagId('e2e_cycle');
    const r = await api.request('POST', '/v1/dags', {
      dagId,
      tasks: [
        { taskId: 'a', operator: 'noop', dependsOn: ['c'] },
        { taskId: 'b', operator: 'noop', dependsOn: ['a'] },
        { taskId: 'c', operator: 'noop', dependsOn: ['b'] },
      ],
    });
    expect(r).toMatchObject({
      status: 400,
      body: {
        details: [
          { path: '$.tasks[0].dependsOn[0]', message: 'dependency cycle: a -> b -> c -> a' },
        ],
      },
    });
    await expectNothingStored(dagId);
  });

  it('a schema error names the field', async () => {
    const dagId = uniqueDagId('e2e_schema');
    const r = await api.request('POST', '/v1/dags', {
      dagId,
      tasks: [{ taskId: 't', operator: 'http', config: {} }],
    });
    expect(r).toMatchObject({
      status: 400,
      body: { details: [{ path: '$.tasks[0].config.url' }] },
    });
    await expectNothingStored(dagId);
  });

  it('a body over 1 MB', async () => {
    const dagId = uniqueDagId('e2e_big');
    const body = JSON.stringify({
      dagId,
      description: 'x'.repeat(1024 * 1024),
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    const r = await api.request('POST', '/v1/dags', body);
    expect(r.status).toBe(413);
    expect(r.body).toEqual({ error: expect.stringContaining('1048576-byte limit') });
    await expectNothingStored(dagId);
  });

  it('an unknown DAG or run', async () => {
    const dagId = uniqueDagId('e2e_unknown');
    expect(await api.request('GET', `/v1/dags/${dagId}`)).toMatchObject({
      status: 404,
      body: { error: expect.stringContaining(dagId) },
    });
    expect((await api.request('POST', `/v1/dags/${dagId}/runs`, {})).status).toBe(404);
    expect((await api.request('GET', `/v1/dags/${dagId}/runs/manual__nope`)).status).toBe(404);
    await expectNothingStored(dagId);
  });

  it('a bad trigger body names the field, and creates no run', async () => {
    const dagId = uniqueDagId('e2e_trigger');
    expect(
      (await api.request('POST', '/v1/dags', { dagId, tasks: [{ taskId: 't', operator: 'noop' }] }))
        .status,
    ).toBe(201);
    const r = await api.request('POST', `/v1/dags/${dagId}/runs`, {
      conf: 'not an object',
      idempotencyKey: 'has space',
    });
    expect(r.status).toBe(400);
    expect((r.body as { details: { path: string }[] }).details.map((d) => d.path).sort()).toEqual([
      '$.conf',
      '$.idempotencyKey',
    ]);
    const runs = await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs`);
    expect(runs.body.runs).toEqual([]);
  });

  it('an unknown route is a JSON 404', async () => {
    const r = await api.request('GET', '/v1/nothing-here');
    expect(r.status).toBe(404);
  });
});
