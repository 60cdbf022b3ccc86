import { describe, expect, it } from 'vitest';
import type { Task } from '../../core/dag/schema.ts';
import { createNodeFunction } from '../../localstack/resources.ts';
import { lambdaOperator } from '../../operators/lambda.ts';
import type { OperatorContext } from '../../operators/registry.ts';

const ctx = (): OperatorContext => ({
  dagId: 'daily_sales',
  runId: 'manual__x',
  task: { taskId: 'transform' } as Task,
  attempt: 2,
  signal: new AbortController().signal,
  log: () => {},
  runInputs: async () => ({ conf: { day: '2026-03-09' }, params: { region: 'eu' } }),
});

describe('lambda operator (a function on the emulator)', () => {
  it('invokes the function with the attempt and run inputs, and returns its result', async () => {
    const fn = await createNodeFunction('exports.handler = async (e) => ({ got: e });');
    const out = await lambdaOperator.run(lambdaOperator.config.parse({ functionName: fn }), ctx());
    expect(out).toEqual({
      got: {
        dagId: 'daily_sales',
        runId: 'manual__x',
        taskId: 'transform',
        attempt: 2,
        conf: { day: '2026-03-09' },
        params: { region: 'eu' },
      },
    });
    const explicit = await lambdaOperator.run(
      lambdaOperator.config.parse({ functionName: fn, payload: { only: 'this' } }),
      ctx(),
    );
    expect(explicit).toEqual({ got: { only: 'this' } });
  });

  it('fails the attempt when the function fails, with its error message', async () => {
    const fn = await createNodeFunction(
      'exports.handler = async () => { throw new Error("no rows for 2026-03-09"); };',
    );
    await expect(
      lambdaOperator.run(lambdaOperator.config.parse({ functionName: fn }), ctx()),
    ).rejects.toThrow(/failed \(Unhandled\): .*no rows for 2026-03-09/);
  });
});
