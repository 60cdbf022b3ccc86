import { ArnFormat, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface AlarmsProps {
  /** Queues whose messages are work that failed for good, by a name used in construct ids. */
  readonly deadLetterQueues: Readonly<Record<string, sqs.IQueue>>;
  /** Functions whose errors should page someone, by a name used in construct ids. */
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
  /**
   * Where alarms notify. Its access policy must let CloudWatch alarms publish.
   * @default - a new topic, without subscriptions
   */
  readonly alarmTopic?: sns.ITopic;
}

/**
 * An alarm for any message in a dead-letter queue and for any Lambda error, each notifying an
 * SNS topic (subscribe to it to be told).
 */
export class Alarms extends Construct {
  readonly alarmTopic: sns.ITopic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    this.alarmTopic = props.alarmTopic ?? this.#createTopic();
    const action = new actions.SnsAction(this.alarmTopic);
    const alarm = (alarmId: string, metric: cloudwatch.IMetric, description: string) => {
      const a = new cloudwatch.Alarm(this, alarmId, {
        metric,
        threshold: 0,
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
      new cloudwatch.Metric({
        namespace: 'Airless',
        metricName: 'UnprocessableRecords',
        dimensionsMap: { service: 'airless' },
        period: Duration.minutes(5),
        statistic: cloudwatch.Stats.SUM,
      }),
      'A stream record could not be processed for good: its run was failed with the reason (see the advance function log).',
    );
    for (const [name, fn] of Object.entries(props.functions)) {
      alarm(
        `${name}Errors`,
        fn.metricErrors({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
        `The ${name} function failed in the last 5 minutes.`,
      );
    }
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
