import { readFileSync } from 'node:fs';
import { App, type CfnElement } from 'aws-cdk-lib';
import { Capture, Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { tableDefinition } from '../../adapters/aws/table.ts';
import type { AirlessFunctionName } from '../../lib/airless-scheduler.ts';
import { AirlessStack } from '../../lib/airless-stack.ts';

/** The REST API of the README, written out independently of lib/api.ts. */
const DESIGN_ROUTES = [
  'POST /v1/dags',
  'GET /v1/dags',
  'GET /v1/dags/{dag_id}',
  'PATCH /v1/dags/{dag_id}',
  'DELETE /v1/dags/{dag_id}',
  'POST /v1/dags/{dag_id}/runs',
  'GET /v1/dags/{dag_id}/runs',
  'GET /v1/dags/{dag_id}/runs/{run_id}',
  'POST /v1/dags/{dag_id}/runs/{run_id}/cancel',
  'POST /v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear',
  'GET /v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}',
  'GET /v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs',
  'GET /v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/output',
  'POST /v1/dags/{dag_id}/backfills',
  'GET /v1/dags/{dag_id}/backfills/{backfill_id}',
  'PUT /v1/pools/{pool}',
  'GET /v1/pools',
  'DELETE /v1/pools/{pool}',
  'GET /v1/import-errors',
  'GET /v1/health',
];
const FUNCTIONS: AirlessFunctionName[] = ['api', 'registrar', 'worker', 'advance', 'trigger'];
const ENV_VARS = [
  'TABLE_NAME',
  'QUEUE_URL',
  'DAGS_BUCKET',
  'DATA_BUCKET',
  'SCHEDULE_GROUP',
  'TRIGGER_FUNCTION_ARN',
  'SCHEDULER_ROLE_ARN',
  'SCHEDULE_DLQ_ARN',
];

let stack: AirlessStack;
let template: Template;
/** The logical id of a construct's CloudFormation resource. */
let id: (c: IConstruct) => string;

beforeAll(() => {
  // The feature flags of cdk.json, so that the template under test is the one deployed; no
  // Lambda bundling, which the tests do not need.
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  stack = new AirlessStack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  template = Template.fromStack(stack);
  id = (c) => stack.getLogicalId(c.node.defaultChild as CfnElement);
});

const resource = (c: IConstruct) => {
  const r = template.toJSON().Resources[id(c)];
  if (!r) throw new Error(`no resource for ${c.node.path}`);
  return r as { Type: string; Properties: Record<string, unknown>; DeletionPolicy?: string };
};
const getAtt = (c: IConstruct, attr = 'Arn') => ({ 'Fn::GetAtt': [id(c), attr] });
const ref = (c: IConstruct) => ({ Ref: id(c) });

/**
 * Everything a role may do: for each resource it names (the logical id that its ARN refers to,
 * `Schedules` for schedules of the group, or the literal ARN), the set of actions allowed.
 */
function accessOf(roleLogicalId: string): Map<string, Set<string>> {
  const access = new Map<string, Set<string>>();
  const policies = template.findResources('AWS::IAM::Policy', {
    Properties: { Roles: Match.arrayWith([{ Ref: roleLogicalId }]) },
  });
  for (const policy of Object.values(policies)) {
    for (const statement of policy.Properties.PolicyDocument.Statement) {
      expect(statement.Effect).toBe('Allow');
      for (const res of [statement.Resource].flat()) {
        const target = targetOf(res);
        const actions = access.get(target) ?? new Set<string>();
        for (const action of [statement.Action].flat()) actions.add(action);
        access.set(target, actions);
      }
    }
  }
  return access;
}

function targetOf(arn: unknown): string {
  const json = JSON.stringify(arn);
  const logical = /"(?:Ref|Fn::GetAtt)":\s*(?:\[\s*)?"(?!AWS::)([A-Za-z0-9]+)"/.exec(json)?.[1];
  if (logical) return logical;
  if (json.includes(':scheduler:') && json.includes(':schedule/')) return 'Schedules';
  return typeof arn === 'string' ? arn : json;
}

const roleOf = (name: AirlessFunctionName) =>
  id(stack.scheduler.functions[name].role as IConstruct);
const s3Writes = (actions: Set<string> | undefined) =>
  [...(actions ?? [])].filter((a) => /^s3:(Put|Delete|Abort)/.test(a));

describe('state table', () => {
  it('matches the table the adapters and emulator tests use (keys, GSIs, stream)', () => {
    const props = resource(stack.scheduler.table).Properties;
    const expected = tableDefinition('x');
    expect(props.KeySchema).toEqual(expected.KeySchema);
    const byName = (defs: unknown) =>
      [...(defs as Array<{ AttributeName: string }>)].sort((a, b) =>
        a.AttributeName.localeCompare(b.AttributeName),
      );
    expect(byName(props.AttributeDefinitions)).toEqual(byName(expected.AttributeDefinitions));
    expect(props.GlobalSecondaryIndexes).toEqual(expected.GlobalSecondaryIndexes);
    expect(props.StreamSpecification).toEqual({ StreamViewType: 'NEW_AND_OLD_IMAGES' });
  });

  it('is on-demand, has point-in-time recovery and is retained by default', () => {
    const r = resource(stack.scheduler.table);
    expect(r.Properties).toMatchObject({
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });
    expect(r.DeletionPolicy).toBe('Retain');
  });
});

describe('task queue', () => {
  it('is a high-throughput FIFO queue with explicit deduplication ids and SSE', () => {
    expect(resource(stack.scheduler.taskQueue).Properties).toMatchObject({
      FifoQueue: true,
      ContentBasedDeduplication: false,
      DeduplicationScope: 'messageGroup',
      FifoThroughputLimit: 'perMessageGroupId',
      SqsManagedSseEnabled: true,
    });
  });

  it('hides a message for the worker timeout plus a minute', () => {
    const worker = resource(stack.scheduler.functions.worker).Properties;
    expect(resource(stack.scheduler.taskQueue).Properties.VisibilityTimeout).toBe(
      (worker.Timeout as number) + 60,
    );
  });

  it('moves a message to a FIFO dead-letter queue after 5 receives', () => {
    expect(resource(stack.scheduler.taskQueue).Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: getAtt(stack.scheduler.taskDeadLetterQueue),
      maxReceiveCount: 5,
    });
    expect(resource(stack.scheduler.taskDeadLetterQueue).Properties).toMatchObject({
      FifoQueue: true,
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 14 * 24 * 3600,
    });
  });

  it('every queue refuses requests without TLS', () => {
    const queues = Object.keys(template.findResources('AWS::SQS::Queue'));
    // Tasks and its DLQ, Fargate tasks and its DLQ, retry timers and its DLQ, the schedule DLQ,
    // advance failures.
    expect(queues).toHaveLength(8);
    for (const queue of queues) {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: queue }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 'sqs:*',
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    }
  });
});

