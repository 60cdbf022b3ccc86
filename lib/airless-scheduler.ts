import { fileURLToPath } from 'node:url';
import { Arn, ArnFormat, Duration, RemovalPolicy, Stack, Token, Validations } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { DynamoEventSource, SqsDlq, SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import type * as scheduler from 'aws-cdk-lib/aws-scheduler';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { GSI1, GSI2, GSI3 } from '../adapters/aws/table.ts';
import { METRIC_NAMESPACE, Metric, type MetricName } from '../core/metric-names.ts';
import { parseNetwork } from '../operators/address-guard.ts';
import {
  AirlessFunction,
  emulatorTestSettings,
  emulatorWorkerTimeout,
} from './airless-function.ts';
import { Alarms } from './alarms.ts';
import { Api } from './api.ts';
import { Buckets } from './buckets.ts';
import { airlessMetric, Dashboard } from './dashboard.ts';
import { FargateWorkers, type FargateWorkersProps } from './fargate-workers.ts';
import { acknowledgeWildcard } from './nag.ts';
import { RetryTimers } from './retry-timers.ts';
import { FailedRunNotification } from './run-events.ts';
import { Schedules } from './schedules.ts';
import { StateTable } from './state-table.ts';
import { TaskQueue } from './task-queue.ts';

export type AirlessFunctionName =
  | 'api'
  | 'registrar'
  | 'worker'
  | 'advance'
  | 'trigger'
  | 'retrier'
  | 'reaper'
  | 'complete';

/** The Fargate service's settings (lib/fargate-workers.ts); the queue and environment are ours. */
export type FargateWorkersOptions = Omit<FargateWorkersProps, 'queue' | 'environment'>;

export interface AirlessSchedulerProps {
  /**
   * For local emulators whose EventBridge Scheduler does not substitute
   * `<aws.scheduler.scheduled-time>`: the trigger then takes the schedule's latest fire time at
   * or before its invocation as the logical date. Never needed on AWS.
   * @default false
   */
  readonly emulatorScheduledTimeFallback?: boolean;
  /**
   * How API callers authenticate: `iam` (SigV4-signed requests, `execute-api:Invoke`) or
   * `none`.
   * @default 'iam'
   */
  readonly authorization?: 'iam' | 'none';
  /**
   * What happens to stateful resources (table, buckets, schedule group, log groups) when they
   * leave the stack. Use DESTROY only for throwaway stacks.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Functions that the `lambda` operator may invoke from workers.
   * @default - none
   */
  readonly invokableFunctions?: readonly lambda.IFunction[];
  /**
   * State machines (Standard) that the `stepfunctions` operator may start. Tasks naming another
   * are refused at registration. Their "Execution Status Change" events complete the tasks.
   * @default - none: the deployment has no `stepfunctions` operator
   */
  readonly invokableStateMachines?: readonly sfn.IStateMachine[];
  /**
   * Task definitions that the `ecs` operator may run (RunTask, and passing their roles). Tasks
   * naming another are refused at registration.
   * @default - none: the deployment has no `ecs` operator
   */
  readonly runnableTaskDefinitions?: readonly ecs.TaskDefinition[];
  /**
   * Where `executor: "fargate"` tasks run (DESIGN.md section 9): a Fargate service that scales
   * on its queue, to zero when idle (these options); `'external'`, the queue alone, for worker
   * processes run elsewhere (dist/fargate-worker.mjs, as `npm start` runs them on the emulator,
   * which has no container runtime); or `false`, no Fargate executor (such DAGs are refused).
   * @default - a Fargate service with the FargateWorkers defaults
   */
  readonly fargateWorkers?: FargateWorkersOptions | 'external' | false;
  /**
   * Networks (CIDRs such as `10.0.0.0/8`, `127.0.0.1/32`, `::1/128`) that the `http` operator may
   * reach although its SSRF guard refuses them by default (loopback, private, link-local and other
   * non-public addresses), and the only networks that plain `http:` URLs may reach. This is the
   * deployer's decision: no DAG can open a network. Allow as little as you need; never the
   * link-local range, which holds the instance metadata and credential endpoints.
   * @default - none: tasks reach only public addresses, over https
   */
  readonly httpAllowedNetworks?: readonly string[];
  /**
   * The most runs one backfill may create: a larger range is refused (400), to be split.
   * @default 10000
   */
  readonly maxBackfillRuns?: number;
  /**
   * Where alarms notify.
   * @default - a new SNS topic
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * An email address to subscribe to the alarm topic. AWS first sends it a confirmation request.
   * @default - no subscription
   */
  readonly alarmEmail?: string;
  /**
   * Alarm when the oldest task message is older than this. SQS counts messages in flight, so a
   * healthy attempt holds its message for as long as it runs (up to the 15-minute worker
   * timeout): keep this above that.
   * @default Duration.minutes(20)
   */
  readonly oldestTaskMessageAgeAlarmThreshold?: Duration;
  /**
   * Alarm when more runs than this fail within 5 minutes. To be told of each failed run of one
   * DAG, route its events instead.
   * @default 0 - any failed run
   */
  readonly failedRunsAlarmThreshold?: number;
  /**
   * Alarm when the reaper finds more expired leases than this within 5 minutes (attempts whose
   * worker crashed, hung or was stopped).
   * @default 0 - any
   */
  readonly expiredLeasesAlarmThreshold?: number;
  /**
   * The name of the CloudWatch dashboard.
   * @default - a name that CloudFormation generates
   */
  readonly dashboardName?: string;
  /**
   * The EventBridge bus that run events (`Airless Run Status Change`, `Airless Task Failed`,
   * source `airless`) are put on.
   * @default - the account's default bus
   */
  readonly eventBus?: events.IEventBus;
}

/** Task instance statuses that end an attempt for good, so that downstream tasks may be ready. */
const FINISHED = ['success', 'failed', 'upstream_failed', 'skipped', 'cancelled'];
/** Run ends, which are published as run events (core/events.ts). */
const RUN_ENDED = ['success', 'failed', 'cancelled'];

/**
 * Airless: an Airflow-style DAG scheduler on serverless AWS. DAG files land in S3 or come
 * through the HTTP API; EventBridge Scheduler triggers runs; DynamoDB holds all state; its
 * stream advances runs; an SQS FIFO queue feeds task attempts to Lambda workers.
 */
export class AirlessScheduler extends Construct {
  readonly table: dynamodb.Table;
  readonly taskQueue: sqs.Queue;
  readonly taskDeadLetterQueue: sqs.Queue;
  /** The queue of `fargate` task attempts, unless the Fargate executor is off. */
  readonly fargateTaskQueue: sqs.Queue | undefined;
  readonly fargateTaskDeadLetterQueue: sqs.Queue | undefined;
  /** The Fargate service, unless the Fargate workers are external or off. */
  readonly fargateWorkers: FargateWorkers | undefined;
  /** The environment a Fargate worker process needs (lambdas/runtime.ts), for external workers. */
  readonly workerEnvironment: Readonly<Record<string, string>>;
  readonly dagsBucket: s3.Bucket;
  readonly dataBucket: s3.Bucket;
  readonly scheduleGroup: scheduler.ScheduleGroup;
  readonly schedules: Schedules;
  /** Retry timers: failed attempts wait out their backoff here. */
  readonly retryTimers: RetryTimers;
  /**
   * Where the advance function's stream source reports batches it gave up on: a description of
   * each (shard and sequence numbers), not the records themselves.
   */
  readonly advanceFailureQueue: sqs.Queue;
  readonly functions: Readonly<Record<AirlessFunctionName, lambda.Function>>;
  readonly api: Api;
  readonly httpApi: apigw.HttpApi;
  readonly alarms: Alarms;
  /** The CloudWatch dashboard: runs, tasks, queues, functions, table throttles, repairs. */
  readonly dashboard: Dashboard;
  /** The bus that run events go to. */
  readonly eventBus: events.IEventBus;

  constructor(scope: Construct, id: string, props: AirlessSchedulerProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    // Construct ids ApiFunction, RegistrarFunction, ...; handlers in lambdas/{name}.ts.
    const fn = (name: AirlessFunctionName, options: { timeout: Duration; memorySize?: number }) =>
      new AirlessFunction(this, `${name[0]?.toUpperCase()}${name.slice(1)}Function`, {
        entry: fileURLToPath(new URL(`../lambdas/${name}.ts`, import.meta.url)),
        ...options,
        logRemovalPolicy: removalPolicy,
      });
    // The emulator's test deploy may shorten it (airless:workerTimeoutSeconds), so that a test
    // can show a Lambda task cut at its limit and a Fargate task that is not, in a minute or two.
    const workerTimeout = emulatorWorkerTimeout(this) ?? Duration.minutes(15);
    const api = fn('api', { timeout: Duration.seconds(30), memorySize: 512 });
    const registrar = fn('registrar', { timeout: Duration.seconds(60) });
    const worker = fn('worker', { timeout: workerTimeout, memorySize: 1024 });
    const advance = fn('advance', { timeout: Duration.minutes(5) });
    const trigger = fn('trigger', { timeout: Duration.seconds(60) });
    const retrier = fn('retrier', { timeout: Duration.seconds(60) });
    const reaper = fn('reaper', { timeout: Duration.minutes(2) });
    const complete = fn('complete', { timeout: Duration.seconds(60) });
    this.functions = {
      api: api.function,
      registrar: registrar.function,
      worker: worker.function,
      advance: advance.function,
      trigger: trigger.function,
      retrier: retrier.function,
      reaper: reaper.function,
      complete: complete.function,
    };

    const table = new StateTable(this, 'StateTable', { removalPolicy });
    // A message whose worker died comes back after the queue's visibility timeout: that is the
    // repair of a success whose readiness was not advanced (app/tasks.ts). The emulator's test
    // deploy, which shortens the worker's timeout, sets the visibility to it, the least Lambda
    // accepts, so that its fault tests see the repair within a minute.
    const tasks = new TaskQueue(this, 'TaskQueue', {
      workerTimeout,
      ...(emulatorWorkerTimeout(this) ? { visibilityTimeout: workerTimeout } : {}),
    });
    const buckets = new Buckets(this, 'Buckets', { removalPolicy });
    const timers = new RetryTimers(this, 'RetryTimers');
    this.retryTimers = timers;
    const schedules = new Schedules(this, 'Schedules', { target: trigger.function, removalPolicy });
    const advanceFailures = new sqs.Queue(this, 'AdvanceFailureQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.table = table;
    this.taskQueue = tasks.queue;
    this.taskDeadLetterQueue = tasks.deadLetterQueue;
    this.dagsBucket = buckets.dagsBucket;
    this.dataBucket = buckets.dataBucket;
    this.schedules = schedules;
    this.scheduleGroup = schedules.group;
    this.advanceFailureQueue = advanceFailures;
    const { queue } = tasks;
    const { dagsBucket, dataBucket } = buckets;

    // The Fargate executor's queue. Its workers set each message's visibility themselves (a
    // minute on receive, renewed at every heartbeat: adapters/aws/task-source.ts), and a
    // hand-back by a stopping worker is a receive too, so it allows more receives before the
    // dead-letter queue.
    const fargateMode = props.fargateWorkers ?? {};
    const fargateTasks =
      fargateMode === false
        ? undefined
        : new TaskQueue(this, 'FargateTaskQueue', {
            visibilityTimeout: Duration.minutes(5),
            maxReceiveCount: 10,
          });
    this.fargateTaskQueue = fargateTasks?.queue;
    this.fargateTaskDeadLetterQueue = fargateTasks?.deadLetterQueue;
    const sendQueues = [queue, ...(fargateTasks ? [fargateTasks.queue] : [])];
    const stateMachines = props.invokableStateMachines ?? [];
    const taskDefinitions = props.runnableTaskDefinitions ?? [];

    // Every handler parses the same environment at cold start and reads what it needs.
    const base: Record<string, string> = {
      TABLE_NAME: table.tableName,
      QUEUE_URL: queue.queueUrl,
      RETRY_QUEUE_URL: timers.queue.queueUrl,
      DAGS_BUCKET: dagsBucket.bucketName,
      DATA_BUCKET: dataBucket.bucketName,
      ...(fargateTasks
        ? {
            FARGATE_QUEUE_URL: fargateTasks.queue.queueUrl,
            FARGATE_DLQ_URL: fargateTasks.deadLetterQueue.queueUrl,
          }
        : {}),
      // What the deferred operators may start: every function validates DAGs or runs them.
      ...(stateMachines.length > 0
        ? { STATE_MACHINES: stateMachines.map((m) => m.stateMachineArn).join(',') }
        : {}),
      ...(taskDefinitions.length > 0
        ? { TASK_DEFINITIONS: taskDefinitions.map((t) => t.taskDefinitionArn).join(',') }
        : {}),
      ...(props.maxBackfillRuns !== undefined
        ? { BACKFILL_MAX_RUNS: String(props.maxBackfillRuns) }
        : {}),
    };
    const scheduling = {
      SCHEDULE_GROUP: schedules.group.scheduleGroupName,
      TRIGGER_FUNCTION_ARN: trigger.function.functionArn,
      SCHEDULER_ROLE_ARN: schedules.role.roleArn,
      SCHEDULE_DLQ_ARN: schedules.deadLetterQueue.queueArn,
    };
    // The trigger function gets no scheduling variables: its own ARN would be a circular
    // reference, and it never manages schedules.
    for (const f of [api, registrar, worker, advance, trigger, retrier, reaper, complete]) {
      const env = [trigger, retrier, reaper, complete].includes(f)
        ? base
        : { ...base, ...scheduling };
      for (const [k, v] of Object.entries(env)) f.function.addEnvironment(k, v);
    }

    const httpAllowedNetworks = props.httpAllowedNetworks ?? [];
    for (const cidr of httpAllowedNetworks) {
      // A token (a VPC's CIDR block) is checked when the worker starts instead.
      if (!Token.isUnresolved(cidr)) {
        try {
          parseNetwork(cidr);
        } catch (e) {
          throw new Error(`httpAllowedNetworks: ${(e as Error).message}`);
        }
      }
    }
    if (httpAllowedNetworks.length > 0) {
      // Read once at cold start by lambdas/runtime.ts and given to the http operator.
      worker.function.addEnvironment('HTTP_ALLOWED_NETWORKS', httpAllowedNetworks.join(','));
    }

    if (props.emulatorScheduledTimeFallback) {
      trigger.function.addEnvironment('SCHEDULED_TIME_FALLBACK', 'latest-fire-time');
    }

    // api: the whole REST API.
    table.grantState(api);
    for (const q of sendQueues) q.grants.sendMessages(api);
    dagsBucket.grants.readWrite(api);
    dataBucket.grants.readWrite(api);
    schedules.grantManageSchedules(api);

    // registrar: validates uploaded DAG files, stores versions, puts schedules.
    table.grantState(registrar);
    dagsBucket.grants.read(registrar);
    dataBucket.grants.readWrite(registrar);
    schedules.grantManageSchedules(registrar);
    // Created and removed: a removed DAG file removes its DAG, as in Airflow.
    for (const event of [s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED]) {
      dagsBucket.addEventNotification(event, new s3n.LambdaDestination(registrar.function), {
        prefix: 'dags/',
        suffix: '.json',
      });
    }

    // worker: claims and runs task attempts, writes logs and artifacts, and advances readiness
    // from its own successes: it sends the tasks that became ready (app/advance.ts).
    table.grantState(worker);
    dataBucket.grants.readWrite(worker);
    timers.queue.grants.sendMessages(worker);
    for (const q of sendQueues) q.grants.sendMessages(worker);
    // A message that is not a task message goes to the dead-letter queue at its first receive.
    tasks.deadLetterQueue.grants.sendMessages(worker);
    worker.function.addEnvironment('TASK_DLQ_URL', tasks.deadLetterQueue.queueUrl);
    for (const target of props.invokableFunctions ?? []) {
      target.grantInvoke(worker);
      acknowledgeWildcard(
        worker,
        `${target.functionArn}:*`,
        'grantInvoke also covers the versions and aliases of a function the lambda operator may call.',
      );
    }
    worker.function.addEventSource(
      new SqsEventSource(queue, {
        // The most a FIFO event source mapping takes at once.
        batchSize: 10,
        // Failed messages are retried alone, not with the batch: the worker reports only the
        // records that failed (every attempt is its own message group, so there is no order to
        // keep between them; see lambdas/worker.ts).
        // https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
        reportBatchItemFailures: true,
      }),
    );

    // advance: finished task instances make their downstream tasks ready; run ends and failed
    // attempts are put on the bus as run events.
    this.eventBus =
      props.eventBus ?? events.EventBus.fromEventBusName(this, 'DefaultBus', 'default');
    this.eventBus.grantPutEventsTo(advance.function);
    advance.function.addEnvironment('EVENT_BUS_NAME', this.eventBus.eventBusName);
    table.grantState(advance);
    for (const q of sendQueues) q.grants.sendMessages(advance);
    dataBucket.grants.read(advance);
    advance.function.addEventSource(
      // The cast only quiets exactOptionalPropertyTypes, which CDK's types predate.
      new DynamoEventSource(table as dynamodb.ITable, {
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: 100,
        // A record that keeps failing holds back its shard: every later record of the shard
        // (other runs' readiness too) waits behind it. With bisection and
        // partial batch responses, 3 retries are enough to isolate it; then, or once it is an
        // hour old, it goes to the failure queue (a pointer to the record, which its alarm
        // reports) and the shard moves on. An hour outlasts any throttling or brief outage a
        // retry should wait out, and stays well inside the stream's 24-hour retention.
        // https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html
        // https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html#services-dynamodb-errors
        bisectBatchOnError: true,
        reportBatchItemFailures: true,
        retryAttempts: 3,
        maxRecordAge: Duration.hours(1),
        onFailure: new SqsDlq(advanceFailures),
        // Only transitions of a task instance into a finished status that nobody advanced inline
        // can make tasks ready here, and
        // only the creation of a run too large for one transaction asks for its task instances
        // to be written; filtering here saves the invocations (the handler still checks).
        // Filtered-out records are dropped, not retried. Filters are ORed.
        // https://docs.aws.amazon.com/lambda/latest/dg/with-ddb-filtering.html
        filters: [
          lambda.FilterCriteria.filter({
            eventName: lambda.FilterRule.isEqual('INSERT'),
            dynamodb: {
              NewImage: {
                type: { S: lambda.FilterRule.isEqual('RUN') },
                tasksWritten: { BOOL: lambda.FilterRule.isEqual(false) },
              },
            },
          }),
          lambda.FilterCriteria.filter({
            eventName: lambda.FilterRule.isEqual('MODIFY'),
            dynamodb: {
              NewImage: {
                type: { S: lambda.FilterRule.isEqual('TI') },
                // A failed attempt that will be retried is a run event, not a readiness one.
                status: { S: lambda.FilterRule.or(...FINISHED, 'up_for_retry') },
                // Not an outcome whose writer advanced readiness itself (a worker's success, a
                // resolution): the common path costs no invocation here (app/advance.ts).
                advanceInline: lambda.FilterRule.notExists(),
              },
            },
          }),
          lambda.FilterCriteria.filter({
            eventName: lambda.FilterRule.isEqual('MODIFY'),
            dynamodb: {
              NewImage: {
                type: { S: lambda.FilterRule.isEqual('RUN') },
                status: { S: lambda.FilterRule.or(...RUN_ENDED) },
              },
            },
          }),
        ],
      }),
    );

    // trigger: creates the run for a scheduled time.
    table.grantState(trigger);
    for (const q of sendQueues) q.grants.sendMessages(trigger);
    dataBucket.grants.read(trigger);

    // retrier: retry timers whose time has come queue the next attempt (or wait again).
    table.grantState(retrier);
    for (const q of sendQueues) q.grants.sendMessages(retrier);
    timers.queue.grants.sendMessages(retrier);
    timers.deadLetterQueue.grants.sendMessages(retrier);
    retrier.function.addEnvironment('RETRY_DLQ_URL', timers.deadLetterQueue.queueUrl);
    dataBucket.grants.read(retrier);
    retrier.function.addEventSource(
      new SqsEventSource(timers.queue, { batchSize: 10, reportBatchItemFailures: true }),
    );

    // reaper: every minute, expired leases, lost task messages and lost retry timers.
    table.grantState(reaper);
    for (const q of sendQueues) q.grants.sendMessages(reaper);
    timers.queue.grants.sendMessages(reaper);
    // The reaper writes logs (an expired lease, a deferred attempt's end) and deferred outputs.
    dataBucket.grants.readWrite(reaper);
    new events.Rule(this, 'ReaperSchedule', {
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(reaper.function, { retryAttempts: 0 })],
    });

    // The Fargate workers: the worker's grants and environment, in a container.
    const workerEnvironment: Record<string, string> = {
      ...base,
      ...Object.fromEntries(
        Object.entries(emulatorTestSettings(this)).filter(([k]) => k !== 'STREAM_PARTIAL_FAILURES'),
      ),
      ...(httpAllowedNetworks.length > 0
        ? { HTTP_ALLOWED_NETWORKS: httpAllowedNetworks.join(',') }
        : {}),
      POWERTOOLS_SERVICE_NAME: 'airless',
      POWERTOOLS_METRICS_NAMESPACE: METRIC_NAMESPACE,
    };
    this.workerEnvironment = workerEnvironment;
    if (fargateTasks && fargateMode !== 'external' && fargateMode !== false) {
      this.fargateWorkers = new FargateWorkers(this, 'FargateWorkers', {
        ...fargateMode,
        queue: fargateTasks.queue,
        environment: workerEnvironment,
        ...(fargateMode.logRemovalPolicy ? {} : { logRemovalPolicy: removalPolicy }),
      });
      const role = this.fargateWorkers.taskRole;
      table.grantState(role);
      dataBucket.grants.readWrite(role);
      timers.queue.grants.sendMessages(role);
      // Readiness from its successes sends the tasks that became ready, to either queue.
      for (const q of sendQueues) q.grants.sendMessages(role);
      fargateTasks.deadLetterQueue.grants.sendMessages(role);
      for (const target of props.invokableFunctions ?? []) target.grantInvoke(role);
    }

    // The deferred operators: started by workers (which stop what they started if the attempt
    // moved on meanwhile), completed by AWS events (which may need to describe the work),
    // checked and stopped by the reaper, stopped on cancel by the API. Each gets only its part.
    const starters: iam.IGrantable[] = [
      worker,
      ...(this.fargateWorkers ? [this.fargateWorkers.taskRole] : []),
    ];
    const parts: [iam.IGrantable, { describe: boolean; stop: boolean }][] = [
      ...starters.map((g) => [g, { describe: true, stop: true }] as const),
      [reaper, { describe: true, stop: true }],
      [complete, { describe: true, stop: false }],
      [api, { describe: false, stop: true }],
    ] as [iam.IGrantable, { describe: boolean; stop: boolean }][];
    const grantOn = (g: iam.IGrantable, actions: string[], arn: string, reason: string) => {
      if (actions.length === 0) return;
      iam.Grant.addToPrincipal({ grantee: g, actions, resourceArns: [arn] });
      if (Construct.isConstruct(g)) acknowledgeWildcard(g, arn, reason);
    };
    for (const machine of stateMachines) {
      for (const g of starters) machine.grantStartExecution(g);
      // Its executions, `arn:…:execution:MACHINE:*`, as StateMachine.grantExecution names them.
      const name = Arn.split(machine.stateMachineArn, ArnFormat.COLON_RESOURCE_NAME).resourceName;
      const executions = Stack.of(this).formatArn({
        service: 'states',
        resource: 'execution',
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        resourceName: `${name}:*`,
      });
      for (const [g, { describe, stop }] of parts) {
        grantOn(
          g,
          [
            ...(describe ? ['states:DescribeExecution'] : []),
            ...(stop ? ['states:StopExecution'] : []),
          ],
          executions,
          'Executions are named when an attempt starts one: the grant names the executions of ' +
            'this one state machine, which the deployer listed in invokableStateMachines.',
        );
      }
    }
    for (const definition of taskDefinitions) {
      for (const g of starters) definition.grantRun(g);
    }
    if (taskDefinitions.length > 0) {
      const { account, region, partition } = Stack.of(this);
      const taskArns = `arn:${partition}:ecs:${region}:${account}:task/*`;
      for (const [g, { describe, stop }] of parts) {
        grantOn(
          g,
          [...(describe ? ['ecs:DescribeTasks'] : []), ...(stop ? ['ecs:StopTask'] : [])],
          taskArns,
          'Tasks get their ARN when the ecs operator starts them: DescribeTasks and StopTask ' +
            'name the tasks of this account and region, which only RunTask on the granted task ' +
            'definitions can start.',
        );
      }
      // Which containers are essential: DescribeTaskDefinition has no resource-level permission.
      for (const g of starters) {
        grantOn(
          g,
          ['ecs:DescribeTaskDefinition'],
          '*',
          'ecs:DescribeTaskDefinition (which containers are essential) supports no ' +
            'resource-level permission: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html',
        );
      }
    }
    if (stateMachines.length > 0) {
      new events.Rule(this, 'StepFunctionsEnded', {
        description: 'Ends Airless stepfunctions tasks when their execution ends',
        eventPattern: {
          source: ['aws.states'],
          detailType: ['Step Functions Execution Status Change'],
          detail: {
            stateMachineArn: stateMachines.map((m) => m.stateMachineArn),
            status: ['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED'],
          },
        },
        targets: [new targets.LambdaFunction(complete.function, { retryAttempts: 8 })],
      });
    }
    if (taskDefinitions.length > 0) {
      new events.Rule(this, 'EcsTasksStopped', {
        description: 'Ends Airless ecs tasks when their ECS task stops',
        eventPattern: {
          source: ['aws.ecs'],
          detailType: ['ECS Task State Change'],
          detail: { lastStatus: ['STOPPED'], startedBy: [{ prefix: 'airless-' }] },
        },
        targets: [new targets.LambdaFunction(complete.function, { retryAttempts: 8 })],
      });
    }
    // complete: records the end of deferred work (app/deferred.ts).
    table.grantState(complete);
    dataBucket.grants.readWrite(complete);
    timers.queue.grants.sendMessages(complete);

    this.#acknowledgeFindings({ table, dagsBucket, dataBucket, advance, advanceFailures });

    this.api = new Api(this, 'Api', {
      handler: api.function,
      authorization: props.authorization ?? 'iam',
      removalPolicy,
    });
    this.httpApi = this.api.httpApi;

    const deadLetterQueues = {
      Task: tasks.deadLetterQueue,
      ...(fargateTasks ? { FargateTask: fargateTasks.deadLetterQueue } : {}),
      Schedule: schedules.deadLetterQueue,
      AdvanceFailure: advanceFailures,
      RetryTimer: timers.deadLetterQueue,
    };
    const functions = {
      Api: api.function,
      Registrar: registrar.function,
      Worker: worker.function,
      Advance: advance.function,
      Trigger: trigger.function,
      Retrier: retrier.function,
      Reaper: reaper.function,
      Complete: complete.function,
    };
    this.alarms = new Alarms(this, 'Alarms', {
      deadLetterQueues,
      functions,
      taskQueue: queue,
      oldestTaskMessageAgeThreshold:
        props.oldestTaskMessageAgeAlarmThreshold ?? workerTimeout.plus(Duration.minutes(5)),
      ...(props.failedRunsAlarmThreshold === undefined
        ? {}
        : { failedRunsThreshold: props.failedRunsAlarmThreshold }),
      ...(props.expiredLeasesAlarmThreshold === undefined
        ? {}
        : { expiredLeasesThreshold: props.expiredLeasesAlarmThreshold }),
      ...(props.alarmTopic ? { alarmTopic: props.alarmTopic } : {}),
      ...(props.alarmEmail === undefined ? {} : { alarmEmail: props.alarmEmail }),
    });

    this.dashboard = new Dashboard(this, 'Dashboard', {
      ...(props.dashboardName === undefined ? {} : { dashboardName: props.dashboardName }),
      functions,
      // The cast only quiets exactOptionalPropertyTypes, which CDK's types predate.
      table: table as dynamodb.ITable,
      tableIndexNames: [GSI1, GSI2, GSI3],
      taskQueue: queue,
      fargateTaskQueue: fargateTasks?.queue,
      deadLetterQueues,
      alarms: this.alarms.alarms,
    });
  }

  /**
   * One of the metrics the Airless functions emit (core/metric-names.ts), in the `Airless`
   * namespace with the `service` dimension only: no metric is per DAG or run.
   * @default Sum over 5 minutes
   */
  metric(metricName: MetricName, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return airlessMetric(metricName, props);
  }

  /**
   * Task attempts that succeeded.
   * @default Sum over 5 minutes
   */
  metricTasksSucceeded(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.TaskSucceeded, props);
  }

  /**
   * Task attempts that failed for good (no retry left, or a failure no retry can fix).
   * @default Sum over 5 minutes
   */
  metricTasksFailed(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.TaskFailed, props);
  }

  /**
   * Task attempts that failed and will be retried.
   * @default Sum over 5 minutes
   */
  metricTasksRetried(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.TaskRetried, props);
  }

  /**
   * Milliseconds from a task attempt being queued (its message sent) to a worker claiming it.
   * @default p99 over 5 minutes
   */
  metricTaskStartLag(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.TaskStartLagMs, { statistic: 'p99', ...props });
  }

  /**
   * Runs that ended in success.
   * @default Sum over 5 minutes
   */
  metricRunsSucceeded(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.RunSucceeded, props);
  }

  /**
   * Runs that failed.
   * @default Sum over 5 minutes
   */
  metricRunsFailed(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.RunFailed, props);
  }

  /**
   * Runs that were cancelled.
   * @default Sum over 5 minutes
   */
  metricRunsCancelled(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.RunCancelled, props);
  }

  /**
   * AWS requests made by all the Airless functions: what orchestration costs.
   * @default Sum over 5 minutes
   */
  metricAwsRequests(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.AwsRequests, props);
  }

  /**
   * Running attempts that the reaper found with an expired lease (their worker crashed, hung or
   * was stopped), and failed or retried.
   * @default Sum over 5 minutes
   */
  metricExpiredLeases(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(Metric.ExpiredLeases, props);
  }

  /**
   * The age in seconds of the task queue's oldest message, in flight or not (SQS's
   * `ApproximateAgeOfOldestMessage`).
   * @default Maximum over 5 minutes
   */
  metricOldestTaskMessageAge(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.taskQueue.metricApproximateAgeOfOldestMessage({
      period: Duration.minutes(5),
      statistic: cloudwatch.Stats.MAXIMUM,
      ...props,
    });
  }

  /**
   * Task messages waiting for a worker (SQS's `ApproximateNumberOfMessagesVisible`).
   * @default Maximum over 5 minutes
   */
  metricTaskQueueDepth(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.taskQueue.metricApproximateNumberOfMessagesVisible({
      period: Duration.minutes(5),
      statistic: cloudwatch.Stats.MAXIMUM,
      ...props,
    });
  }

  /**
   * Emails the given addresses (through SNS) about every failed run, of every DAG or of the
   * named ones. Returns the rule and topic, for more subscriptions or targets.
   */
  notifyOnFailedRuns(
    id: string,
    opts: { emails?: readonly string[]; dagIds?: readonly string[]; topic?: sns.ITopic } = {},
  ): FailedRunNotification {
    return new FailedRunNotification(this, id, { eventBus: this.eventBus, ...opts });
  }

  /**
   * Lets the grantee trigger runs of any DAG through the HTTP API, and nothing else: it may call
   * `POST /v1/dags/{dag_id}/runs` (`execute-api:Invoke` on that one route of the `$default`
   * stage). Only meaningful with `authorization: 'iam'`; without it anyone may call the API.
   */
  grantTrigger(grantee: iam.IGrantable): iam.Grant {
    // The route's path parameter is the one wildcard: DAG ids contain no `/`, and no other
    // POST route ends in `/runs`.
    // https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html
    const routeArn = this.httpApi.arnForExecuteApi('POST', '/v1/dags/*/runs', '$default');
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions: ['execute-api:Invoke'],
      resourceArns: [routeArn],
    });
    if (Construct.isConstruct(grantee)) {
      acknowledgeWildcard(
        grantee,
        routeArn,
        'The trigger route has a path parameter, the DAG id: the grant names that one route ' +
          '(POST /v1/dags/*/runs) of this one API, for every DAG.',
      );
    }
    return grant;
  }

  /** cdk-nag findings that the grants above produce, each acknowledged with its reason. */
  #acknowledgeFindings(r: {
    table: dynamodb.Table;
    dagsBucket: s3.Bucket;
    dataBucket: s3.Bucket;
    advance: AirlessFunction;
    advanceFailures: sqs.Queue;
  }): void {
    acknowledgeWildcard(
      this,
      `${r.table.tableArn}/index/*`,
      'The table grant covers the indexes of the state table, which the handlers query.',
    );
    for (const bucket of [r.dagsBucket, r.dataBucket]) {
      acknowledgeWildcard(
        this,
        bucket.arnForObjects('*'),
        'Object keys are chosen at run time (DAG ids, run ids), so the bucket grants name every ' +
          'object of this one bucket.',
      );
    }
    // The action groups of CDK's S3 bucket grants (read: GetObject*, GetBucket*, List*;
    // readWrite adds DeleteObject*, Abort*), scoped to this construct's buckets.
    for (const action of ['GetObject*', 'GetBucket*', 'List*', 'DeleteObject*', 'Abort*']) {
      Validations.of(this).acknowledge({
        id: `AwsSolutions-IAM5[Action::s3:${action}]`,
        reason: `s3:${action} comes from the CDK bucket grants, whose resources are only the buckets of this construct.`,
      });
    }
    acknowledgeWildcard(
      r.advance,
      '*',
      'dynamodb:ListStreams, which the stream event source mapping needs, supports no ' +
        'resource-level permission: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html',
    );
    Validations.of(r.advanceFailures).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue is itself a dead-letter queue: the on-failure destination of the advance event source.',
    });
    // CDK's own singleton function behind Custom::S3BucketNotifications, whose role it does
    // not let us configure; it only puts the notification configuration of our bucket.
    for (const child of Stack.of(this).node.children) {
      if (child.node.id.startsWith('BucketNotificationsHandler')) {
        Validations.of(child).acknowledge({
          id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
          reason:
            'The role of the CDK-provided S3 notifications handler, which CDK does not let us replace.',
        });
      }
    }
  }
}
