import { InvokeCommand, LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import {
  GetScheduleCommand,
  ListScheduleGroupsCommand,
  SchedulerClient,
} from '@aws-sdk/client-scheduler';
import { describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { scheduleName } from '../../adapters/aws/scheduler.ts';
import { compileSchedule } from '../../core/cron/index.ts';
import { waitFor } from '../poll.ts';
import { api, uniqueDagId } from './stack.ts';

interface Runs {
  runs: { runId: string; status: string; logicalDate: string }[];
}

const scheduler = new SchedulerClient(clientConfig());

async function registered(dagId: string) {
  const groups = (await scheduler.send(new ListScheduleGroupsCommand({}))).ScheduleGroups ?? [];
  const group = groups.find((g) => g.Name?.startsWith('Airless'))?.Name;
  return scheduler.send(new GetScheduleCommand({ Name: scheduleName(dagId), GroupName: group }));
}

describe('cron on EventBridge Scheduler', () => {
  it('registers what the core computes: the same expression and time zone', async () => {
    const dagId = uniqueDagId('e2e_tz');
    const schedule = { cron: '30 2 * * 1-5', timezone: 'America/New_York' };
    expect(
      (
        await api.request('POST', '/v1/dags', {
          dagId,
          schedule,
          tasks: [{ taskId: 't', operator: 'noop' }],
        })
      ).status,
    ).toBe(201);
    const compiled = compileSchedule(schedule.cron, schedule.timezone);
    if (!compiled.ok) throw new Error('bad test schedule');
    const s = await registered(dagId);
    expect([s.ScheduleExpression, s.ScheduleExpressionTimezone, s.State]).toEqual([
      'cron(30 2 ? * 2-6 *)',
      'America/New_York',
      'ENABLED',
    ]);
    expect(s.ScheduleExpression).toBe(compiled.expression);
    // Pause disables the schedule; unpause enables it; delete removes it.
    expect((await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true })).status).toBe(200);
    expect((await registered(dagId)).State).toBe('DISABLED');
    expect((await api.request('PATCH', `/v1/dags/${dagId}`, { paused: false })).status).toBe(200);
    expect((await registered(dagId)).State).toBe('ENABLED');
    expect((await api.request('DELETE', `/v1/dags/${dagId}`)).status).toBe(204);
    await expect(registered(dagId)).rejects.toThrow();
    expect((await api.request('GET', `/v1/dags/${dagId}`)).status).toBe(404);
  });

  it('a repeated or late delivery of one scheduled time creates no second run', async () => {
    const dagId = uniqueDagId('e2e_redeliver');
    await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '30 6 * * *', timezone: 'UTC' },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    // What EventBridge Scheduler sends, with the scheduled time substituted, delivered three
    // times (a retry, a duplicate, a late one) to the trigger function.
    const lambda = new LambdaClient(clientConfig());
    const fns = (await lambda.send(new ListFunctionsCommand({}))).Functions ?? [];
    const trigger = fns.find((f) => f.FunctionName?.includes('TriggerFunction'))?.FunctionName;
    const payload = new TextEncoder().encode(
      JSON.stringify({ dagId, scheduledTime: '2026-03-09T06:30:00Z' }),
    );
    const results = await Promise.all(
      [0, 1, 2].map(async () => {
        const res = await lambda.send(
          new InvokeCommand({ FunctionName: trigger, Payload: payload }),
        );
        return JSON.parse(new TextDecoder().decode(res.Payload)) as {
          runId: string;
          created: boolean;
        };
      }),
    );
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.runId))).toEqual(
      new Set(['scheduled__2026-03-09T06:30:00.000Z']),
    );
    const runs = (await api.request<Runs>('GET', `/v1/dags/${dagId}/runs`)).body.runs;
    expect(runs.map((r) => r.logicalDate)).toEqual(['2026-03-09T06:30:00.000Z']);
  });

  it('a scheduled time before the schedule startDate creates no run; one after it does', async () => {
    const dagId = uniqueDagId('e2e_startdate');
    await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '30 6 * * *', timezone: 'UTC', startDate: '2099-01-01T00:00:00Z' },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    const lambda = new LambdaClient(clientConfig());
    const fns = (await lambda.send(new ListFunctionsCommand({}))).Functions ?? [];
    const trigger = fns.find((f) => f.FunctionName?.includes('TriggerFunction'))?.FunctionName;
    const fire = async (scheduledTime: string) => {
      const res = await lambda.send(
        new InvokeCommand({
          FunctionName: trigger,
          Payload: new TextEncoder().encode(JSON.stringify({ dagId, scheduledTime })),
        }),
      );
      return JSON.parse(new TextDecoder().decode(res.Payload)) as { skipped?: boolean };
    };
    expect(await fire('2026-03-09T06:30:00Z')).toMatchObject({ ok: true, skipped: true });
    expect((await api.request<Runs>('GET', `/v1/dags/${dagId}/runs`)).body.runs).toEqual([]);
    expect(await fire('2099-01-01T06:30:00Z')).toMatchObject({ ok: true, created: true });
    await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true });
  });

  it('a DAG scheduled every minute gets one run per minute, named by the scheduled minute; none after pause', async () => {
    const dagId = uniqueDagId('e2e_cron');
    // A second every-minute DAG that is never paused: its runs show when the scheduler has
    // ticked after the pause, so the test waits for ticks rather than for a fixed time.
    const controlId = uniqueDagId('e2e_cron_control');
    const everyMinute = (id: string) => ({
      dagId: id,
      schedule: { cron: '* * * * *', timezone: 'UTC' },
      tasks: [{ taskId: 'tick', operator: 'noop' }],
    });
    const list = async (id: string) =>
      (await api.request<Runs>('GET', `/v1/dags/${id}/runs?limit=100`)).body.runs;
    try {
      expect((await api.request('POST', '/v1/dags', everyMinute(dagId))).status).toBe(201);
      expect((await api.request('POST', '/v1/dags', everyMinute(controlId))).status).toBe(201);
      // Three scheduled minutes, waited for at most four and a half minutes.
      const runs = await waitFor(
        () => list(dagId),
        (r) => r.length >= 3,
        {
          timeoutMs: 270_000,
          intervalMs: 5000,
          what: `three scheduled runs of ${dagId}`,
        },
      );
      const dates = runs.map((r) => r.logicalDate).sort();
      // Every logical date is a whole minute, one run each, and they are consecutive minutes.
      expect(dates.every((d) => d.endsWith(':00.000Z'))).toBe(true);
      expect(new Set(dates).size).toBe(dates.length);
      for (let i = 1; i < dates.length; i++) {
        expect(
          new Date(dates[i] as string).getTime() - new Date(dates[i - 1] as string).getTime(),
        ).toBe(60_000);
      }
      expect(runs.map((r) => r.runId).sort()).toEqual(dates.map((d) => `scheduled__${d}`));

      expect((await api.request('PATCH', `/v1/dags/${dagId}`, { paused: true })).status).toBe(200);
      const pausedAt = Date.now();
      const atPause = (await list(dagId)).length;
      // Wait for the control DAG's run of the second whole minute after the pause: by then the
      // scheduler's tick of the first one has long been handled, for every schedule.
      const secondMinute = (Math.floor(pausedAt / 60_000) + 2) * 60_000;
      await waitFor(
        () => list(controlId),
        (r) => r.some((x) => new Date(x.logicalDate).getTime() >= secondMinute),
        {
          timeoutMs: secondMinute - Date.now() + 90_000,
          intervalMs: 5000,
          what: `a run of ${controlId} for ${new Date(secondMinute).toISOString()} or later`,
        },
      );
      const after = await list(dagId);
      // A run whose minute began just before the pause may still arrive; none for a later one.
      expect(after.length - atPause).toBeLessThanOrEqual(1);
      expect(after.filter((r) => new Date(r.logicalDate).getTime() > pausedAt)).toEqual([]);
    } finally {
      await api.request('DELETE', `/v1/dags/${controlId}`);
    }
  }, 600_000);
});
