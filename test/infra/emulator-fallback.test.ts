import { readFileSync } from 'node:fs';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { AirlessScheduler, type AirlessSchedulerProps } from '../../lib/airless-scheduler.ts';

/** Which functions carry the emulator-only scheduled-time fallback. */
function withFallback(props: AirlessSchedulerProps): string[] {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  new AirlessScheduler(stack, 'Scheduler', props);
  const fns = Template.fromStack(stack).findResources('AWS::Lambda::Function');
  return Object.entries(fns)
    .filter(([, f]) => f.Properties?.Environment?.Variables?.SCHEDULED_TIME_FALLBACK !== undefined)
    .map(([id]) => id);
}

describe('the scheduled-time fallback for emulators', () => {
  it('is off by default: on AWS the logical date only ever comes from Scheduler', () => {
    expect(withFallback({})).toEqual([]);
  });

  it('is set on the trigger function alone when asked for', () => {
    const ids = withFallback({ emulatorScheduledTimeFallback: true });
    expect(ids).toHaveLength(1);
    expect(ids[0]).toMatch(/TriggerFunction/);
  });
});
