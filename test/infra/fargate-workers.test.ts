import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, type CfnElement, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { FargateWorkers, type FargateWorkersProps } from '../../lib/fargate-workers.ts';
import { TaskQueue } from '../../lib/task-queue.ts';

/** The ECS side of the `fargate` executor: workers that scale with their queue, down to none. */

const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));

const environment = { TABLE_NAME: 'airless-state', TASK_QUEUE_URL: 'https://sqs.example/q.fifo' };

/**
 * A stack with the fargate task queue and its workers, as a caller builds it, with cdk-nag
 * registered so that synthesis fails on any finding. `withVpc` passes a VPC of the caller's.
 */
function synth(props: Partial<FargateWorkersProps> = {}, withVpc = false) {
  const app = new App({ context });
  const stack = new Stack(app, 'Fargate');
  const tasks = new TaskQueue(stack, 'FargateQueue');
  Validations.of(tasks.deadLetterQueue).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: 'A test fixture: the dead-letter queue of the task queue needs none of its own.',
  });
  const vpc = withVpc
    ? (new ec2.Vpc(stack, 'CallerVpc', { maxAzs: 2, flowLogs: { All: {} } }) as ec2.IVpc)
    : undefined;
  const workers = new FargateWorkers(stack, 'Workers', {
    queue: tasks.queue,
    environment,
    ...(vpc ? { vpc } : {}),
    ...props,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  const template = Template.fromStack(stack);
  const id = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  return { app, stack, tasks, workers, template, id };
}

type Synth = ReturnType<typeof synth>;

/** The one container definition of the workers' task definition. */
function container(s: Synth): Record<string, unknown> {
  const defs = s.template.findResources('AWS::ECS::TaskDefinition');
  const [def] = Object.values(defs);
  expect(Object.keys(defs)).toHaveLength(1);
  const containers = def?.Properties.ContainerDefinitions as Array<Record<string, unknown>>;
  expect(containers).toHaveLength(1);
  return containers[0] as Record<string, unknown>;
}

interface AlarmMetric {
  Id: string;
  Expression?: string;
  ReturnData?: boolean;
  MetricStat?: unknown;
}

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

interface Adjustment {
  MetricIntervalLowerBound?: number;
  MetricIntervalUpperBound?: number;
  ScalingAdjustment: number;
}

/**
 * The task count that the scaling alarms and policies set for a queue depth, read back from
 * the template the way CloudWatch and Application Auto Scaling apply them: an alarm's
 * comparison picks the policy, and the step whose bounds (relative to the alarm's threshold)
 * hold the depth gives the exact capacity.
 */
function tasksFor(s: Synth, depth: number): number | undefined {
  const policies = s.template.findResources('AWS::ApplicationAutoScaling::ScalingPolicy');
  for (const alarm of Object.values(s.template.findResources('AWS::CloudWatch::Alarm'))) {
    const p = alarm.Properties;
    const fires =
      p.ComparisonOperator === 'LessThanOrEqualToThreshold'
        ? depth <= p.Threshold
        : p.ComparisonOperator === 'GreaterThanOrEqualToThreshold' && depth >= p.Threshold;
    if (!fires) continue;
    const policy = policies[p.AlarmActions[0].Ref];
    const config = policy?.Properties.StepScalingPolicyConfiguration;
    expect(config.AdjustmentType).toBe('ExactCapacity');
    const offset = depth - p.Threshold;
    const step = (config.StepAdjustments as Adjustment[]).find(
      (a) =>
        (a.MetricIntervalLowerBound ?? -Infinity) <= offset &&
        offset < (a.MetricIntervalUpperBound ?? Infinity),
    );
    return step?.ScalingAdjustment;
  }
  return undefined;
}

describe('FargateWorkers, by default', () => {
  let s: Synth;
  beforeAll(() => {
    s = synth();
  });

  it('has no unacknowledged AwsSolutions finding, and synthesizes with cdk-nag registered', () => {
    const report = new AwsSolutionsChecks(s.app).validateScope(s.workers);
    const findings = report.violations.flatMap((v) =>
      v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath}`),
    );
    expect(findings).toEqual([]);
    expect(() => s.app.synth({ force: true })).not.toThrow();
  });

  it('acknowledges only the findings it explains, each with a specific reason', () => {
    const acknowledged: Record<string, string> = {};
    const visit = (c: IConstruct) => {
      for (const m of c.node.metadata) {
        if (m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY) {
          Object.assign(acknowledged, m.data);
        }
      }
      for (const child of c.node.children) visit(child);
    };
    visit(s.workers);
    // CDK's own FlowLog acknowledges two CloudFormation-Validate rules; only cdk-nag's count.
    const nag = Object.entries(acknowledged).filter(([rule]) => rule.includes('AwsSolutions-'));
    expect(nag.map(([rule]) => rule).sort()).toEqual([
      'Annotation::AwsSolutions-ECS2',
      'Annotation::AwsSolutions-IAM5[Resource::*]',
    ]);
    for (const [, reason] of nag) expect(reason.length).toBeGreaterThan(40);
  });

  it('runs the worker image as `node` on a read-only root file system, with /tmp writable', () => {
    expect(container(s)).toMatchObject({
      Name: 'worker',
      Essential: true,
      ReadonlyRootFilesystem: true,
      User: 'node',
      MountPoints: [{ ContainerPath: '/tmp', SourceVolume: 'tmp', ReadOnly: false }],
    });
    expect(s.workers.containerName).toBe('worker');
    s.template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      RequiresCompatibilities: ['FARGATE'],
      Cpu: '1024',
      Memory: '2048',
      RuntimePlatform: { CpuArchitecture: 'X86_64', OperatingSystemFamily: 'LINUX' },
      Volumes: [{ Name: 'tmp' }],
    });
  });

  it('gives the worker the 120-second Fargate maximum to stop, and tells it to exit sooner', () => {
    const c = container(s);
    expect(c.StopTimeout).toBe(120);
    expect(c.Environment).toEqual(
      expect.arrayContaining([
        { Name: 'WORKER_STOP_SECONDS', Value: '110' },
        { Name: 'WORKER_CONCURRENCY', Value: '4' },
        { Name: 'TABLE_NAME', Value: 'airless-state' },
        { Name: 'TASK_QUEUE_URL', Value: 'https://sqs.example/q.fifo' },
      ]),
    );
    expect(c.Environment).toHaveLength(4);
  });

  it('sends the container logs to its own log group, kept for a month', () => {
    expect(container(s).LogConfiguration).toEqual({
      LogDriver: 'awslogs',
      Options: {
        'awslogs-group': { Ref: s.id(s.workers.logGroup) },
        'awslogs-stream-prefix': 'worker',
        'awslogs-region': { Ref: 'AWS::Region' },
      },
    });
    s.template.hasResource('AWS::Logs::LogGroup', {
      Properties: { RetentionInDays: 30 },
      DeletionPolicy: 'Retain',
    });
  });

  it('builds the image from workers/Dockerfile for amd64, from a context without bulk', () => {
    const images = s.app
      .synth()
      .artifacts.filter((a) => a instanceof cxapi.AssetManifestArtifact)
      .flatMap((a) => Object.entries(a.contents.dockerImages ?? {}));
    expect(images).toHaveLength(1);
    const [hash, image] = images[0] as (typeof images)[number];
    expect(image.source).toMatchObject({
      dockerFile: 'workers/Dockerfile',
      platform: 'linux/amd64',
    });
    // The task definition runs that image, from the bootstrap's container asset repository.
    expect(JSON.stringify(container(s).Image)).toContain(
      `cdk-hnb659fds-container-assets-\${AWS::AccountId}-\${AWS::Region}:${hash}`,
    );
    // The staged build context: what .dockerignore leaves of the repository root.
    const staged = join(s.app.outdir, image.source.directory ?? '');
    expect(existsSync(join(staged, 'workers', 'Dockerfile'))).toBe(true);
    expect(existsSync(join(staged, 'package-lock.json'))).toBe(true);
    for (const bulk of ['node_modules', 'cdk.out', '.git', 'dist', '.airless', 'test']) {
      expect(existsSync(join(staged, bulk)), bulk).toBe(false);
    }
  });

  it('leaves the task count to scaling on Fargate, and may replace every task at once', () => {
    // A DesiredCount in the template would reset the running count on every service update.
    s.template.hasResourceProperties('AWS::ECS::Service', {
      LaunchType: 'FARGATE',
      DesiredCount: Match.absent(),
      DeploymentConfiguration: {
        MinimumHealthyPercent: 0,
        MaximumPercent: 200,
        DeploymentCircuitBreaker: { Enable: true, Rollback: true },
      },
      NetworkConfiguration: {
        AwsvpcConfiguration: { AssignPublicIp: 'ENABLED', SecurityGroups: Match.anyValue() },
      },
    });
  });

  it('lets nothing in: the security group has no ingress rule', () => {
    s.template.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
    const group =
      s.template.findResources('AWS::EC2::SecurityGroup')[s.id(s.workers.securityGroup)];
    expect(group?.Properties.SecurityGroupIngress).toBeUndefined();
  });

  it('turns on Container Insights for the cluster', () => {
    s.template.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
    });
  });

  it('scales the task count between 0 and 10', () => {
    s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
      ScalableDimension: 'ecs:service:DesiredCount',
      MinCapacity: 0,
      MaxCapacity: 10,
    });
  });

  it('scales on the messages waiting plus those in flight, per minute', () => {
    const alarms = Object.values(s.template.findResources('AWS::CloudWatch::Alarm'));
    expect(alarms).toHaveLength(2);
    const queue = {
      Name: 'QueueName',
      Value: { 'Fn::GetAtt': [s.id(s.tasks.queue), 'QueueName'] },
    };
    for (const alarm of alarms) {
      const metrics = alarm.Properties.Metrics as AlarmMetric[];
      expect(metrics).toHaveLength(3);
      const [sum] = metrics.filter((m) => m.Expression);
      const byId = Object.fromEntries(
        metrics.filter((m) => m.MetricStat).map((m) => [m.Id, m.MetricStat]),
      );
      // The alarm compares the sum, made of exactly the two queue metrics, each per minute.
      expect(sum?.ReturnData ?? true).toBe(true);
      expect(sum?.Expression).toBe('visible + inFlight');
      expect(byId).toEqual({
        visible: {
          Metric: expect.objectContaining({
            MetricName: 'ApproximateNumberOfMessagesVisible',
            Dimensions: [queue],
          }),
          Period: 60,
          Stat: 'Maximum',
        },
        inFlight: {
          Metric: expect.objectContaining({
            MetricName: 'ApproximateNumberOfMessagesNotVisible',
            Dimensions: [queue],
          }),
          Period: 60,
          Stat: 'Maximum',
        },
      });
    }
  });

  it('runs no task for an empty queue, and one task per 4 messages up to 10 tasks', () => {
    expect(tasksFor(s, 0)).toBe(0);
    expect(tasksFor(s, 1)).toBe(1);
    expect(tasksFor(s, 4)).toBe(1);
    expect(tasksFor(s, 5)).toBe(2);
    for (let depth = 1; depth <= 100; depth++) {
      const needed = Math.min(10, Math.ceil(depth / 4));
      const tasks = tasksFor(s, depth) ?? Number.NaN;
      expect(tasks, `${depth} messages`).toBeGreaterThanOrEqual(needed);
      expect(tasks, `${depth} messages`).toBeLessThanOrEqual(Math.min(10, 2 * needed));
    }
    expect(tasksFor(s, 10_000)).toBe(10);
  });

  it('lets the task role consume the queue, and no other queue', () => {
    const statements = Object.values(s.template.findResources('AWS::IAM::Policy'))
      .filter((p) =>
        p.Properties.Roles.some((r: { Ref: string }) => r.Ref === s.id(s.workers.taskRole)),
      )
      .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
    expect(statements).toContainEqual(
      expect.objectContaining({
        Effect: 'Allow',
        Action: expect.arrayContaining([
          'sqs:ReceiveMessage',
          'sqs:DeleteMessage',
          'sqs:ChangeMessageVisibility',
        ]),
        Resource: { 'Fn::GetAtt': [s.id(s.tasks.queue), 'Arn'] },
      }),
    );
    const sqsActions = (st: Statement) => [st.Action].flat().some((a) => a.startsWith('sqs:'));
    for (const st of statements.filter(sqsActions)) {
      expect([st.Resource].flat()).not.toContain('*');
    }
  });

  it('creates a VPC of public subnets in two zones with no NAT gateway, and logs its flows', () => {
    s.template.resourceCountIs('AWS::EC2::NatGateway', 0);
    s.template.resourceCountIs('AWS::EC2::Subnet', 2);
    s.template.allResourcesProperties('AWS::EC2::Subnet', { MapPublicIpOnLaunch: true });
    s.template.hasResourceProperties('AWS::EC2::FlowLog', {
      ResourceType: 'VPC',
      TrafficType: 'ALL',
      LogDestinationType: 'cloud-watch-logs',
    });
  });
});

describe('FargateWorkers in a VPC of the caller, sized by the caller', () => {
  let s: Synth;
  beforeAll(() => {
    s = synth({ maxTasks: 3, concurrency: 2, cpu: 2048, memoryMiB: 4096 }, true);
  });

  it('runs in the private subnets with egress, without a public IP address', () => {
    const privateSubnets = s.stack.node
      .findChild('CallerVpc')
      .node.children.filter((c) => c instanceof ec2.PrivateSubnet)
      .map((c) => ({ Ref: s.id(c) }));
    expect(privateSubnets).toHaveLength(2);
    s.template.hasResourceProperties('AWS::ECS::Service', {
      NetworkConfiguration: {
        AwsvpcConfiguration: { AssignPublicIp: 'DISABLED', Subnets: privateSubnets },
      },
    });
    // Its own VPC, flow log included, is not made.
    s.template.resourceCountIs('AWS::EC2::VPC', 1);
    expect(s.workers.vpc).toBe(s.stack.node.findChild('CallerVpc'));
  });

  it('scales between 0 and maxTasks, one task per `concurrency` messages', () => {
    s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
      MinCapacity: 0,
      MaxCapacity: 3,
    });
    expect(container(s).Environment).toContainEqual({ Name: 'WORKER_CONCURRENCY', Value: '2' });
    expect([0, 1, 2, 3, 4, 5, 6, 7, 100].map((d) => tasksFor(s, d))).toEqual([
      0, 1, 1, 2, 2, 3, 3, 3, 3,
    ]);
  });

  it('sizes the task as asked', () => {
    s.template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      Cpu: '2048',
      Memory: '4096',
    });
  });
});

it.each([
  ['maxTasks', { maxTasks: 0 }],
  ['concurrency', { concurrency: 1.5 }],
])('refuses a %s that is not a whole number of at least 1', (name, props) => {
  const stack = new Stack(new App({ context }));
  const { queue } = new TaskQueue(stack, 'Queue');
  expect(() => new FargateWorkers(stack, 'Workers', { queue, environment, ...props })).toThrow(
    new RegExp(`${name} must be a whole number`),
  );
});
