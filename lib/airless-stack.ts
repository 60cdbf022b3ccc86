import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { AirlessScheduler, type AirlessSchedulerProps } from './airless-scheduler.ts';

export interface AirlessStackProps extends StackProps, AirlessSchedulerProps {}

/** One Airless deployment, with the outputs that the CLI, scripts and tests look up. */
export class AirlessStack extends Stack {
  readonly scheduler: AirlessScheduler;

  constructor(scope: Construct, id: string, props: AirlessStackProps = {}) {
    super(scope, id, props);
    this.scheduler = new AirlessScheduler(this, 'Scheduler', props);
    const s = this.scheduler;
    const outputs: Record<string, string> = {
      ApiUrl: s.api.url,
      ApiId: s.httpApi.apiId,
      DagsBucketName: s.dagsBucket.bucketName,
      DataBucketName: s.dataBucket.bucketName,
      TableName: s.table.tableName,
      TaskQueueUrl: s.taskQueue.queueUrl,
      TaskDeadLetterQueueUrl: s.taskDeadLetterQueue.queueUrl,
      RetryTimerQueueUrl: s.retryTimers.queue.queueUrl,
      DashboardName: s.dashboard.dashboardName,
      AlarmTopicArn: s.alarms.alarmTopic.topicArn,
    };
    for (const [name, value] of Object.entries(outputs)) new CfnOutput(this, name, { value });
  }
}
