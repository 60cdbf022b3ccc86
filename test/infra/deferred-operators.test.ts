import { readFileSync } from 'node:fs';
import { App, type CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { beforeAll, describe, expect, it } from 'vitest';
import { AirlessScheduler } from '../../lib/airless-scheduler.ts';

const MACHINE = 'arn:aws:states:us-east-1:123456789012:stateMachine:etl';
const EXECUTIONS = 'arn:aws:states:us-east-1:123456789012:execution:etl:*';

interface Synth {
  template: Template;
  roles: Record<string, string>;
  fargateRole?: string;
  taskDefinition?: { arn: string; taskRole: string; executionRole: string };
}

function synth(withTargets: boolean): Synth {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  let definition: ecs.FargateTaskDefinition | undefined;
  if (withTargets) {
    definition = new ecs.FargateTaskDefinition(stack, 'Job', { cpu: 256, memoryLimitMiB: 512 });
    definition.addContainer('main', {
      image: ecs.ContainerImage.fromRegistry('public.ecr.aws/docker/library/busybox:stable'),
    });
    definition.obtainExecutionRole();
  }
  const scheduler = new AirlessScheduler(stack, 'Scheduler', {
    ...(withTargets && definition
      ? {
          invokableStateMachines: [sfn.StateMachine.fromStateMachineArn(stack, 'Etl', MACHINE)],
          runnableTaskDefinitions: [definition],
        }
      : {}),
  });
  const logical = (c: { node: { defaultChild?: unknown } } | undefined) =>
    stack.getLogicalId(c?.node.defaultChild as CfnElement);
  return {
    template: Template.fromStack(stack),
    roles: Object.fromEntries(
      Object.entries(scheduler.functions).map(([name, fn]) => [name, logical(fn.role as iam.Role)]),
    ),
    ...(scheduler.fargateWorkers
      ? { fargateRole: logical(scheduler.fargateWorkers.taskRole as iam.Role) }
      : {}),
    ...(definition
      ? {
          taskDefinition: {
            arn: logical(definition),
            taskRole: logical(definition.taskRole as iam.Role),
            executionRole: logical(definition.executionRole as iam.Role),
          },
        }
      : {}),
  };
}

/** Every (action, resource) a role is allowed, resources as JSON. */
function grants(s: Synth, roleId: string | undefined): Array<[string, string]> {
  const policies = s.template.findResources('AWS::IAM::Policy', {
    Properties: { Roles: Match.arrayWith([{ Ref: roleId }]) },
  });
  return Object.values(policies).flatMap((p) =>
    p.Properties.PolicyDocument.Statement.flatMap((st: { Action: unknown; Resource: unknown }) =>
      [st.Action]
        .flat()
        .flatMap((a) =>
          [st.Resource].flat().map((r) => [String(a), JSON.stringify(r)] as [string, string]),
        ),
    ),
  );
}

const of = (list: Array<[string, string]>, prefix: string) =>
  list.filter(([a]) => a.startsWith(prefix) || (prefix === 'ecs:RunTask' && a === 'iam:PassRole'));

let given: Synth;
let none: Synth;
beforeAll(() => {
  given = synth(true);
  none = synth(false);
});

describe('invokableStateMachines and runnableTaskDefinitions', () => {
  it('let the workers start exactly the state machines given, and check and stop their executions', () => {
    for (const role of [given.roles.worker, given.fargateRole]) {
      expect(of(grants(given, role), 'states:').sort()).toEqual(
        [
          ['states:DescribeExecution', JSON.stringify(EXECUTIONS)],
          ['states:StartExecution', JSON.stringify(MACHINE)],
          ['states:StopExecution', JSON.stringify(EXECUTIONS)],
        ].sort(),
      );
    }
    // The reaper checks and stops; completion only reads; the API only stops, on cancel.
    const parts: Record<string, string[]> = {
      reaper: ['states:DescribeExecution', 'states:StopExecution'],
      complete: ['states:DescribeExecution'],
      api: ['states:StopExecution'],
    };
    for (const [name, actions] of Object.entries(parts)) {
      expect(of(grants(given, given.roles[name]), 'states:').sort(), name).toEqual(
        actions.map((a) => [a, JSON.stringify(EXECUTIONS)]).sort(),
      );
    }
    for (const name of ['registrar', 'advance', 'trigger', 'retrier']) {
      expect(of(grants(given, given.roles[name]), 'states:'), name).toEqual([]);
    }
  });

  it('let the workers run exactly the task definitions given, passing only their roles', () => {
    const td = given.taskDefinition;
    for (const role of [given.roles.worker, given.fargateRole]) {
      const ecsGrants = of(grants(given, role), 'ecs:RunTask');
      expect(ecsGrants.filter(([a]) => a === 'ecs:RunTask')).toEqual([
        ['ecs:RunTask', JSON.stringify({ Ref: td?.arn })],
      ]);
      const passed = ecsGrants.filter(([a]) => a === 'iam:PassRole').map(([, r]) => r);
      expect(passed.sort()).toEqual(
        [td?.taskRole, td?.executionRole]
          .map((r) => JSON.stringify({ 'Fn::GetAtt': [r, 'Arn'] }))
          .sort(),
      );
    }
    const tdRoles = [td?.taskRole, td?.executionRole].map((r) =>
      JSON.stringify({ 'Fn::GetAtt': [r, 'Arn'] }),
    );
    for (const name of [
      'api',
      'registrar',
      'advance',
      'trigger',
      'retrier',
      'reaper',
      'complete',
    ]) {
      expect(
        grants(given, given.roles[name]).filter(
          ([a, r]) => a === 'ecs:RunTask' || (a === 'iam:PassRole' && tdRoles.includes(r)),
        ),
        name,
      ).toEqual([]);
    }
  });

  it('give no Step Functions or ECS permission when none is named', () => {
    for (const [name, role] of Object.entries(none.roles)) {
      const touched = grants(none, role).filter(
        ([a]) => a.startsWith('states:') || a.startsWith('ecs:'),
      );
      expect(touched, name).toEqual([]);
    }
    expect(
      none.template.findResources('AWS::Events::Rule', {
        Properties: { EventPattern: { source: ['aws.states'] } },
      }),
    ).toEqual({});
  });

  it('route the end of those executions, and the stop of tasks Airless started, to the completion function', () => {
    const target = Match.arrayWith([
      Match.objectLike({
        Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('CompleteFunction'), 'Arn'] },
      }),
    ]);
    given.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.states'],
        'detail-type': ['Step Functions Execution Status Change'],
        detail: {
          stateMachineArn: [MACHINE],
          status: ['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED'],
        },
      },
      Targets: target,
    });
    given.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.ecs'],
        'detail-type': ['ECS Task State Change'],
        detail: { lastStatus: ['STOPPED'], startedBy: [{ prefix: 'airless-' }] },
      },
      Targets: target,
    });
  });

  it('tell every function what the operators may start, so that registration can refuse the rest', () => {
    const fns = given.template.findResources('AWS::Lambda::Function', {
      Properties: { Environment: { Variables: { TABLE_NAME: Match.anyValue() } } },
    });
    expect(Object.keys(fns)).toHaveLength(8);
    for (const f of Object.values(fns)) {
      expect(f.Properties.Environment.Variables.STATE_MACHINES).toBe(MACHINE);
      expect(f.Properties.Environment.Variables.TASK_DEFINITIONS).toEqual({
        Ref: given.taskDefinition?.arn,
      });
    }
  });
});
