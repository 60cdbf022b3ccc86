import { awsClients } from '../adapters/aws/clients.ts';
import type { Network } from './address-guard.ts';
import { branch } from './branch.ts';
import { createEcsOperator } from './ecs.ts';
import { createHttpOperator } from './http.ts';
import { lambdaOperator } from './lambda.ts';
import { noop } from './noop.ts';
import { OperatorRegistry } from './registry.ts';
import { createStepFunctionsOperator } from './stepfunctions.ts';

export type { Network } from './address-guard.ts';
export { parseNetwork, parseNetworkList } from './address-guard.ts';
export type {
  DeferredOperator,
  DeferredWork,
  Operator,
  OperatorContext,
  RunOperator,
  WorkState,
} from './registry.ts';
export { isDeferred, OperatorRegistry, parseTaskConfig } from './registry.ts';

export interface BuiltInOperatorOptions {
  /**
   * Networks the `http` operator may reach although its SSRF guard refuses them by default, and
   * the only ones plain http may reach. The deployer's choice, never a DAG's.
   * @default - none
   */
  readonly httpAllowedNetworks?: readonly (string | Network)[];
  /**
   * State machine ARNs the `stepfunctions` operator may start (`invokableStateMachines`). With
   * none, the deployment has no `stepfunctions` operator and refuses DAGs that use it.
   * @default - none
   */
  readonly stateMachines?: readonly string[];
  /**
   * Task definition ARNs the `ecs` operator may run (`runnableTaskDefinitions`). With none, the
   * deployment has no `ecs` operator.
   * @default - none
   */
  readonly taskDefinitions?: readonly string[];
  /** Subnets for `ecs` tasks that name none. */
  readonly ecsDefaultSubnets?: readonly string[];
}

/**
 * The operators a deployment runs: `noop`, `branch`, `http` and `lambda` always; the deferred
 * `stepfunctions` and `ecs` only where the deployer named what they may start. Elsewhere their
 * tasks pass the format check (core/dag/operators.ts) but the deployment refuses them at
 * registration (app/dags.ts), and a stored version that has one fails that task for good.
 */
export function builtInOperators(options: BuiltInOperatorOptions = {}): OperatorRegistry {
  const registry = new OperatorRegistry()
    .register(noop)
    .register(branch)
    .register(createHttpOperator({ allowedNetworks: options.httpAllowedNetworks ?? [] }))
    .register(lambdaOperator);
  if (options.stateMachines?.length) {
    registry.register(createStepFunctionsOperator(() => awsClients().sfn, options.stateMachines));
  }
  if (options.taskDefinitions?.length) {
    registry.register(
      createEcsOperator(() => awsClients().ecs, {
        taskDefinitions: options.taskDefinitions,
        ...(options.ecsDefaultSubnets ? { defaultSubnets: options.ecsDefaultSubnets } : {}),
      }),
    );
  }
  return registry;
}