describe('buckets', () => {
  it('every bucket blocks public access, is encrypted and refuses requests without TLS', () => {
    const buckets = template.findResources('AWS::S3::Bucket');
    expect(Object.keys(buckets)).toHaveLength(3);
    for (const [bucketId, bucket] of Object.entries(buckets)) {
      expect(bucket.Properties).toMatchObject({
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            { ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } },
          ],
        },
      });
      template.hasResourceProperties('AWS::S3::BucketPolicy', {
        Bucket: { Ref: bucketId },
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 's3:*',
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    }
  });

  it('versions the DAGs bucket, and logs access to both buckets', () => {
    const { dagsBucket, dataBucket } = stack.scheduler;
    expect(resource(dagsBucket).Properties.VersioningConfiguration).toEqual({ Status: 'Enabled' });
    const destinations = [dagsBucket, dataBucket].map(
      (b) =>
        (resource(b).Properties.LoggingConfiguration as { DestinationBucketName: unknown })
          .DestinationBucketName,
    );
    const [logsBucket] = Object.keys(
      template.findResources('AWS::S3::Bucket', {
        Properties: { LoggingConfiguration: Match.absent() },
      }),
    );
    expect(destinations).toEqual([{ Ref: logsBucket }, { Ref: logsBucket }]);
  });

  it('sends the registrar the creation and removal of dags/*.json files only', () => {
    const created = new Capture();
    const removed = new Capture();
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      BucketName: ref(stack.scheduler.dagsBucket),
      NotificationConfiguration: {
        LambdaFunctionConfigurations: [
          {
            Events: ['s3:ObjectCreated:*'],
            LambdaFunctionArn: getAtt(stack.scheduler.functions.registrar),
            Filter: { Key: { FilterRules: created } },
          },
          {
            Events: ['s3:ObjectRemoved:*'],
            LambdaFunctionArn: getAtt(stack.scheduler.functions.registrar),
            Filter: { Key: { FilterRules: removed } },
          },
        ],
      },
    });
    for (const rules of [created, removed]) {
      expect(rules.asArray()).toHaveLength(2);
      expect(rules.asArray()).toEqual(
        expect.arrayContaining([
          { Name: 'prefix', Value: 'dags/' },
          { Name: 'suffix', Value: '.json' },
        ]),
      );
    }
  });
});

