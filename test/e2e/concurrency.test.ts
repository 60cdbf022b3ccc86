import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, uniqueDagId, waitForRun } from './stack.ts';

interface Runs {
  runs: { runId: string; status: string; logicalDate: string }[];
}

describe('maxActiveRuns', () => {
  it('holds: with a limit of 1, three triggered runs run one at a time, in order', async () => {
    const dagId = uniqueDagId('e2e_max');
    await api.request('POST', '/v1/dags', {
      dagId,
      maxActiveRuns: 1,
      tasks: [{ taskId: 'work', operator: 'noop', config: { sleepSeconds: 2 } }],
    });
    const ids: string[] = [];
    for (const key of ['a', 'b', 'c']) {
      const r = await api.request<{ runId: string; status: string }>(
        'POST',
        `/v1/dags/${dagId}/runs`,
        {
          idempotencyKey: key,
        },
      );
      ids.push(r.body.runId);
    }
    // Watch until all are done: never two running at once.
    let maxRunning = 0;
    const done = await waitFor(
      async () => {
        const runs = (await api.request<Runs>('GET', `/v1/dags/${dagId}/runs`)).body.runs;
        maxRunning = Math.max(maxRunning, runs.filter((r) => r.status === 'running').length);
        return runs;
      },
      (runs) => runs.length === 3 && runs.every((r) => r.status === 'success'),
      { timeoutMs: 90_000, intervalMs: 250, what: `the three runs of ${dagId} to succeed` },
    );
    expect(done.map((r) => r.status)).toEqual(['success', 'success', 'success']);
    expect(maxRunning).toBe(1);
    const views = await Promise.all(ids.map((id) => waitForRun(dagId, id)));
    const starts = views.map((v) => new Date(v.startTime ?? '').getTime());
    const ends = views.map((v) => new Date(v.endTime ?? '').getTime());
    // Each run started after the one before it ended.
    expect(starts[1]).toBeGreaterThanOrEqual(ends[0] as number);
    expect(starts[2]).toBeGreaterThanOrEqual(ends[1] as number);
  });
});
