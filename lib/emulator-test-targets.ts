import { RemovalPolicy } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledgeWildcard } from './nag.ts';

/**
 * What the end-to-end tests' DAGs start through the deferred operators, deployed next to the
 * scheduler on the emulator only (`airless:testTargets=true` with `airless:emulator=true`):
 * - a Standard state machine that, by its input's `mode`, succeeds with its input and
 *   `result: {ok: true}`, fails (`Airless.TestFailure`), or waits `waitSeconds` first;
 * - an ECS cluster and a Fargate task definition (the emulator runs no container: its tasks
 *   stay RUNNING until stopped).
 */
export class EmulatorTestTargets extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly cluster: ecs.CfnCluster;
  readonly taskDefinition: ecs.FargateTaskDefinition;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    const definition = {
      StartAt: 'Route',
      States: {
        Route: {
          Type: 'Choice',
          Choices: [
            { Variable: '$.mode', StringEquals: 'fail', Next: 'Fail' },
            { Variable: '$.mode', StringEquals: 'wait', Next: 'Wait' },
          ],
          Default: 'Done',
        },
        Wait: { Type: 'Wait', SecondsPath: '$.waitSeconds', Next: 'Done' },
        Fail: { Type: 'Fail', Error: 'Airless.TestFailure', Cause: 'the input asked to fail' },
        Done: { Type: 'Pass', Result: { ok: true }, ResultPath: '$.result', End: true },
      },
    };
    const logGroup = new logs.LogGroup(this, 'StateMachineLogs', {
      removalPolicy: RemovalPolicy.DESTROY,
      retention: logs.RetentionDays.ONE_DAY,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromString(JSON.stringify(definition)),
      stateMachineType: sfn.StateMachineType.STANDARD,
      logs: { destination: logGroup, level: sfn.LogLevel.ALL },
      tracingEnabled: true,
    });
    acknowledgeWildcard(
      this.stateMachine,
      '*',
      'An emulator-only test fixture; CDK grants log delivery and X-Ray, which take no resource.',
    );

    this.cluster = new ecs.CfnCluster(this, 'Cluster', {
      clusterSettings: [{ name: 'containerInsights', value: 'enabled' }],
    });
    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      cpu: 256,
      memoryLimitMiB: 512,
    });
    this.taskDefinition.addContainer('job', {
      image: ecs.ContainerImage.fromRegistry('public.ecr.aws/docker/library/busybox:stable'),
      command: ['true'],
      essential: true,
      logging: ecs.LogDrivers.awsLogs({
        streamPrefix: 'job',
        logGroup: new logs.LogGroup(this, 'TaskLogs', {
          removalPolicy: RemovalPolicy.DESTROY,
          retention: logs.RetentionDays.ONE_DAY,
        }),
      }),
    });
  }
}
