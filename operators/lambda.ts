import { InvokeCommand, type InvokeCommandOutput } from '@aws-sdk/client-lambda';
import { awsClients } from '../adapters/aws/clients.ts';
import { lambdaConfig } from '../core/dag/operators.ts';
import { UnrecoverableError } from '../core/errors.ts';
import type { RunOperator } from './registry.ts';

/**
 * Lambda `Invoke` errors that say the request itself is wrong, which the next attempt would send
 * again unchanged: no such function or qualifier, a worker not granted `lambda:InvokeFunction`
 * (the function is missing from `invokableFunctions`), a payload that is not JSON or is over the
 * 6 MB limit, a parameter Lambda refuses.
 * https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_Errors
 * Throttling, service errors and a function not ready yet (being created or updated) stay
 * retryable, and so does an error the function itself returns (`FunctionError`): it usually
 * depends on data or on something the function calls.
 */
const CALLER_ERRORS = new Set([
  'AccessDeniedException',
  'InvalidParameterValueException',
  'InvalidRequestContentException',
  'RequestTooLargeException',
  'ResourceNotFoundException',
  'UnsupportedMediaTypeException',
  'ValidationException',
]);

/** What the operator needs of a `LambdaClient`; tests pass a fake. */
export interface InvokeClient {
  send(
    command: InvokeCommand,
    options?: { abortSignal?: AbortSignal },
  ): Promise<InvokeCommandOutput>;
}

/**
 * Invokes a function and waits for its result. The payload is the task's `payload`, or else the
 * attempt's identity with the run's conf and the DAG's params. A function error fails the
 * attempt; a request that Lambda refuses as wrong fails it for good.
 *
 * `client` is called at the first invocation, so that the process's shared, request-counting
 * client is created only where a task uses it.
 */
export function createLambdaOperator(
  client: () => InvokeClient,
): RunOperator<typeof lambdaConfig._output> {
  return {
    name: 'lambda',
    config: lambdaConfig,
    async run(config, ctx) {
      const payload = config.payload ?? {
        dagId: ctx.dagId,
        runId: ctx.runId,
        taskId: ctx.task.taskId,
        attempt: ctx.attempt,
        ...(await ctx.runInputs()),
      };
      const target = `${config.functionName}${config.qualifier ? `:${config.qualifier}` : ''}`;
      ctx.log(`invoking ${target}`);
      let res: InvokeCommandOutput;
      try {
        res = await client().send(
          new InvokeCommand({
            FunctionName: config.functionName,
            ...(config.qualifier ? { Qualifier: config.qualifier } : {}),
            Payload: new TextEncoder().encode(JSON.stringify(payload)),
          }),
          { abortSignal: ctx.signal },
        );
      } catch (e) {
        const name = (e as Error).name;
        if (CALLER_ERRORS.has(name)) {
          throw new UnrecoverableError(
            `invoking ${target} was refused (${name}): ${(e as Error).message}`,
            { cause: e },
          );
        }
        throw e;
      }
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
}

/** The `lambda` operator, on the process's shared Lambda client (adapters/aws/clients.ts). */
export const lambdaOperator = createLambdaOperator(() => awsClients().lambda);
