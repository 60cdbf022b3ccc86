import { readFileSync } from 'node:fs';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { AirlessScheduler } from '../../lib/airless-scheduler.ts';

/** The environment of every function of a stack synthesized with these context values. */
function environments(extra: Record<string, string>): Record<string, string>[] {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [], ...extra } });
  const stack = new Stack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  new AirlessScheduler(stack, 'Scheduler', {});
  const fns = Template.fromStack(stack).findResources('AWS::Lambda::Function');
  return Object.values(fns)
    .filter((f) => f.Properties?.Environment?.Variables?.TABLE_NAME !== undefined)
    .map((f) => f.Properties.Environment.Variables as Record<string, string>);
}

describe('the fault-injection and short-lease switches', () => {
  it('are off in a production synth, whatever context asks for them', () => {
    for (const envs of [
      environments({}),
      environments({ 'airless:faultInjection': 'true', 'airless:leaseSeconds': '30' }),
    ]) {
      expect(envs.length).toBe(8);
      for (const env of envs) {
        expect(env.AIRLESS_FAULTS).toBeUndefined();
        expect(env.LEASE_SECONDS).toBeUndefined();
        expect(env.STREAM_PARTIAL_FAILURES).toBeUndefined();
        expect(env.DEFERRED_CHECK_SECONDS).toBeUndefined();
      }
    }
  });

  it('are on, in every function, only in an emulator synth that asks for them', () => {
    const envs = environments({
      'airless:emulator': 'true',
      'airless:faultInjection': 'true',
      'airless:leaseSeconds': '30',
    });
    expect(envs.length).toBe(8);
    for (const env of envs) {
      expect(env).toMatchObject({
        AIRLESS_FAULTS: 'on',
        LEASE_SECONDS: '30',
        HEARTBEAT_SECONDS: '7',
        DEFERRED_CHECK_SECONDS: '30',
      });
    }
    for (const env of environments({ 'airless:emulator': 'true' })) {
      expect(env.AIRLESS_FAULTS).toBeUndefined();
      // The emulator's stream source ignores partial batch failures: every emulator synth.
      expect(env.STREAM_PARTIAL_FAILURES).toBe('fail-batch');
    }
  });
});
