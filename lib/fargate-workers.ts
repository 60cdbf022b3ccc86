import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledgeWildcard } from './nag.ts';

/** The Docker build context: the repository root, trimmed by its .dockerignore. */
const repoRoot = dirname(dirname(fileURLToPath(import.meta.url)));

/**
 * The longest a Fargate container may take to stop after SIGTERM before it is killed.
 * https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html
 */
const STOP_TIMEOUT_SECONDS = 120;

export interface FargateWorkersProps {
  /** The FIFO queue of the task attempts that the `fargate` executor runs. */
  readonly queue: sqs.IQueue;
  /**
   * The worker's environment (table name, queue URLs, bucket names ...), passed as plain
   * container environment: it must hold no secret. The task role supplies AWS credentials.
   */
  readonly environment: Record<string, string>;
  /**
   * The VPC to run the tasks in.
   * @default - a new VPC over two Availability Zones with public subnets only and no NAT
   * gateway, so that it costs nothing while no task runs; tasks reach AWS APIs through a
   * public IP address and the internet gateway.
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Where the tasks run.
   * @default - the public subnets of the VPC created here; the private subnets with egress
   * (behind a NAT gateway) of a VPC given as `vpc`
   */
  readonly subnets?: ec2.SubnetSelection;
  /**
   * Whether each task gets a public IP address. A task in a public subnet needs one to reach
   * AWS APIs; a task in a private subnet cannot have one.
   * @default - true in the VPC created here, false in a VPC given as `vpc`
   */
  readonly assignPublicIp?: boolean;
  /**
   * The most tasks that run at once.
   * @default 10
   */
  readonly maxTasks?: number;
  /**
   * CPU units of one task (1024 is one vCPU); with `memoryMiB`, one of the combinations that
   * Fargate offers: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
   * @default 1024
   */
  readonly cpu?: number;
  /**
   * Memory of one task, in MiB.
   * @default 2048
   */
  readonly memoryMiB?: number;
  /**
   * How many task attempts one task runs at once (the worker's WORKER_CONCURRENCY). Scaling
   * starts one task for every this many messages.
   * @default 4
   */
  readonly concurrency?: number;
  /**
   * How long the worker logs (and the flow logs of the VPC created here) are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the log groups when they leave the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly logRemovalPolicy?: RemovalPolicy;
}

/**
 * The ECS side of the `fargate` executor: an ECS service whose tasks run the queue worker
 * (workers/fargate.ts) and take task attempts from `queue`. Application Auto Scaling sizes the
 * service from the queue's depth, down to no task at all when the queue is empty.
 *
 * Grant the worker what its attempts touch (table, buckets, other queues) through
 * `taskRole`; it can already consume `queue`.
 */
export class FargateWorkers extends Construct {
  /** The name of the worker container in the task definition. */
  static readonly CONTAINER_NAME = 'worker';

