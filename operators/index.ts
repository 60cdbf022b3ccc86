import type { Network } from './address-guard.ts';
import { createHttpOperator } from './http.ts';
import { lambdaOperator } from './lambda.ts';
import { noop } from './noop.ts';
import { OperatorRegistry } from './registry.ts';

export type { Network } from './address-guard.ts';
export { parseNetwork, parseNetworkList } from './address-guard.ts';
export type { Operator, OperatorContext } from './registry.ts';
export { OperatorRegistry, parseTaskConfig } from './registry.ts';

export interface BuiltInOperatorOptions {
  /**
   * Networks the `http` operator may reach although its SSRF guard refuses them by default, and
   * the only ones plain http may reach. The deployer's choice, never a DAG's.
   * @default - none
   */
  readonly httpAllowedNetworks?: readonly (string | Network)[];
}

/**
 * The operators every deployment runs. `stepfunctions` and `ecs` tasks pass the format check
 * (their config schemas are in core/dag/operators.ts) but have no runner yet: a deployment
 * refuses them at registration (app/dags.ts), and a stored version that has one fails that
 * task for good, with a message that says so.
 */
export function builtInOperators(options: BuiltInOperatorOptions = {}): OperatorRegistry {
  return new OperatorRegistry()
    .register(noop)
    .register(createHttpOperator({ allowedNetworks: options.httpAllowedNetworks ?? [] }))
    .register(lambdaOperator);
}
