import { readFileSync } from 'node:fs';
import { App, type CfnElement, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as events from 'aws-cdk-lib/aws-events';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { AirlessStack } from '../../lib/airless-stack.ts';

/** Run events on EventBridge, and the helper that emails failed runs (DESIGN.md section 12). */

const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
const env = { account: '123456789012', region: 'us-east-1' };

function synth(configure: (s: AirlessStack) => void, props = {}) {
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new AirlessStack(app, 'Airless', { env, ...props });
  configure(stack);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  const id = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  return { app, stack, template: Template.fromStack(stack), id };
}

describe('notifyOnFailedRuns', () => {
  let s: ReturnType<typeof synth>;
  beforeAll(() => {
    s = synth((stack) => {
      stack.scheduler.notifyOnFailedRuns('EtlFailures', {
        emails: ['ops@example.com'],
        dagIds: ['etl', 'billing'],
      });
      stack.scheduler.notifyOnFailedRuns('AllFailures', { emails: ['oncall@example.com'] });
    });
  });

  it('matches the failed run ends of the named DAGs only', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['airless'],
        'detail-type': ['Airless Run Status Change'],
        detail: { status: ['failed'], dagId: ['etl', 'billing'] },
      },
    });
  });

  it('matches the failed runs of every DAG when no DAG is named', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['airless'],
        'detail-type': ['Airless Run Status Change'],
        detail: { status: ['failed'] },
      },
    });
  });

  it('sends a readable message to an SNS topic that each address subscribes to', () => {
    const rules = Object.values(s.template.findResources('AWS::Events::Rule')).filter(
      (r) => r.Properties.EventPattern?.source?.[0] === 'airless',
    );
    expect(rules).toHaveLength(2);
    for (const rule of rules) {
      const [target] = rule.Properties.Targets;
      expect(JSON.stringify(target.InputTransformer.InputTemplate)).toMatch(/failed at/);
      expect(target.InputTransformer.InputPathsMap).toMatchObject({
        'detail-runId': '$.detail.runId',
        'detail-dagId': '$.detail.dagId',
      });
    }
    s.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    s.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'oncall@example.com',
    });
    // EventBridge may publish to the topic, which refuses anything but TLS.
    s.template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'events.amazonaws.com' },
            Action: 'sns:Publish',
          }),
        ]),
      },
    });
  });

  it('passes cdk-nag', () => {
    const report = new AwsSolutionsChecks(s.app).validateScope(s.app);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });

  it('refuses an empty list of DAGs rather than matching none', () => {
    expect(() =>
      synth((stack) => stack.scheduler.notifyOnFailedRuns('None', { dagIds: [] })),
    ).toThrow(/dagIds is empty/);
  });
});

describe('the event bus', () => {
  const advanceOf = (t: Template) =>
    Object.values(t.findResources('AWS::Lambda::Function')).find(
      (f) => f.Properties.Environment?.Variables?.EVENT_BUS_NAME !== undefined,
    );
  const putEventsResources = (t: Template) =>
    Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p) =>
      (p.Properties.PolicyDocument.Statement as { Action: unknown; Resource: unknown }[])
        .filter((st) => JSON.stringify(st.Action).includes('events:PutEvents'))
        .map((st) => JSON.stringify(st.Resource)),
    );

  it("is the account's default bus unless one is given, and only advance may put on it", () => {
    const { template } = synth(() => {});
    expect(advanceOf(template)?.Properties.Environment.Variables.EVENT_BUS_NAME).toBe('default');
    expect(putEventsResources(template)).toEqual([
      JSON.stringify('arn:aws:events:us-east-1:123456789012:event-bus/default'),
    ]);
  });

  it('a bus given as a prop gets the events, and the rules are made on it', () => {
    const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
    const shared = new Stack(app, 'Shared', { env });
    new events.EventBus(shared, 'Ops', { eventBusName: 'ops' });
    const stack = new AirlessStack(app, 'Airless', {
      env,
      eventBus: events.EventBus.fromEventBusName(shared, 'OpsByName', 'ops'),
    });
    stack.scheduler.notifyOnFailedRuns('Failures', { emails: ['ops@example.com'] });
    const t = Template.fromStack(stack);
    expect(advanceOf(t)?.Properties.Environment.Variables.EVENT_BUS_NAME).toBe('ops');
    expect(putEventsResources(t)).toEqual([
      JSON.stringify('arn:aws:events:us-east-1:123456789012:event-bus/ops'),
    ]);
    t.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: 'ops',
      EventPattern: Match.objectLike({ source: ['airless'] }),
    });
  });
});
