import { httpOperator } from './http.ts';
import { lambdaOperator } from './lambda.ts';
import { noop } from './noop.ts';
import { OperatorRegistry } from './registry.ts';

export type { Operator, OperatorContext } from './registry.ts';
export { OperatorRegistry } from './registry.ts';

/**
 * The operators every deployment runs. `stepfunctions` and `ecs` DAGs validate (their config
 * schemas are in core/dag/operators.ts) but have no runner yet: a task using one fails with a
 * message that says so.
 */
export function builtInOperators(): OperatorRegistry {
  return new OperatorRegistry().register(noop).register(httpOperator).register(lambdaOperator);
}
