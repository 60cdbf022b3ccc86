import { readFileSync } from 'node:fs';
import { App, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { AirlessStack, type AirlessStackProps } from '../../lib/airless-stack.ts';

// cdk-nag 3 is a CDK policy validation plugin rather than an aspect: its findings do not
// become annotations, they fail `app.synth()`. `validateScope` returns them as a report.

const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));

/** An app as bin/app.ts makes it, with cdk-nag registered, and its stack. */
function airless(
  props: AirlessStackProps,
  extra: Record<string, string> = {},
): { app: App; stack: Stack } {
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [], ...extra } });
  const stack = new AirlessStack(app, 'Airless', props);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return { app, stack };
}

/** Every AwsSolutions finding, error or warning, that no acknowledgement covers. */
function findings(app: App): string[] {
  return new AwsSolutionsChecks(app)
    .validateScope(app)
    .violations.flatMap((v) =>
      v.violatingResources.map((r) => `${v.severity} ${v.ruleName} at ${r.constructPath}`),
    );
}

const deployed: StackProps = { env: { account: '123456789012', region: 'eu-west-1' } };

describe.each([
  ['as deployed (IAM authorization, account and region known)', deployed, {}],
  ["environment-agnostic, with authorization: 'none'", { authorization: 'none' as const }, {}],
  [
    // A state machine and a task definition for the deferred operators (their grants and
    // rules), and external Fargate workers, as the end-to-end tests deploy it.
    'as the emulator test deploy has it',
    { ...deployed, fargateWorkers: 'external' as const },
    { 'airless:emulator': 'true', 'airless:testTargets': 'true' },
  ],
])('the Airless stack %s', (_, props, extra) => {
  let app: App;
  let stack: Stack;
  let synthError: unknown;
  beforeAll(() => {
    ({ app, stack } = airless(props, extra));
    try {
      app.synth();
    } catch (e) {
      synthError = e;
    }
  });

  it('has no unacknowledged AwsSolutions finding, error or warning', () => {
    expect(findings(app)).toEqual([]);
  });

  it('synthesizes with cdk-nag registered, as `cdk synth` and `cdk deploy` do', () => {
    // Synthesis runs the registered plugin and throws on any finding.
    expect(synthError).toBeUndefined();
  });

  it('states a specific reason for every acknowledgement', () => {
    const acknowledged: Array<[string, string]> = [];
    const visit = (c: IConstruct) => {
      for (const m of c.node.metadata) {
        if (m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY) {
          acknowledged.push(...Object.entries(m.data as Record<string, string>));
        }
      }
      for (const child of c.node.children) visit(child);
    };
    visit(stack);
    expect(acknowledged.length).toBeGreaterThan(0);
    // CDK's own constructs (the Fargate workers' VPC and flow log) acknowledge rules of CDK's
    // built-in template validation; every acknowledgement of ours is of a cdk-nag rule.
    const ours = acknowledged.filter(([rule]) => !rule.startsWith('CloudFormation-Validate::'));
    expect(ours.length).toBeGreaterThan(acknowledged.length / 2);
    for (const [rule, reason] of ours) {
      expect(rule).toMatch(/AwsSolutions-/);
      expect(reason.length, rule).toBeGreaterThan(40);
    }
  });
});

it('the pack does report findings, so that an empty report means something', () => {
  const app = new App({ context });
  new s3.Bucket(new Stack(app, 'Bare'), 'Bucket');
  expect(findings(app)).toEqual(
    expect.arrayContaining([
      'error AwsSolutions-S1 at Bare/Bucket/Resource',
      'error AwsSolutions-S10 at Bare/Bucket/Resource',
    ]),
  );
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  expect(() => app.synth()).toThrow(/AwsSolutions-S1/);
});
