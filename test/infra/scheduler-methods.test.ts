import { readFileSync } from 'node:fs';
import { App, type CfnElement, Duration, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { METRIC_DIMENSIONS, METRIC_NAMESPACE, Metric } from '../../core/metric-names.ts';
import type { AirlessScheduler } from '../../lib/airless-scheduler.ts';
import { AirlessStack } from '../../lib/airless-stack.ts';

/** The metric* methods and grantTrigger of AirlessScheduler, as the CDK design guidelines ask. */

const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));

let app: App;
let stack: AirlessStack;
let scheduler: AirlessScheduler;
let caller: iam.Role;
let grant: iam.Grant;
let id: (c: IConstruct) => string;

beforeAll(() => {
  app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  stack = new AirlessStack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  scheduler = stack.scheduler;
  caller = new iam.Role(stack, 'Caller', { assumedBy: new iam.AccountRootPrincipal() });
  grant = scheduler.grantTrigger(caller);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  id = (c) => stack.getLogicalId(c.node.defaultChild as CfnElement);
});

describe('metric methods', () => {
  const airless = (m: cloudwatch.Metric) => ({
    namespace: m.namespace,
    metricName: m.metricName,
    dimensions: m.dimensions,
    statistic: m.statistic,
    period: m.period.toSeconds(),
  });

  it.each([
    ['metricTasksSucceeded', Metric.TaskSucceeded, 'Sum'],
    ['metricTasksFailed', Metric.TaskFailed, 'Sum'],
    ['metricTasksRetried', Metric.TaskRetried, 'Sum'],
    ['metricTaskStartLag', Metric.TaskStartLagMs, 'p99'],
    ['metricRunsSucceeded', Metric.RunSucceeded, 'Sum'],
    ['metricRunsFailed', Metric.RunFailed, 'Sum'],
    ['metricRunsCancelled', Metric.RunCancelled, 'Sum'],
    ['metricAwsRequests', Metric.AwsRequests, 'Sum'],
    ['metricExpiredLeases', Metric.ExpiredLeases, 'Sum'],
  ] as const)(
    '%s is %s (%s over 5 minutes), with no dimension but the service',
    (method, name, statistic) => {
      expect(airless(scheduler[method]())).toEqual({
        namespace: METRIC_NAMESPACE,
        metricName: name,
        dimensions: METRIC_DIMENSIONS,
        statistic,
        period: 300,
      });
    },
  );

  it('takes metric options', () => {
    const m = scheduler.metricTasksFailed({ period: Duration.minutes(1), statistic: 'Average' });
    expect(m.period.toSeconds()).toBe(60);
    expect(m.statistic).toBe('Average');
    expect(m.metricName).toBe(Metric.TaskFailed);
  });

  it('metric() gives any emitted metric by name', () => {
    expect(scheduler.metric(Metric.Redispatched).metricName).toBe('Redispatched');
  });

  it.each([
    ['metricOldestTaskMessageAge', 'ApproximateAgeOfOldestMessage'],
    ['metricTaskQueueDepth', 'ApproximateNumberOfMessagesVisible'],
  ] as const)('%s is SQS %s of the task queue (Maximum)', (method, name) => {
    const m = scheduler[method]();
    expect(m.namespace).toBe('AWS/SQS');
    expect(m.metricName).toBe(name);
    expect(m.statistic).toBe('Maximum');
    expect(stack.resolve(m.dimensions)).toEqual({
      QueueName: { 'Fn::GetAtt': [id(scheduler.taskQueue), 'QueueName'] },
    });
  });
});

describe('grantTrigger', () => {
  /** The resources of every statement in the caller's policies, rendered as strings. */
  function callerStatements(): Array<{ Action: unknown; Resource: unknown }> {
    const policies = Template.fromStack(stack).findResources('AWS::IAM::Policy', {
      Properties: { Roles: Match.arrayWith([{ Ref: id(caller) }]) },
    });
    return Object.values(policies).flatMap((p) => p.Properties.PolicyDocument.Statement);
  }
  const render = (v: unknown): string => {
    if (typeof v === 'string') return v;
    const r = v as Record<string, unknown>;
    if (Array.isArray(r['Fn::Join'])) {
      const [sep, parts] = r['Fn::Join'] as [string, unknown[]];
      return parts.map(render).join(sep);
    }
    if (typeof r.Ref === 'string') return `<${r.Ref}>`;
    return JSON.stringify(v);
  };

  it('allows execute-api:Invoke on the trigger route of this API, and nothing else', () => {
    const statements = callerStatements();
    expect(statements).toHaveLength(1);
    expect(statements[0]?.Action).toBe('execute-api:Invoke');
    expect(render(statements[0]?.Resource)).toBe(
      `arn:aws:execute-api:us-east-1:123456789012:<${id(scheduler.httpApi)}>/$default/POST/v1/dags/*/runs`,
    );
  });

  it('matches the trigger route for any DAG, and no other route', () => {
    const pattern = render(callerStatements()[0]?.Resource).replace(/^.*>\/\$default\//, '');
    // IAM's wildcard: `*` is any run of characters.
    const re = new RegExp(
      `^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`,
    );
    const request = (route: string) =>
      route
        .replace(' ', '')
        .replace('{dag_id}', 'etl_daily')
        .replace('{run_id}', 'manual__1')
        .replace('{task_id}', 'extract');
    const routes = Object.values(
      Template.fromStack(stack).findResources('AWS::ApiGatewayV2::Route'),
    )
      .map((r) => r.Properties.RouteKey as string)
      .sort();
    expect(routes).toContain('POST /v1/dags/{dag_id}/runs');
    const allowed = routes.filter((r) => re.test(request(r)));
    expect(allowed).toEqual(['POST /v1/dags/{dag_id}/runs']);
  });

  it('leaves no unacknowledged cdk-nag finding', () => {
    const findings = new AwsSolutionsChecks(app)
      .validateScope(app)
      .violations.flatMap((v) =>
        v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath}`),
      );
    expect(findings).toEqual([]);
  });

  it('returns the grant, added to the principal', () => {
    expect(grant.success).toBe(true);
    expect(grant.principalStatements.flatMap((st) => st.actions)).toEqual(['execute-api:Invoke']);
  });
});