describe('schedules', () => {
  it('has a schedule group', () => {
    expect(resource(stack.scheduler.scheduleGroup).Type).toBe('AWS::Scheduler::ScheduleGroup');
  });

  it('has a role that only schedules of that group, in this account, can assume', () => {
    expect(resource(stack.scheduler.schedules.role).Properties.AssumeRolePolicyDocument).toEqual({
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: 'sts:AssumeRole',
          Principal: { Service: 'scheduler.amazonaws.com' },
          Condition: {
            StringEquals: {
              'aws:SourceAccount': '123456789012',
              'aws:SourceArn': getAtt(stack.scheduler.scheduleGroup),
            },
          },
        },
      ],
    });
  });

  it('lets the schedules invoke the trigger function only, and send to their standard DLQ', () => {
    const { functions, schedules } = stack.scheduler;
    const access = accessOf(id(schedules.role));
    expect(new Map([...access].map(([k, v]) => [k, [...v].sort()]))).toEqual(
      new Map([
        [id(functions.trigger), ['lambda:InvokeFunction']],
        [
          id(schedules.deadLetterQueue),
          ['sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage'],
        ],
      ]),
    );
    // EventBridge Scheduler dead-letter queues must be standard queues.
    expect(resource(schedules.deadLetterQueue).Properties.FifoQueue).toBeUndefined();
  });
});

describe('functions', () => {
  it.each(FUNCTIONS)('%s runs nodejs22.x on arm64 with the common settings', (name) => {
    const fn = stack.scheduler.functions[name];
    expect(resource(fn).Properties).toMatchObject({
      Runtime: 'nodejs22.x',
      Architectures: ['arm64'],
      Handler: 'index.handler',
      Role: getAtt(fn.role as IConstruct),
      Environment: {
        Variables: {
          NODE_OPTIONS: '--enable-source-maps',
          POWERTOOLS_SERVICE_NAME: 'airless',
          POWERTOOLS_METRICS_NAMESPACE: 'Airless',
        },
      },
      LoggingConfig: { LogGroup: { Ref: expect.stringMatching(/LogGroup/) } },
    });
  });

  it('has the timeouts and memory sizes of its job', () => {
    const sizes = Object.fromEntries(
      FUNCTIONS.map((name) => {
        const p = resource(stack.scheduler.functions[name]).Properties;
        return [name, [p.Timeout, p.MemorySize]];
      }),
    );
    expect(sizes).toEqual({
      api: [30, 512],
      registrar: [60, 256],
      worker: [900, 1024],
      advance: [300, 256],
      trigger: [60, 256],
    });
  });

  it('gives every function the resource variables, and all but trigger the scheduling ones', () => {
    for (const name of FUNCTIONS) {
      const vars = Object.keys(
        (resource(stack.scheduler.functions[name]).Properties.Environment as { Variables: object })
          .Variables,
      );
      const expected = name === 'trigger' ? ENV_VARS.slice(0, 4) : ENV_VARS;
      expect(vars.filter((v) => ENV_VARS.includes(v)).sort(), name).toEqual([...expected].sort());
    }
  });

  it('keeps logs for a limited time', () => {
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });
});

