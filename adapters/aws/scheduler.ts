import { createHash } from 'node:crypto';
import {
  CreateScheduleCommand,
  type CreateScheduleCommandInput,
  DeleteScheduleCommand,
  GetScheduleCommand,
  type SchedulerClient,
  UpdateScheduleCommand,
} from '@aws-sdk/client-scheduler';
import { NotFoundError } from '../../core/errors.ts';
import type { ScheduleRegistry, ScheduleSpec } from '../../core/ports.ts';
import { aws } from './errors.ts';

export interface ScheduleTarget {
  /** The function that creates a run for each scheduled time. */
  readonly arn: string;
  /** The role EventBridge Scheduler assumes to invoke it. */
  readonly roleArn: string;
  /** An SQS queue for invocations that still fail after the retry policy. */
  readonly deadLetterArn?: string;
}

export interface SchedulerConfig {
  readonly groupName: string;
  readonly target: ScheduleTarget;
}

/**
 * Schedule names are at most 64 characters of [0-9a-zA-Z-_.]; DAG ids may be 128. Long ids keep
 * a readable prefix and a hash that keeps them distinct.
 */
export function scheduleName(dagId: string): string {
  if (dagId.length <= 64) return dagId;
  return `${dagId.slice(0, 47)}-${createHash('sha256').update(dagId).digest('hex').slice(0, 16)}`;
}

/** One EventBridge Scheduler schedule per DAG, in one schedule group. */
export class EventBridgeScheduleRegistry implements ScheduleRegistry {
  constructor(
    private readonly client: SchedulerClient,
    private readonly config: SchedulerConfig,
  ) {}

  #input(spec: ScheduleSpec): CreateScheduleCommandInput {
    const { target } = this.config;
    return {
      Name: scheduleName(spec.dagId),
      GroupName: this.config.groupName,
      Description: `Airless DAG ${spec.dagId}`,
      ScheduleExpression: spec.expression,
      ScheduleExpressionTimezone: spec.timezone,
      State: spec.enabled ? 'ENABLED' : 'DISABLED',
      // Fire at the scheduled minute: the run's logical date is the scheduled time.
      FlexibleTimeWindow: { Mode: 'OFF' },
      Target: {
        Arn: target.arn,
        RoleArn: target.roleArn,
        // The scheduled time, not the delivery time, names the run; a retried or late delivery
        // carries the same value and so creates no second run.
        // https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-context-attributes.html
        Input: JSON.stringify({
          dagId: spec.dagId,
          scheduledTime: '<aws.scheduler.scheduled-time>',
        }),
        RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 20 },
        ...(target.deadLetterArn ? { DeadLetterConfig: { Arn: target.deadLetterArn } } : {}),
      },
    };
  }

  async put(spec: ScheduleSpec): Promise<void> {
    const input = this.#input(spec);
    try {
      await aws('create schedule', () => this.client.send(new CreateScheduleCommand(input)));
    } catch (e) {
      if (
        (e as Error).name !== 'ConflictException' &&
        !(e as Error).message?.includes('already exists')
      )
        throw e;
      // UpdateSchedule replaces the whole schedule, as CreateSchedule would.
      await aws('update schedule', () => this.client.send(new UpdateScheduleCommand(input)));
    }
  }

  async get(dagId: string): Promise<ScheduleSpec | undefined> {
    try {
      const s = await aws('get schedule', () =>
        this.client.send(
          new GetScheduleCommand({ Name: scheduleName(dagId), GroupName: this.config.groupName }),
        ),
      );
      return {
        dagId,
        expression: s.ScheduleExpression ?? '',
        timezone: s.ScheduleExpressionTimezone ?? 'UTC',
        enabled: s.State !== 'DISABLED',
      };
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async setEnabled(dagId: string, enabled: boolean): Promise<void> {
    const current = await this.get(dagId);
    if (!current) throw new NotFoundError(`no schedule for DAG ${dagId}`);
    await aws('update schedule', () =>
      this.client.send(new UpdateScheduleCommand(this.#input({ ...current, enabled }))),
    );
  }

  async delete(dagId: string): Promise<void> {
    try {
      await aws('delete schedule', () =>
        this.client.send(
          new DeleteScheduleCommand({
            Name: scheduleName(dagId),
            GroupName: this.config.groupName,
          }),
        ),
      );
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }
}
