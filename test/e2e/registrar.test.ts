import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, putDagFile, uniqueDagId } from './stack.ts';

interface DagList {
  dags: { dagId: string; latestVersion: number; schedule: unknown; nextRunTimes: string[] }[];
  nextToken?: string;
}
interface ImportErrors {
  importErrors: {
    key: string;
    dagId?: string;
    errors: { path: string; message: string }[];
    time: string;
  }[];
}

/** Every page of the list: an emulator used before holds DAGs from earlier runs too. */
async function allDags(): Promise<DagList['dags']> {
  const dags: DagList['dags'] = [];
  let token: string | undefined;
  for (let page = 0; page < 100; page++) {
    const query = token ? `&nextToken=${encodeURIComponent(token)}` : '';
    const { body } = await api.request<DagList>('GET', `/v1/dags?limit=100${query}`);
    dags.push(...body.dags);
    token = body.nextToken;
    if (!token) break;
  }
  return dags;
}

describe('DAG files uploaded under dags/', () => {
  it('a valid file becomes a DAG, with its schedule', async () => {
    const dagId = uniqueDagId('e2e_upload');
    await putDagFile(
      `dags/${dagId}.json`,
      JSON.stringify({
        dagId,
        schedule: { cron: '30 2 * * *', timezone: 'America/New_York' },
        tasks: [{ taskId: 'only', operator: 'noop' }],
      }),
    );
    const dags = await waitFor(allDags, (d) => d.some((x) => x.dagId === dagId), {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: `DAG ${dagId} registered from its file`,
    });
    const dag = dags.find((x) => x.dagId === dagId);
    expect(dag).toMatchObject({
      latestVersion: 1,
      schedule: {
        cron: '30 2 * * *',
        timezone: 'America/New_York',
        expression: 'cron(30 2 * * ? *)',
      },
    });
    expect(dag?.nextRunTimes).toHaveLength(5);
    const one = await api.request('GET', `/v1/dags/${dagId}`);
    expect(one).toMatchObject({ status: 200, body: { dagId, paused: false } });
  });

  it('an invalid file appears only in import errors, with a reason that names the problem', async () => {
    const dagId = uniqueDagId('e2e_cyclic');
    const key = `dags/${dagId}.json`;
    await putDagFile(
      key,
      JSON.stringify({
        dagId,
        tasks: [
          { taskId: 'a', operator: 'noop', dependsOn: ['b'] },
          { taskId: 'b', operator: 'noop', dependsOn: ['a'] },
        ],
      }),
    );
    const errors = await waitFor(
      async () => (await api.request<ImportErrors>('GET', '/v1/import-errors')).body.importErrors,
      (e) => e.some((x) => x.key === key),
      { timeoutMs: 30_000, intervalMs: 500, what: `an import error for ${key}` },
    );
    expect(errors.find((x) => x.key === key)).toMatchObject({
      dagId,
      errors: [
        { path: '$.tasks[0].dependsOn[0]', message: expect.stringMatching(/^dependency cycle: /) },
      ],
    });
    expect((await allDags()).map((d) => d.dagId)).not.toContain(dagId);
    expect((await api.request('GET', `/v1/dags/${dagId}`)).status).toBe(404);
  });
});