describe('least privilege', () => {
  it('each function touches only its own resources', () => {
    const s = stack.scheduler;
    const logGroup = (name: AirlessFunctionName) =>
      (resource(s.functions[name]).Properties.LoggingConfig as { LogGroup: { Ref: string } })
        .LogGroup.Ref;
    const table = id(s.table);
    const queue = id(s.taskQueue);
    const fargate = id(s.fargateTaskQueue as IConstruct);
    const dags = id(s.dagsBucket);
    const data = id(s.dataBucket);
    const touched = (name: AirlessFunctionName) => [...accessOf(roleOf(name)).keys()].sort();
    expect(touched('api')).toEqual(
      [
        logGroup('api'),
        table,
        queue,
        fargate,
        dags,
        data,
        'Schedules',
        id(s.schedules.role),
      ].sort(),
    );
    expect(touched('registrar')).toEqual(
      [logGroup('registrar'), table, dags, data, 'Schedules', id(s.schedules.role)].sort(),
    );
    const timers = id(s.retryTimers.queue);
    const taskDlq = id(s.taskDeadLetterQueue);
    const timerDlq = id(s.retryTimers.deadLetterQueue);
    // The worker and the retrier may move a poison message to their dead-letter queue. The
    // worker sends the tasks its successes make ready, to either queue.
    expect(touched('worker')).toEqual(
      [logGroup('worker'), table, queue, fargate, data, timers, taskDlq].sort(),
    );
    // dynamodb:ListStreams allows no resource-level permission, hence `*`.
    // The account's default bus takes the run events (eventBus prop).
    const bus = 'arn:aws:events:us-east-1:123456789012:event-bus/default';
    expect(touched('advance')).toEqual(
      [
        logGroup('advance'),
        table,
        queue,
        fargate,
        data,
        id(s.advanceFailureQueue),
        '*',
        bus,
      ].sort(),
    );
    expect(touched('trigger')).toEqual([logGroup('trigger'), table, queue, fargate, data].sort());
    expect(touched('retrier')).toEqual(
      [logGroup('retrier'), table, queue, fargate, data, timers, timerDlq].sort(),
    );
    expect(touched('reaper')).toEqual(
      [logGroup('reaper'), table, queue, fargate, data, timers].sort(),
    );
    // Without invokableStateMachines or runnableTaskDefinitions: no Step Functions or ECS.
    expect(touched('complete')).toEqual([logGroup('complete'), table, data, timers].sort());
  });

  it('every role that writes the table may also send its updates together (PartiQL)', () => {
    const s = stack.scheduler;
    const roles = [
      ...(
        [
          'api',
          'registrar',
          'worker',
          'advance',
          'trigger',
          'retrier',
          'reaper',
          'complete',
        ] as const
      ).map(roleOf),
      id(s.fargateWorkers?.taskRole as IConstruct),
    ];
    for (const role of roles) {
      const onTable = accessOf(role).get(id(s.table));
      expect(onTable, role).toContain('dynamodb:UpdateItem');
      expect(onTable, role).toContain('dynamodb:PartiQLUpdate');
    }
  });

  it('the retrier consumes the retry timers, and the reaper runs every minute', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: id(stack.scheduler.functions.retrier) },
      EventSourceArn: { 'Fn::GetAtt': [id(stack.scheduler.retryTimers.queue), 'Arn'] },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [
        Match.objectLike({ Arn: { 'Fn::GetAtt': [id(stack.scheduler.functions.reaper), 'Arn'] } }),
      ],
    });
  });

  it('only api and registrar manage schedules and pass the scheduler role', () => {
    const managers = new Set<string>();
    for (const [roleId] of Object.entries(template.findResources('AWS::IAM::Role'))) {
      const actions = [...accessOf(roleId).values()].flatMap((a) => [...a]);
      if (actions.some((a) => a.startsWith('scheduler:') || a === 'iam:PassRole')) {
        managers.add(roleId);
      }
    }
    expect(managers).toEqual(new Set([roleOf('api'), roleOf('registrar')]));
    for (const name of ['api', 'registrar'] as const) {
      const access = accessOf(roleOf(name));
      expect([...(access.get('Schedules') ?? [])].sort()).toEqual([
        'scheduler:CreateSchedule',
        'scheduler:DeleteSchedule',
        'scheduler:GetSchedule',
        'scheduler:ListSchedules',
        'scheduler:UpdateSchedule',
      ]);
      expect(access.get(id(stack.scheduler.schedules.role))).toEqual(new Set(['iam:PassRole']));
    }
  });

  it('the worker consumes the task queue, and sends to it the tasks its successes make ready', () => {
    const actions = accessOf(roleOf('worker')).get(id(stack.scheduler.taskQueue));
    expect(actions).toContain('sqs:ReceiveMessage');
    expect(actions).toContain('sqs:DeleteMessage');
    expect(actions).toContain('sqs:SendMessage');
  });

  it('api, advance and trigger can send to the task queue, and cannot consume it', () => {
    for (const name of ['api', 'advance', 'trigger'] as const) {
      const actions = accessOf(roleOf(name)).get(id(stack.scheduler.taskQueue));
      expect(actions, name).toContain('sqs:SendMessage');
      expect(actions, name).not.toContain('sqs:ReceiveMessage');
    }
  });

  it('writes the DAGs bucket only from api, and the data bucket not from advance or trigger', () => {
    const { dagsBucket, dataBucket } = stack.scheduler;
    const writes = (name: AirlessFunctionName, bucket: IConstruct) =>
      s3Writes(accessOf(roleOf(name)).get(id(bucket)));
    expect(writes('api', dagsBucket)).toContain('s3:PutObject');
    for (const name of ['registrar', 'worker', 'advance', 'trigger'] as const) {
      expect(writes(name, dagsBucket), name).toEqual([]);
    }
    for (const name of ['advance', 'trigger'] as const) {
      expect(writes(name, dataBucket), name).toEqual([]);
      expect(accessOf(roleOf(name)).get(id(dataBucket)), name).toContain('s3:GetObject*');
    }
  });

  it('no function may invoke other functions unless given (invokableFunctions)', () => {
    for (const name of FUNCTIONS) {
      const actions = [...accessOf(roleOf(name)).values()].flatMap((a) => [...a]);
      expect(actions, name).not.toContain('lambda:InvokeFunction');
    }
  });

  it('no function role has a managed policy (each may write only to its own log group)', () => {
    for (const name of FUNCTIONS) {
      const role = resource(stack.scheduler.functions[name].role as IConstruct);
      expect(role.Properties.ManagedPolicyArns, name).toBeUndefined();
    }
  });
});

