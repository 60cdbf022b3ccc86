import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { AirlessScheduler, type AirlessSchedulerProps } from './airless-scheduler.ts';
import { EmulatorTestTargets } from './emulator-test-targets.ts';

export interface AirlessStackProps extends StackProps, AirlessSchedulerProps {}

/** One Airless deployment, with the outputs that the CLI, scripts and tests look up. */
export class AirlessStack extends Stack {
  readonly scheduler: AirlessScheduler;

  constructor(scope: Construct, id: string, props: AirlessStackProps = {}) {
    super(scope, id, props);
    // The end-to-end tests' state machine and ECS task definition: emulator deploys only.
    const ctx = (k: string) => String(this.node.tryGetContext(k) ?? '');
    const targets =
      ctx('airless:emulator') === 'true' && ctx('airless:testTargets') === 'true'
        ? new EmulatorTestTargets(this, 'TestTargets')
        : undefined;
    this.scheduler = new AirlessScheduler(this, 'Scheduler', {
      ...props,
      ...(targets
        ? {
            invokableStateMachines: [...(props.invokableStateMachines ?? []), targets.stateMachine],
            runnableTaskDefinitions: [
              ...(props.runnableTaskDefinitions ?? []),
              targets.taskDefinition,
            ],
          }
        : {}),
    });
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
      // What an external Fargate worker process needs (npm start runs them on the emulator).
      WorkerEnvironment: this.toJsonString(s.workerEnvironment),
      ...(s.fargateTaskQueue ? { FargateTaskQueueUrl: s.fargateTaskQueue.queueUrl } : {}),
      ...(targets
        ? {
            TestStateMachineArn: targets.stateMachine.stateMachineArn,
            TestClusterName: targets.cluster.ref,
            TestTaskDefinitionArn: targets.taskDefinition.taskDefinitionArn,
          }
        : {}),
    };
    for (const [name, value] of Object.entries(outputs)) new CfnOutput(this, name, { value });
  }
}
