import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, uniqueDagId } from './stack.ts';

/**
 * Backfills through the API on the local stack (DESIGN.md sections 5 and 11). Their creation in
 * chunks, the reaper's part and maxActiveRuns are tested in test/unit/backfills.test.ts; the CLI's
 * `airless backfill` in test/e2e/cli.test.ts.
 */
interface Backfill {
  backfillId: string;
  runs: number;
  created: number;
  done: number;
  status: string;
}

describe('backfills', () => {
  it('create the runs of the scheduled times in range, only the missing ones, and end with them', async () => {
    const dagId = uniqueDagId('e2e_backfill');
    const created = await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '0 6 * * *', timezone: 'Europe/Paris' },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    expect(created.status).toBe(201);
    // 06:00 in Paris is 05:00 UTC in March: the 3rd, 4th and 5th.
    const first = await api.request<Backfill>('POST', `/v1/dags/${dagId}/backfills`, {
      from: '2026-03-03T00:00:00Z',
      to: '2026-03-05T23:59:59Z',
    });
    expect(first.status, first.text).toBe(201);
    expect(first.body).toMatchObject({ runs: 3, created: 3 });
    // Overlapping: the 5th exists, the 6th and 7th do not.
    const second = await api.request<Backfill>('POST', `/v1/dags/${dagId}/backfills`, {
      from: '2026-03-05T00:00:00Z',
      to: '2026-03-07T05:00:00Z',
    });
    expect(second.body).toMatchObject({ runs: 3, created: 2 });
    const runs = await api.request<{ runs: { runId: string; logicalDate: string }[] }>(
      'GET',
      `/v1/dags/${dagId}/runs?limit=100`,
    );
    expect(runs.body.runs.map((r) => r.logicalDate).sort()).toEqual(
      [3, 4, 5, 6, 7].map((d) => `2026-03-0${d}T05:00:00.000Z`),
    );
    const ended = await waitFor(
      async () =>
        (
          await api.request<Backfill>(
            'GET',
            `/v1/dags/${dagId}/backfills/${second.body.backfillId}`,
          )
        ).body,
      (b) => b.status !== 'running',
      { timeoutMs: 90_000, intervalMs: 500, what: 'the backfill to end' },
    );
    expect(ended).toMatchObject({ runs: 3, created: 2, done: 3, status: 'success' });
    // Repeated: nothing new.
    const again = await api.request<Backfill>('POST', `/v1/dags/${dagId}/backfills`, {
      from: '2026-03-03T00:00:00Z',
      to: '2026-03-07T05:00:00Z',
    });
    expect(again.body).toMatchObject({ runs: 5, created: 0 });
  });

  it('refuses bad ranges and unknown backfills, naming the field, and writes nothing', async () => {
    const dagId = uniqueDagId('e2e_backfill_bad');
    await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '* * * * *' },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    const cases: [object, string][] = [
      [{ from: '2026-03-05T00:00:00Z', to: '2026-03-01T00:00:00Z' }, '$.to'],
      [{ from: '2026-03-05', to: '2026-03-06T00:00:00Z' }, '$.from'],
      [{ from: '2026-03-01T00:00:00Z' }, '$.to'],
      // Every minute for a year: past the 10,000-run limit.
      [{ from: '2025-01-01T00:00:00Z', to: '2026-01-01T00:00:00Z' }, '$.to'],
    ];
    for (const [body, path] of cases) {
      const res = await api.request<{ details: { path: string }[] }>(
        'POST',
        `/v1/dags/${dagId}/backfills`,
        body,
      );
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.details.map((d) => d.path)).toContain(path);
    }
    expect(
      (await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs`)).body.runs,
    ).toEqual([]);
    expect((await api.request('GET', `/v1/dags/${dagId}/backfills/bf_nope`)).status).toBe(404);
    expect(
      (
        await api.request('POST', `/v1/dags/${uniqueDagId('none')}/backfills`, {
          from: '2026-03-01T00:00:00Z',
          to: '2026-03-02T00:00:00Z',
        })
      ).status,
    ).toBe(404);
  });

  it('catchup on: registering creates the run of each scheduled time since startDate, once', async () => {
    const minute = 60_000;
    // The minute may turn before the server reads its clock: `now` is a lower bound of its own.
    const now = Math.floor(Date.now() / minute) * minute;
    const start = new Date(now - 3 * minute).toISOString();
    const dagId = uniqueDagId('e2e_catchup');
    const doc = {
      dagId,
      schedule: { cron: '* * * * *', catchup: true, startDate: start },
      tasks: [{ taskId: 't', operator: 'noop' }],
    };
    expect((await api.request('POST', '/v1/dags', doc)).status).toBe(201);
    const missed = [0, 1, 2, 3].map((m) => new Date(now - (3 - m) * minute).toISOString());
    const caught = async () =>
      (
        await api.request<{ runs: { logicalDate: string }[] }>(
          'GET',
          `/v1/dags/${dagId}/runs?limit=100`,
        )
      ).body.runs
        .map((r) => r.logicalDate)
        .filter((d) => d <= new Date(now).toISOString())
        .sort();
    // The minute may turn during the test: the schedule's own runs come after these.
    expect(await caught()).toEqual(missed);
    // A new version, a pause and an unpause: nothing twice.
    expect((await api.request('POST', '/v1/dags', { ...doc, description: 'v2' })).status).toBe(201);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: false });
    expect(await caught()).toEqual(missed);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
  });

  it('catchup off: registering runs only the latest missed time', async () => {
    const minute = 60_000;
    const before = Math.floor(Date.now() / minute) * minute;
    const dagId = uniqueDagId('e2e_catchup_off');
    const res = await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '* * * * *', startDate: new Date(before - 10 * minute).toISOString() },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    expect(res.status).toBe(201);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    const runs = (
      await api.request<{ runs: { logicalDate: string }[] }>('GET', `/v1/dags/${dagId}/runs`)
    ).body.runs.map((r) => Date.parse(r.logicalDate));
    // The latest time at registration (the minute may have turned since `before`), and none of
    // the nine before it.
    expect(runs.length).toBeGreaterThanOrEqual(1);
    expect(runs.filter((t) => t < before)).toEqual([]);
  });
  it('catchup off: pause, then unpause, runs only the latest missed time', async () => {
    const minute = 60_000;
    const dagId = uniqueDagId('e2e_catchup_unpause');
    const tasks = [{ taskId: 't', operator: 'noop' }];
    // A first version that misses nothing soon, paused at once.
    expect(
      (
        await api.request('POST', '/v1/dags', {
          dagId,
          schedule: { cron: '0 0 1 1 *' },
          tasks,
        })
      ).status,
    ).toBe(201);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    // While paused, a version whose schedule has missed ten minutes: nothing is created yet.
    const before = Math.floor(Date.now() / minute) * minute;
    const v2 = await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '* * * * *', startDate: new Date(before - 10 * minute).toISOString() },
      tasks,
    });
    expect(v2.status).toBe(201);
    const runs = async () =>
      (
        await api.request<{ runs: { logicalDate: string; runId: string }[] }>(
          'GET',
          `/v1/dags/${dagId}/runs?limit=100`,
        )
      ).body.runs.map((r) => Date.parse(r.logicalDate));
    expect(await runs()).toEqual([]);
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: false });
    const after = await runs();
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
    // The latest missed time (the minute may have turned since \`before\`), none of the ten before.
    expect(after.length).toBeGreaterThanOrEqual(1);
    expect(after.filter((t) => t < before)).toEqual([]);
    expect(after.every((t) => t % minute === 0)).toBe(true);
  });
});