describe('event sources', () => {
  it('the worker takes task messages in batches of 10 and reports partial failures', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: ref(stack.scheduler.functions.worker),
      EventSourceArn: getAtt(stack.scheduler.taskQueue),
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  it('advance reads the table stream, filtered, with bisection, retries and a failure queue', () => {
    const created = new Capture();
    const pattern = new Capture();
    const runEnds = new Capture();
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: ref(stack.scheduler.functions.advance),
      EventSourceArn: getAtt(stack.scheduler.table, 'StreamArn'),
      StartingPosition: 'TRIM_HORIZON',
      BatchSize: 100,
      BisectBatchOnFunctionError: true,
      // A poison record holds its shard back for a few retries or an hour at most, not for
      // 10 bisected retries (minutes) or until the stream's 24-hour retention.
      MaximumRetryAttempts: 3,
      MaximumRecordAgeInSeconds: 3600,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      DestinationConfig: {
        OnFailure: { Destination: getAtt(stack.scheduler.advanceFailureQueue) },
      },
      FilterCriteria: {
        Filters: [{ Pattern: created }, { Pattern: pattern }, { Pattern: runEnds }],
      },
    });
    // The creation of a run too large for one transaction: its tasks are written from here.
    expect(JSON.parse(created.asString())).toEqual({
      eventName: ['INSERT'],
      dynamodb: { NewImage: { type: { S: ['RUN'] }, tasksWritten: { BOOL: [false] } } },
    });
    expect(JSON.parse(pattern.asString())).toEqual({
      eventName: ['MODIFY'],
      dynamodb: {
        NewImage: {
          type: { S: ['TI'] },
          // Finished (readiness), or failed with a retry to come (a run event).
          status: {
            S: ['success', 'failed', 'upstream_failed', 'skipped', 'cancelled', 'up_for_retry'],
          },
          // Not an outcome its writer advanced itself: a worker's success, a resolution.
          advanceInline: [{ exists: false }],
        },
      },
    });
    // A run that ended: a run event (core/events.ts).
    expect(JSON.parse(runEnds.asString())).toEqual({
      eventName: ['MODIFY'],
      dynamodb: {
        NewImage: { type: { S: ['RUN'] }, status: { S: ['success', 'failed', 'cancelled'] } },
      },
    });
  });
});

