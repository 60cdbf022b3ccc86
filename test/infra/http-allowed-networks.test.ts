import { readFileSync } from 'node:fs';
import { App, type CfnElement, CfnParameter, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { AirlessScheduler, type AirlessSchedulerProps } from '../../lib/airless-scheduler.ts';

function synth(props: AirlessSchedulerProps, extra?: (stack: Stack) => AirlessSchedulerProps) {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  const scheduler = new AirlessScheduler(stack, 'Scheduler', { ...props, ...extra?.(stack) });
  return { stack, scheduler, template: Template.fromStack(stack) };
}

/** HTTP_ALLOWED_NETWORKS of each function that has it, by logical id. */
function allowedNetworks(template: Template): Record<string, unknown> {
  const fns = template.findResources('AWS::Lambda::Function');
  return Object.fromEntries(
    Object.entries(fns)
      .map(([id, f]) => [id, f.Properties?.Environment?.Variables?.HTTP_ALLOWED_NETWORKS])
      .filter(([, v]) => v !== undefined),
  );
}

describe('httpAllowedNetworks: which private networks the http operator may reach', () => {
  it('is empty by default: no function is given the variable', () => {
    expect(allowedNetworks(synth({}).template)).toEqual({});
    expect(allowedNetworks(synth({ httpAllowedNetworks: [] }).template)).toEqual({});
  });

  it('is given to the worker alone, which runs the http operator', () => {
    const { stack, scheduler, template } = synth({
      httpAllowedNetworks: ['10.0.0.0/8', '127.0.0.1/32', '::1/128', 'fd00::/8'],
    });
    const worker = stack.getLogicalId(scheduler.functions.worker.node.defaultChild as CfnElement);
    expect(allowedNetworks(template)).toEqual({
      [worker]: '10.0.0.0/8,127.0.0.1/32,::1/128,fd00::/8',
    });
  });

  it.each([
    ['10.0.0.1/8', /host bits set/],
    ['10.0.0.0/33', /prefix length/],
    ['example.com', /not a network/],
    ['10.0.0.0/8,192.168.0.0/16', /not a network/],
    ['', /not a network/],
  ])('refuses %j at synth time', (cidr, why) => {
    expect(() => synth({ httpAllowedNetworks: [cidr] })).toThrow(why);
    expect(() => synth({ httpAllowedNetworks: [cidr] })).toThrow(/^httpAllowedNetworks: /);
  });

  it('passes a token (a VPC CIDR known at deploy time) through, for the worker to check', () => {
    const { template } = synth({}, (stack) => ({
      httpAllowedNetworks: [new CfnParameter(stack, 'VpcCidr').valueAsString, '10.0.0.0/8'],
    }));
    expect(Object.values(allowedNetworks(template))).toEqual([
      { 'Fn::Join': ['', [{ Ref: 'VpcCidr' }, ',10.0.0.0/8']] },
    ]);
  });
});
