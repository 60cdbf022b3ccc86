import type { z } from 'zod';
import { OperatorSchemas } from '../core/dag/operators.ts';
import type { Task } from '../core/dag/schema.ts';
import { jsonPath } from '../core/dag/validate.ts';
import { UnrecoverableError } from '../core/errors.ts';

/** What an operator sees of the attempt it runs. */
export interface OperatorContext {
  readonly dagId: string;
  readonly runId: string;
  readonly task: Task;
  readonly attempt: number;
  /** Aborted when the task times out or the worker loses its lease: stop promptly. */
  readonly signal: AbortSignal;
  /** Appends a line to this attempt's log (stored in S3). */
  log(line: string): void;
  /** The run's `conf` and the DAG's `params`; read on demand, since most operators need neither. */
  runInputs(): Promise<{
    conf: Readonly<Record<string, unknown>>;
    params: Readonly<Record<string, unknown>>;
  }>;
}

/**
 * An operator: a config schema (checked when the DAG is registered) and a function that runs one
 * attempt. Throwing fails the attempt; the returned value is the task's output.
 */
export interface Operator<C> {
  readonly name: string;
  readonly config: z.ZodType<C>;
  run(config: C, ctx: OperatorContext): Promise<unknown>;
}

/**
 * Parses a task's config for the operator that runs it. The DAG was validated when it was
 * registered, so a config that does not parse now (an operator whose schema changed since, a
 * document edited in the bucket) will not parse on a later attempt either: it fails for good.
 */
export function parseTaskConfig<C>(operator: Operator<C>, config: unknown): C {
  const r = operator.config.safeParse(config);
  if (r.success) return r.data;
  const problems = r.error.issues
    .map((i) => `${jsonPath(['config', ...i.path])}: ${i.message}`)
    .join('; ');
  throw new UnrecoverableError(`invalid ${operator.name} config: ${problems}`, {
    cause: r.error,
  });
}

/** The operators a deployment can run. Custom operators join with {@link OperatorRegistry.register}. */
export class OperatorRegistry {
  readonly #operators = new Map<string, Operator<unknown>>();
  // DAGs validate against every built-in config schema, as the CLI does, whether or not this
  // deployment has a runner for it; custom operators add theirs.
  readonly #schemas = OperatorSchemas.builtIn();
  readonly #builtIn = new Set(this.#schemas.names());

  register<C>(operator: Operator<C>): this {
    if (this.#operators.has(operator.name)) {
      throw new Error(`operator "${operator.name}" is already registered`);
    }
    if (!this.#builtIn.has(operator.name)) this.#schemas.register(operator.name, operator.config);
    this.#operators.set(operator.name, operator as Operator<unknown>);
    return this;
  }

  get(name: string): Operator<unknown> | undefined {
    return this.#operators.get(name);
  }

  /** The names of the operators with a runner here, in the order they were registered. */
  names(): string[] {
    return [...this.#operators.keys()];
  }

  /** The config schemas, for validating DAGs against exactly these operators. */
  schemas(): OperatorSchemas {
    return this.#schemas;
  }
}
