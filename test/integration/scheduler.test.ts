import { GetScheduleCommand } from '@aws-sdk/client-scheduler';
import { beforeEach, describe, expect, it } from 'vitest';
import { EventBridgeScheduleRegistry, scheduleName } from '../../adapters/aws/scheduler.ts';
import { compileSchedule, nextRuns } from '../../core/cron/index.ts';
import { NotFoundError } from '../../core/errors.ts';
import { createScheduleGroup, localClients, unique } from '../../localstack/resources.ts';

let registry: EventBridgeScheduleRegistry;
let group: string;
const target = {
  arn: 'arn:aws:lambda:us-east-1:000000000000:function:airless-trigger',
  roleArn: 'arn:aws:iam::000000000000:role/airless-scheduler',
  deadLetterArn: 'arn:aws:sqs:us-east-1:000000000000:airless-schedule-dlq',
};

beforeEach(async () => {
  group = await createScheduleGroup();
  registry = new EventBridgeScheduleRegistry(localClients().scheduler, {
    groupName: group,
    target,
  });
});

function compiled(cron: string, tz: string) {
  const c = compileSchedule(cron, tz);
  if (!c.ok) throw new Error(JSON.stringify(c.issues));
  return c;
}

describe('EventBridge Scheduler registry', () => {
  it('creates one schedule per DAG with the compiled expression, time zone, retry policy and DLQ', async () => {
    const dagId = unique('daily_sales');
    const c = compiled('30 2 * * *', 'America/New_York');
    await registry.put({ dagId, expression: c.expression, timezone: c.timezone, enabled: true });
    const raw = await localClients().scheduler.send(
      new GetScheduleCommand({ Name: scheduleName(dagId), GroupName: group }),
    );
    expect(raw).toMatchObject({
      ScheduleExpression: 'cron(30 2 * * ? *)',
      ScheduleExpressionTimezone: 'America/New_York',
      State: 'ENABLED',
      FlexibleTimeWindow: { Mode: 'OFF' },
      Target: {
        Arn: target.arn,
        RoleArn: target.roleArn,
        RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 20 },
        DeadLetterConfig: { Arn: target.deadLetterArn },
      },
    });
    expect(JSON.parse(raw.Target?.Input ?? '{}')).toEqual({
      dagId,
      scheduledTime: '<aws.scheduler.scheduled-time>',
    });
    // What the core predicts is what is registered: the same expression and zone.
    const spec = await registry.get(dagId);
    expect(spec).toEqual({
      dagId,
      expression: c.expression,
      timezone: 'America/New_York',
      enabled: true,
    });
    expect(
      nextRuns(c.spec, spec?.timezone ?? '', new Date('2026-03-07T00:00:00Z'), 2),
    ).toHaveLength(2);
  });

  it('updates, pauses, resumes and deletes', async () => {
    const dagId = unique('dag');
    await registry.put({ dagId, expression: 'cron(0 0 * * ? *)', timezone: 'UTC', enabled: true });
    await registry.put({
      dagId,
      expression: 'cron(0 9 ? * 2-6 *)',
      timezone: 'Europe/London',
      enabled: true,
    });
    expect(await registry.get(dagId)).toMatchObject({
      expression: 'cron(0 9 ? * 2-6 *)',
      timezone: 'Europe/London',
    });
    await registry.setEnabled(dagId, false);
    expect(await registry.get(dagId)).toMatchObject({
      enabled: false,
      expression: 'cron(0 9 ? * 2-6 *)',
    });
    await registry.setEnabled(dagId, true);
    expect((await registry.get(dagId))?.enabled).toBe(true);
    await registry.delete(dagId);
    expect(await registry.get(dagId)).toBeUndefined();
    await registry.delete(dagId);
    await expect(registry.setEnabled(dagId, true)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('names schedules within the 64-character limit, distinctly', () => {
    const a = `${'x'.repeat(100)}a`;
    const b = `${'x'.repeat(100)}b`;
    expect(scheduleName('short')).toBe('short');
    expect(scheduleName(a)).toHaveLength(64);
    expect(scheduleName(a)).not.toBe(scheduleName(b));
    expect(scheduleName(a)).toMatch(/^[0-9a-zA-Z_.-]+$/);
  });
});
