import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { clientConfig } from '../adapters/aws/clients.ts';
import { lambdaConfig } from '../core/dag/operators.ts';
import type { Operator } from './registry.ts';

let client: LambdaClient | undefined;

/**
 * Invokes a function and waits for its result. The payload is the task's `payload`, or else the
 * attempt's identity with the run's conf and the DAG's params. A function error fails the attempt.
 */
export const lambdaOperator: Operator<typeof lambdaConfig._output> = {
  name: 'lambda',
  config: lambdaConfig,
  async run(config, ctx) {
    client ??= new LambdaClient(clientConfig());
    const payload = config.payload ?? {
      dagId: ctx.dagId,
      runId: ctx.runId,
      taskId: ctx.task.taskId,
      attempt: ctx.attempt,
      ...(await ctx.runInputs()),
    };
    ctx.log(`invoking ${config.functionName}${config.qualifier ? `:${config.qualifier}` : ''}`);
    const res = await client.send(
      new InvokeCommand({
        FunctionName: config.functionName,
        ...(config.qualifier ? { Qualifier: config.qualifier } : {}),
        Payload: new TextEncoder().encode(JSON.stringify(payload)),
      }),
      { abortSignal: ctx.signal },
    );
    const text = res.Payload ? new TextDecoder().decode(res.Payload) : '';
    if (res.FunctionError) {
      throw new Error(
        `${config.functionName} failed (${res.FunctionError}): ${text.slice(0, 2000)}`,
      );
    }
    ctx.log(`returned ${text.length} bytes`);
    try {
      return text ? JSON.parse(text) : null;
    } catch {
      return text;
    }
  },
};