  readonly vpc: ec2.IVpc;
  readonly cluster: ecs.Cluster;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly container: ecs.ContainerDefinition;
  /** The name of the worker container, for task overrides and log queries. */
  readonly containerName: string;
  /** The role of the worker itself: grant it the table, buckets and queues it uses. */
  readonly taskRole: iam.IRole;
  readonly service: ecs.FargateService;
  readonly securityGroup: ec2.SecurityGroup;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: FargateWorkersProps) {
    super(scope, id);
    const maxTasks = props.maxTasks ?? 10;
    const concurrency = props.concurrency ?? 4;
    for (const [name, value] of [
      ['maxTasks', maxTasks],
      ['concurrency', concurrency],
    ] as const) {
      if (!Number.isInteger(value) || value < 1) {
        throw new Error(`FargateWorkers: ${name} must be a whole number of at least 1: ${value}`);
      }
    }
    const retention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const removalPolicy = props.logRemovalPolicy ?? RemovalPolicy.RETAIN;

    const ownVpc = props.vpc === undefined;
    // The casts only quiet exactOptionalPropertyTypes, which CDK's types predate.
    this.vpc = props.vpc ?? (this.createVpc(retention, removalPolicy) as ec2.IVpc);
    const subnets =
      props.subnets ??
      (ownVpc
        ? { subnetType: ec2.SubnetType.PUBLIC }
        : { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS });

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc: this.vpc,
      // CPU and memory use and task counts per service and task, which the worker's own logs
      // lack (cdk-nag AwsSolutions-ECS4).
      // https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/ContainerInsights.html
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      cpu: props.cpu ?? 1024,
      memoryLimitMiB: props.memoryMiB ?? 2048,
      // The image is built for amd64 (below); the two must agree or the task fails to start.
      runtimePlatform: {
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        cpuArchitecture: ecs.CpuArchitecture.X86_64,
      },
    });
    this.taskRole = this.taskDefinition.taskRole;

    this.logGroup = new logs.LogGroup(this, 'LogGroup', { retention, removalPolicy });
    this.containerName = FargateWorkers.CONTAINER_NAME;
    this.container = this.taskDefinition.addContainer('Worker', {
      containerName: this.containerName,
      image: ecs.ContainerImage.fromAsset(repoRoot, {
        file: 'workers/Dockerfile',
        platform: Platform.LINUX_AMD64,
      }),
      essential: true,
      readonlyRootFilesystem: true,
      // The unprivileged user of the node image (workers/Dockerfile says the same).
      user: 'node',
      // ECS sends SIGTERM when a task stops (scale-in, deployment) and SIGKILL this long after.
      // The worker stops taking messages and gives running attempts WORKER_STOP_SECONDS to
      // finish, then exits on its own before the kill; an attempt cut short is retried once its
      // lease lapses. https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-task-lifecycle.html
      stopTimeout: Duration.seconds(STOP_TIMEOUT_SECONDS),
      environment: {
        ...props.environment,
        WORKER_CONCURRENCY: String(concurrency),
        WORKER_STOP_SECONDS: String(STOP_TIMEOUT_SECONDS - 10),
      },
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: 'worker' }),
    });
    // Scratch space under the read-only root file system: a bind mount on the task's ephemeral
    // storage, which the image's VOLUME makes writable by `node`.
    // https://docs.aws.amazon.com/AmazonECS/latest/developerguide/bind-mounts.html
    this.taskDefinition.addVolume({ name: 'tmp' });
    this.container.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });
    sqs.QueueGrants.fromQueue(props.queue).consumeMessages(this.taskRole);

    // Nothing connects to a worker: it only calls out, to AWS APIs.
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: this.vpc,
      description: 'Airless Fargate workers: no inbound traffic, outbound to AWS APIs',
      allowAllOutbound: true,
    });

    this.service = new ecs.FargateService(this, 'Service', {
      cluster: this.cluster as ecs.ICluster,
      taskDefinition: this.taskDefinition,
      // No desiredCount: Application Auto Scaling owns the task count. A count in the template
      // would be sent again with every update of the service (a new image, say) and reset the
      // running tasks to it; left out, CloudFormation starts the service with one task and later
      // updates keep the current count. That first task also proves the image starts (the
      // circuit breaker fails a deployment whose tasks do not); the scaling alarms stop it within
      // minutes if the queue is empty.
      // https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-ecs-service.html#cfn-ecs-service-desiredcount
      // https://github.com/aws/containers-roadmap/issues/493
      // A deployment may stop every old task before starting new ones (the work waits in the
      // queue meanwhile) and may run twice the tasks while it replaces them.
      minHealthyPercent: 0,
      maxHealthyPercent: 200,
      // A task definition whose tasks keep failing to start is rolled back rather than retried
      // forever. https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html
      circuitBreaker: { enable: true, rollback: true },
      securityGroups: [this.securityGroup],
      vpcSubnets: subnets,
      assignPublicIp: props.assignPublicIp ?? ownVpc,
    });

    this.scaleOnQueueDepth(props.queue, concurrency, maxTasks);

    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The worker environment holds resource names, queue URLs and tuning numbers, none of ' +
        'them secret: AWS credentials come from the task role. Changing one is a stack update ' +
        'that replaces the task definition, as a new image does.',
    });
    // The execution role pulls the image: ECR's GetAuthorizationToken has no resource to scope
    // it to. https://docs.aws.amazon.com/AmazonECR/latest/userguide/security_iam_id-based-policy-examples.html
    acknowledgeWildcard(
      this.taskDefinition.obtainExecutionRole(),
      '*',
      'ecr:GetAuthorizationToken, which the execution role needs to pull the worker image, ' +
        'supports no resource-level permission; its other statements name the image ' +
        'repository and the log group.',
    );
  }

  /**
   * A VPC that costs nothing while idle: public subnets only, no NAT gateway (billed by the
   * hour), so tasks take public IP addresses to reach AWS APIs, and flow logs of all traffic
   * to CloudWatch Logs, which record nothing while no task runs.
   * https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-cwl.html
   */
  private createVpc(retention: logs.RetentionDays, removalPolicy: RemovalPolicy): ec2.Vpc {
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'Public', subnetType: ec2.SubnetType.PUBLIC }],
    });
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', { retention, removalPolicy });
    vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
      trafficType: ec2.FlowLogTrafficType.ALL,
    });
    return vpc;
  }

  /**
   * Sizes the service from the queue's depth: the messages waiting plus those being run, so
   * that a task running attempts is not scaled away while its messages are in flight. Each
   * task takes `concurrency` messages, so N messages want ceil(N / concurrency) tasks, and no
   * message wants no task. That is the scale-to-zero that target tracking cannot do, so this
   * uses step scaling with exact capacities.
   *
   * SQS sends these metrics to CloudWatch once a minute, and only while the queue is active,
   * so the service starts its first task a minute or two after work arrives on an idle queue,
   * plus the task's own start; it stops the last one about a minute after the queue empties.
   * https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html
   * https://docs.aws.amazon.com/autoscaling/application/userguide/application-auto-scaling-step-scaling-policies.html
   *
   * A scale-in may stop a task that is running attempts rather than an idle one; the worker
   * then drains for WORKER_STOP_SECONDS, and attempts longer than that are retried.
   */
  private scaleOnQueueDepth(queue: sqs.IQueue, concurrency: number, maxTasks: number): void {
    const period = Duration.minutes(1);
    const depth = new cloudwatch.MathExpression({
      expression: 'visible + inFlight',
      usingMetrics: {
        visible: queue.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
        inFlight: queue.metricApproximateNumberOfMessagesNotVisible({
          period,
          statistic: 'Maximum',
        }),
      },
      label: 'Task attempts waiting or running',
      period,
    });
    const scaling = this.service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: maxTasks });
    scaling.scaleOnMetric('QueueDepth', {
      metric: depth,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      scalingSteps: queueDepthSteps(concurrency, maxTasks),
      cooldown: period,
    });
  }
}

/**
 * Exact task counts by queue depth, in a few steps: 0 tasks for no message, then 1, 2, 4, 8 ...
 * tasks, and `maxTasks` beyond. Each step covers the depths that its task count can take at
 * once, so a depth gets at least ceil(depth / concurrency) tasks and at most twice that.
 * Bounds sit halfway between whole message counts, so that no depth falls on a bound, whichever
 * side of it CloudWatch and Application Auto Scaling count as inside.
 */
function queueDepthSteps(concurrency: number, maxTasks: number): appscaling.ScalingInterval[] {
  const steps: appscaling.ScalingInterval[] = [{ upper: 0.5, change: 0 }];
  let tasks = 0;
  while (tasks < maxTasks) {
    const next = Math.min(Math.max(1, tasks * 2), maxTasks);
    steps.push({ lower: tasks * concurrency + 0.5, change: next });
    tasks = next;
  }
  return steps;
}
