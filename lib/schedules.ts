import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledgeWildcard } from './nag.ts';

export interface SchedulesProps {
  /** The function that every DAG schedule invokes. */
  readonly target: lambda.IFunction;
  /**
   * What happens to the schedule group, and the schedules in it, when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The EventBridge Scheduler side of Airless: one schedule group that holds a schedule per DAG
 * (created at run time by the functions granted `grantManageSchedules`), the role the
 * schedules assume to invoke the target, and the dead-letter queue for invocations that still
 * fail after the schedule's retry policy.
 */
export class Schedules extends Construct {
  readonly group: scheduler.ScheduleGroup;
  readonly role: iam.Role;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: SchedulesProps) {
    super(scope, id);
    this.group = new scheduler.ScheduleGroup(this, 'Group', {
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });

    // Only schedules of this group, in this account, may assume the role (confused deputy).
    // https://docs.aws.amazon.com/scheduler/latest/UserGuide/cross-service-confused-deputy-prevention.html
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: {
          StringEquals: {
            'aws:SourceAccount': Stack.of(this).account,
            'aws:SourceArn': this.group.scheduleGroupArn,
          },
        },
      }),
    });
    props.target.grantInvoke(this.role);
    acknowledgeWildcard(
      this.role,
      `${props.target.functionArn}:*`,
      'grantInvoke also covers the versions and aliases of the one target function.',
    );

    // Scheduler dead-letter queues must be standard queues, not FIFO.
    // https://docs.aws.amazon.com/scheduler/latest/UserGuide/configuring-schedule-dlq.html
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.deadLetterQueue.grants.sendMessages(this.role);
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself a dead-letter queue, of EventBridge Scheduler schedules.',
    });
  }

  /**
   * Lets the grantee create, update, read and delete schedules in the group, and pass the
   * schedule role to EventBridge Scheduler when it does.
   */
  grantManageSchedules(grantee: iam.IGrantable): void {
    const grants = [
      this.group.grants.readSchedules(grantee),
      this.group.grants.writeSchedules(grantee),
      this.group.grants.deleteSchedules(grantee),
    ];
    this.role.grantPassRole(grantee.grantPrincipal);
    if (!Construct.isConstruct(grantee)) return;
    const arns = new Set(grants.flatMap((g) => g.principalStatements.flatMap((s) => s.resources)));
    for (const arn of arns) {
      acknowledgeWildcard(
        grantee,
        arn,
        'Schedules are created at run time, one per DAG, so the grant names every schedule of ' +
          'this one schedule group (schedule/{group}/*).',
      );
    }
  }
}
