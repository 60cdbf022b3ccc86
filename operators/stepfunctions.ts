import {
  DescribeExecutionCommand,
  type DescribeExecutionCommandOutput,
  StartExecutionCommand,
  type StartExecutionCommandOutput,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import { stepFunctionsConfig } from '../core/dag/operators.ts';
import { UnrecoverableError } from '../core/errors.ts';
import type { AwsEvent, DeferredOperator, DeferredWork, WorkState } from './registry.ts';

type Config = typeof stepFunctionsConfig._output;

/** What the operator needs of an `SFNClient`; the request-counting shared client in practice. */
export interface StepFunctionsClient {
  send(command: StartExecutionCommand): Promise<StartExecutionCommandOutput>;
  send(command: DescribeExecutionCommand): Promise<DescribeExecutionCommandOutput>;
  send(command: StopExecutionCommand): Promise<unknown>;
}

/**
 * StartExecution errors that the next attempt would meet again unchanged: a wrong ARN or input,
 * a machine that does not exist, a worker not granted it (not in `invokableStateMachines`).
 * https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html#API_StartExecution_Errors
 */
const CALLER_ERRORS = new Set([
  'AccessDeniedException',
  'InvalidArn',
  'InvalidExecutionInput',
  'InvalidName',
  'StateMachineDeleted',
  'StateMachineDoesNotExist',
  'ValidationException',
]);

const ENDED = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

/** The execution name: the task's own prefix, then the attempt's work name (32 hex digits). */
const executionName = (config: Config, workName: string) =>
  `${config.name ?? 'airless'}-${workName}`;
const WORK_NAME = /-([0-9a-f]{32})$/;

/** `arn:…:stateMachine:M` and a name → `arn:…:execution:M:name`, the execution's ARN. */
const executionArn = (stateMachineArn: string, name: string) =>
  `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;

function parseOutput(text: string | undefined): unknown {
  if (text === undefined) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function ended(
  status: string,
  output: string | undefined,
  error?: string | null,
  cause?: string | null,
): WorkState {
  if (status === 'SUCCEEDED') return { state: 'success', output: parseOutput(output) };
  const why = [error, cause].filter((s) => s).join(': ');
  return { state: 'failed', error: `execution ${status}${why ? `: ${why}` : ''}` };
}

interface SfnWork extends DeferredWork {
  readonly executionArn: string;
}

/**
 * The `stepfunctions` operator: starts an execution of a Standard state machine and holds no
 * worker while it runs. The execution is named after the attempt, so a start repeated after a
 * crash finds the execution the first one started (AWS answers a second StartExecution with the
 * same name and input with the same execution; one that already ended, or an emulator, answers
 * ExecutionAlreadyExists, which names it just as well). Its end arrives as a "Step Functions
 * Execution Status Change" event, or from DescribeExecution when the reaper asks.
 * Express state machines send no status-change events and have no DescribeExecution: they are
 * not supported.
 *
 * `stateMachines` are the ARNs this deployment may start (`invokableStateMachines`): a DAG that
 * names another is refused when it is registered.
 */
export function createStepFunctionsOperator(
  client: () => StepFunctionsClient,
  stateMachines: readonly string[],
): DeferredOperator<Config> {
  const allowed = new Set(stateMachines);
  return {
    name: 'stepfunctions',
    config: stepFunctionsConfig,
    deferred: true,
    refuses: (config) =>
      allowed.has(config.stateMachineArn)
        ? undefined
        : `state machine ${config.stateMachineArn} is not one this deployment may start (invokableStateMachines)`,
    async start(config, ctx) {
      const name = executionName(config, ctx.workName);
      const input = JSON.stringify(
        config.input ?? {
          dagId: ctx.dagId,
          runId: ctx.runId,
          taskId: ctx.task.taskId,
          attempt: ctx.attempt,
          ...(await ctx.runInputs()),
        },
      );
      let arn: string;
      try {
        const res = await client().send(
          new StartExecutionCommand({ stateMachineArn: config.stateMachineArn, name, input }),
        );
        arn = res.executionArn ?? executionArn(config.stateMachineArn, name);
        ctx.log(`started execution ${arn}`);
      } catch (e) {
        const code = (e as { name?: string }).name ?? '';
        if (code === 'ExecutionAlreadyExists') {
          arn = executionArn(config.stateMachineArn, name);
          ctx.log(`execution ${arn} was started before (a repeated start): following it`);
        } else if (CALLER_ERRORS.has(code)) {
          throw new UnrecoverableError(`StartExecution refused: ${code}: ${(e as Error).message}`);
        } else {
          throw e;
        }
      }
      const work: SfnWork = { operator: 'stepfunctions', name: ctx.workName, executionArn: arn };
      return work;
    },
    async check(work) {
      const arn = (work as SfnWork).executionArn;
      try {
        const d = await client().send(new DescribeExecutionCommand({ executionArn: arn }));
        const status = d.status ?? 'RUNNING';
        return ENDED.has(status) ? ended(status, d.output, d.error, d.cause) : { state: 'running' };
      } catch (e) {
        if ((e as { name?: string }).name === 'ExecutionDoesNotExist') {
          return { state: 'failed', error: `execution ${arn} does not exist` };
        }
        throw e;
      }
    },
    async stop(work, reason) {
      try {
        await client().send(
          new StopExecutionCommand({
            executionArn: (work as SfnWork).executionArn,
            error: 'Airless.Stopped',
            cause: reason.slice(0, 32_768),
          }),
        );
      } catch (e) {
        if ((e as { name?: string }).name !== 'ExecutionDoesNotExist') throw e;
      }
    },
    nameOfEvent(event: AwsEvent) {
      if (
        event.source !== 'aws.states' ||
        event['detail-type'] !== 'Step Functions Execution Status Change'
      ) {
        return undefined;
      }
      const d = event.detail as { name?: unknown; status?: unknown } | undefined;
      if (typeof d?.name !== 'string' || !ENDED.has(String(d.status))) return undefined;
      return WORK_NAME.exec(d.name)?.[1];
    },
    endOfEvent(event, work) {
      const d = event.detail as {
        executionArn?: string;
        status?: string;
        output?: string | null;
        outputDetails?: { included?: boolean } | null;
        error?: string | null;
        cause?: string | null;
      };
      // Another execution of the same name (a different state machine): not this work's end.
      if (d.executionArn !== (work as SfnWork).executionArn) return undefined;
      // An output too large for the event is left out of it (`included: false`):
      // DescribeExecution has it whole.
      // https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html
      if (d.status === 'SUCCEEDED' && d.outputDetails?.included === false) return undefined;
      return ended(d.status ?? '', d.output ?? undefined, d.error, d.cause);
    },
  };
}
