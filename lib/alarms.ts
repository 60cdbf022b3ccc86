import { ArnFormat, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { Metric } from '../core/metric-names.ts';
import { airlessMetric } from './dashboard.ts';

export interface AlarmsProps {
  /** Queues whose messages are work that failed for good, by a name used in construct ids. */
  readonly deadLetterQueues: Readonly<Record<string, sqs.IQueue>>;
  /** Functions whose errors and throttles should page someone, by a name used in construct ids. */
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
  /** The FIFO queue of task attempts, whose oldest message should not wait long. */
  readonly taskQueue: sqs.IQueue;
  /**
   * Alarm when the task queue's oldest message is older than this. SQS counts messages in flight
   * too ("the oldest non-deleted message"), so a healthy attempt holds its message for as long as
   * it runs: keep this above the worker timeout.
   * https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html
   * @default Duration.minutes(20)
   */
  readonly oldestTaskMessageAgeThreshold?: Duration;
  /**
   * Alarm when more runs than this fail within 5 minutes.
   * @default 0 - any failed run
   */
  readonly failedRunsThreshold?: number;
  /**
   * Alarm when the reaper finds more expired leases than this within 5 minutes: attempts whose
   * worker crashed, hung or was stopped (zombies), which the reaper failed or retried.
   * @default 0 - any
   */
  readonly expiredLeasesThreshold?: number;
  /**
   * Where alarms notify. Its access policy must let CloudWatch alarms publish.
   * @default - a new topic
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * An email address to subscribe to the alarm topic (AWS sends it a confirmation first).
   * @default - no subscription
   */
  readonly alarmEmail?: string;
}

/**
 * The alarms of an Airless deployment, each notifying one SNS topic (subscribe to it to be told):
 * any message in a dead-letter queue, any Lambda error or throttle, a stream record that could not
 * be processed, a task message waiting too long, failed runs and zombie attempts over a threshold.
 * Each watches one metric (no metric math), which the local emulator supports too.
 */
export class Alarms extends Construct {
  readonly alarmTopic: sns.ITopic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    this.alarmTopic = props.alarmTopic ?? this.#createTopic();
    if (props.alarmEmail !== undefined) {
      this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }
    const action = new actions.SnsAction(this.alarmTopic);
    const alarm = (
      alarmId: string,
      metric: cloudwatch.IMetric,
      description: string,
      threshold = 0,
    ) => {
      const a = new cloudwatch.Alarm(this, alarmId, {
        metric,
        threshold,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        // No data means no messages and no invocations: nothing is wrong.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      a.addAlarmAction(action);
      this.alarms.push(a);
    };

    for (const [name, queue] of Object.entries(props.deadLetterQueues)) {
      alarm(
        `${name}Depth`,
        queue.metricApproximateNumberOfMessagesVisible({
          period: Duration.minutes(1),
          statistic: cloudwatch.Stats.MAXIMUM,
        }),
        `Messages in the ${name} dead-letter queue: work that failed for good. Inspect and redrive.`,
      );
    }
    // Stream records that can never be processed: each failed its run with a reason, and the
    // shard moved on (lambdas/advance.ts). Someone should know why.
    alarm(
      'UnprocessableRecords',
      airlessMetric(Metric.UnprocessableRecords),
      'A stream record could not be processed for good: its run was failed with the reason (see the advance function log).',
    );
    // Run events that the bus refused for good (deleted, access denied): the runs went on, but
    // whoever routes alerts on those events was not told (app/events.ts).
    alarm(
      'EventsNotPublished',
      airlessMetric(Metric.EventsNotPublished),
      'Run events were refused for good by the EventBridge bus (deleted, or access denied): ' +
        'rules on them saw nothing (see the advance function log).',
    );
    for (const [name, fn] of Object.entries(props.functions)) {
      alarm(
        `${name}Errors`,
        fn.metricErrors({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
        `The ${name} function failed in the last 5 minutes.`,
      );
      alarm(
        `${name}Throttles`,
        fn.metricThrottles({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
        `The ${name} function was throttled in the last 5 minutes: the account's or the ` +
          "function's concurrency ran out.",
      );
    }

    const maxAge = props.oldestTaskMessageAgeThreshold ?? Duration.minutes(20);
    alarm(
      'OldestTaskMessageAge',
      props.taskQueue.metricApproximateAgeOfOldestMessage({
        period: Duration.minutes(1),
        statistic: cloudwatch.Stats.MAXIMUM,
      }),
      `A task message has been in the task queue for more than ${maxAge.toHumanString()} ` +
        '(waiting, or in flight): workers are not keeping up, cannot run, or hang.',
      maxAge.toSeconds(),
    );
    const failedRuns = props.failedRunsThreshold ?? 0;
    alarm(
      'FailedRuns',
      airlessMetric(Metric.RunFailed),
      failedRuns === 0
        ? 'A run failed in the last 5 minutes.'
        : `More than ${failedRuns} runs failed in the last 5 minutes.`,
      failedRuns,
    );
    const expiredLeases = props.expiredLeasesThreshold ?? 0;
    alarm(
      'ExpiredLeases',
      airlessMetric(Metric.ExpiredLeases),
      `The reaper found ${expiredLeases === 0 ? 'an expired lease' : `more than ${expiredLeases} expired leases`} ` +
        'in the last 5 minutes: workers that crashed, hung or were stopped mid-attempt (see the worker log).',
      expiredLeases,
    );
  }

  #createTopic(): sns.Topic {
    const topic = new sns.Topic(this, 'Topic', { enforceSSL: true });
    // The topic policy that enforceSSL creates replaces the default one, so CloudWatch alarms
    // (of this account only) need an explicit grant to publish.
    // https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-use-cases.html
    const stack = Stack.of(this);
    topic.grants.publish(
      new iam.ServicePrincipal('cloudwatch.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: {
            'aws:SourceArn': stack.formatArn({
              service: 'cloudwatch',
              resource: 'alarm',
              resourceName: '*',
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          },
        },
      }),
    );
    Validations.of(topic).acknowledge({
      id: 'AwsSolutions-SNS2',
      reason:
        'Alarm notifications carry no confidential data, and CloudWatch alarms cannot publish to ' +
        'a topic encrypted with the AWS managed key (a customer managed key would be needed): ' +
        'https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services',
    });
    return topic;
  }
}
