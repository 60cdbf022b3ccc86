import { readFileSync } from 'node:fs';
import { App, type CfnElement, Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { METRIC_NAMESPACE, Metric } from '../../core/metric-names.ts';
import type { AirlessSchedulerProps } from '../../lib/airless-scheduler.ts';
import { AirlessStack } from '../../lib/airless-stack.ts';

const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));

function synth(props: AirlessSchedulerProps = {}) {
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new AirlessStack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
    ...props,
  });
  const template = Template.fromStack(stack);
  const id = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  return { stack, template, id };
}

describe('alarms, by default', () => {
  let s: ReturnType<typeof synth>;
  beforeAll(() => {
    s = synth();
  });
  const topic = () => ({ Ref: s.id(s.stack.scheduler.alarms.alarmTopic) });
  const airless = (metricName: string) => ({
    Namespace: METRIC_NAMESPACE,
    MetricName: metricName,
    Dimensions: [{ Name: 'service', Value: 'airless' }],
  });

  it.each(['api', 'registrar', 'worker', 'advance', 'trigger', 'retrier', 'reaper'] as const)(
    'alarms on any throttle of %s over 5 minutes',
    (name) => {
      s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/Lambda',
        MetricName: 'Throttles',
        Dimensions: [
          { Name: 'FunctionName', Value: { Ref: s.id(s.stack.scheduler.functions[name]) } },
        ],
        Statistic: 'Sum',
        Period: 300,
        ComparisonOperator: 'GreaterThanThreshold',
        Threshold: 0,
        AlarmActions: [topic()],
      });
    },
  );

  it('alarms when the oldest task message is older than the worker timeout plus 5 minutes', () => {
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateAgeOfOldestMessage',
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [s.id(s.stack.scheduler.taskQueue), 'QueueName'] },
        },
      ],
      Statistic: 'Maximum',
      Period: 60,
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 20 * 60,
      AlarmActions: [topic()],
    });
  });

  it('alarms on any failed run over 5 minutes', () => {
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      ...airless(Metric.RunFailed),
      Statistic: 'Sum',
      Period: 300,
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      AlarmActions: [topic()],
    });
  });

  it('alarms on any expired lease that the reaper found (a zombie attempt) over 5 minutes', () => {
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      ...airless(Metric.ExpiredLeases),
      Statistic: 'Sum',
      Period: 300,
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      AlarmActions: [topic()],
    });
  });

  it('every alarm notifies the topic, treats no data as fine, and watches one metric', () => {
    // The Fargate workers' step scaling has alarms of its own, whose actions are its policies.
    const all = Object.values(s.template.findResources('AWS::CloudWatch::Alarm'));
    const scaling = all.filter((a) =>
      JSON.stringify(a.Properties.AlarmActions).includes('TaskCountTarget'),
    );
    expect(scaling).toHaveLength(2);
    const alarms = all.filter((a) => !scaling.includes(a));
    expect(alarms).toHaveLength(s.stack.scheduler.alarms.alarms.length);
    // 5 dead-letter queues, 8 functions x (errors, throttles), unprocessable records, run events
    // the bus refused, the oldest task message, failed runs, expired leases.
    expect(alarms).toHaveLength(5 + 16 + 5);
    for (const a of alarms) {
      expect(a.Properties.AlarmActions).toEqual([topic()]);
      expect(a.Properties.TreatMissingData).toBe('notBreaching');
      // One metric, no metric math: what MiniStack's CloudFormation supports too.
      expect(a.Properties.Metrics).toBeUndefined();
      expect(a.Properties.MetricName).toEqual(expect.any(String));
    }
  });

  it('alarms only on Airless metrics that the handlers emit', () => {
    const alarms = Object.values(s.template.findResources('AWS::CloudWatch::Alarm'));
    for (const a of alarms.filter((x) => x.Properties.Namespace === METRIC_NAMESPACE)) {
      expect(Object.values(Metric)).toContain(a.Properties.MetricName);
    }
  });

  it('subscribes no one to the topic', () => {
    s.template.resourceCountIs('AWS::SNS::Subscription', 0);
  });

  it('outputs the topic, so that others can subscribe', () => {
    const outputs = s.template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.AlarmTopicArn?.Value).toEqual(topic());
  });
});

describe('alarms, with props', () => {
  let s: ReturnType<typeof synth>;
  beforeAll(() => {
    s = synth({
      alarmEmail: 'oncall@example.com',
      oldestTaskMessageAgeAlarmThreshold: Duration.minutes(30),
      failedRunsAlarmThreshold: 5,
      expiredLeasesAlarmThreshold: 2,
    });
  });

  it('subscribes alarmEmail to the alarm topic', () => {
    s.template.resourceCountIs('AWS::SNS::Subscription', 1);
    s.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'oncall@example.com',
      TopicArn: { Ref: s.id(s.stack.scheduler.alarms.alarmTopic) },
    });
  });

  it.each([
    ['ApproximateAgeOfOldestMessage', 30 * 60],
    [Metric.RunFailed, 5],
    [Metric.ExpiredLeases, 2],
  ])('takes the threshold of %s from the props', (metricName, threshold) => {
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: metricName,
      Threshold: threshold,
    });
    s.template.allResourcesProperties(
      'AWS::CloudWatch::Alarm',
      Match.not(Match.objectLike({ MetricName: metricName, Threshold: Match.not(threshold) })),
    );
  });
});