describe('HTTP API', () => {
  it('has exactly the documented routes, each with IAM authorization', () => {
    const routes = Object.values(template.findResources('AWS::ApiGatewayV2::Route'));
    expect(routes.map((r) => r.Properties.RouteKey).sort()).toEqual([...DESIGN_ROUTES].sort());
    for (const route of routes) expect(route.Properties.AuthorizationType).toBe('AWS_IAM');
  });

  it('sends every route to the api function with payload format 2.0', () => {
    const integrations = Object.keys(template.findResources('AWS::ApiGatewayV2::Integration'));
    expect(integrations).toHaveLength(1);
    template.allResourcesProperties('AWS::ApiGatewayV2::Route', {
      Target: { 'Fn::Join': ['', ['integrations/', { Ref: integrations[0] }]] },
    });
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      IntegrationUri: getAtt(stack.scheduler.functions.api),
      PayloadFormatVersion: '2.0',
    });
  });

  it('serves the $default stage with access logs', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: { DestinationArn: getAtt(stack.scheduler.api.accessLogGroup) },
    });
  });
});

describe('alarms', () => {
  const topic = () => ({ Ref: id(stack.scheduler.alarms.alarmTopic) });

  it('alarms on any message in each dead-letter queue', () => {
    const s = stack.scheduler;
    for (const queue of [
      s.taskDeadLetterQueue,
      s.schedules.deadLetterQueue,
      s.advanceFailureQueue,
      s.retryTimers.deadLetterQueue,
    ]) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Dimensions: [{ Name: 'QueueName', Value: getAtt(queue, 'QueueName') }],
        ComparisonOperator: 'GreaterThanThreshold',
        Threshold: 0,
        AlarmActions: [topic()],
      });
    }
  });

  it('alarms on any stream record that could not be processed (its run failed instead)', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'Airless',
      MetricName: 'UnprocessableRecords',
      Dimensions: [{ Name: 'service', Value: 'airless' }],
      Statistic: 'Sum',
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      AlarmActions: [topic()],
    });
  });

  it('alarms on any run event the bus refused for good', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'Airless',
      MetricName: 'EventsNotPublished',
      Dimensions: [{ Name: 'service', Value: 'airless' }],
      Statistic: 'Sum',
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      AlarmActions: [topic()],
    });
  });

  it.each(FUNCTIONS)('alarms on any error of %s over 5 minutes', (name) => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: ref(stack.scheduler.functions[name]) }],
      Statistic: 'Sum',
      Period: 300,
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      AlarmActions: [topic()],
    });
  });

  it('notifies a topic that refuses publishing without TLS, and lets the alarms publish', () => {
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [topic()],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: 'sns:Publish',
            Condition: Match.objectLike({ StringEquals: { 'aws:SourceAccount': '123456789012' } }),
          }),
        ]),
      },
    });
  });
});

describe('outputs', () => {
  it('names what the CLI, scripts and tests look up', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const s = stack.scheduler;
    expect(Object.keys(outputs).sort()).toEqual(
      [
        'AlarmTopicArn',
        'ApiId',
        'ApiUrl',
        'DagsBucketName',
        'DashboardName',
        'DataBucketName',
        'RetryTimerQueueUrl',
        'TableName',
        'TaskDeadLetterQueueUrl',
        'TaskQueueUrl',
        'FargateTaskQueueUrl',
        'WorkerEnvironment',
      ].sort(),
    );
    expect(outputs.FargateTaskQueueUrl?.Value).toEqual(ref(s.fargateTaskQueue as IConstruct));
    expect(outputs.AlarmTopicArn?.Value).toEqual(ref(s.alarms.alarmTopic));
    expect(outputs.DashboardName?.Value).toEqual(ref(s.dashboard.dashboard));
    expect(outputs.ApiId?.Value).toEqual(ref(s.httpApi));
    expect(outputs.DagsBucketName?.Value).toEqual(ref(s.dagsBucket));
    expect(outputs.DataBucketName?.Value).toEqual(ref(s.dataBucket));
    expect(outputs.TableName?.Value).toEqual(ref(s.table));
    expect(outputs.TaskQueueUrl?.Value).toEqual(ref(s.taskQueue));
    expect(outputs.TaskDeadLetterQueueUrl?.Value).toEqual(ref(s.taskDeadLetterQueue));
    expect(outputs.RetryTimerQueueUrl?.Value).toEqual(ref(s.retryTimers.queue));
    expect(JSON.stringify(outputs.ApiUrl?.Value)).toContain('.execute-api.');
  });
});
