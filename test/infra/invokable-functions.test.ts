import { readFileSync } from 'node:fs';
import { App, type CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { beforeAll, expect, it } from 'vitest';
import { AirlessScheduler } from '../../lib/airless-scheduler.ts';

const TRANSFORM = 'arn:aws:lambda:us-east-1:123456789012:function:my-transform';

let template: Template;
let roleIds: Record<string, string>;

beforeAll(() => {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  const scheduler = new AirlessScheduler(stack, 'Scheduler', {
    invokableFunctions: [lambda.Function.fromFunctionArn(stack, 'Transform', TRANSFORM)],
  });
  template = Template.fromStack(stack);
  roleIds = Object.fromEntries(
    Object.entries(scheduler.functions).map(([name, fn]) => [
      name,
      stack.getLogicalId(fn.role?.node.defaultChild as CfnElement),
    ]),
  );
});

/** The resources on which a role may call lambda:InvokeFunction. */
function invokable(roleId: string | undefined): unknown[] {
  const policies = template.findResources('AWS::IAM::Policy', {
    Properties: { Roles: [{ Ref: roleId }] },
  });
  return Object.values(policies)
    .flatMap((p) => p.Properties.PolicyDocument.Statement)
    .filter((s) => [s.Action].flat().includes('lambda:InvokeFunction'))
    .flatMap((s) => [s.Resource].flat());
}

it('lets the worker invoke the functions given, their versions and aliases, and no other', () => {
  expect(invokable(roleIds.worker).sort()).toEqual([TRANSFORM, `${TRANSFORM}:*`]);
});

it('lets no other function invoke them', () => {
  for (const name of ['api', 'registrar', 'advance', 'trigger']) {
    expect(invokable(roleIds[name]), name).toEqual([]);
  }
  // The grant is on the worker's role, not on the imported function's resource policy.
  template.resourcePropertiesCountIs(
    'AWS::Lambda::Permission',
    { FunctionName: Match.stringLikeRegexp('my-transform') },
    0,
  );
});
