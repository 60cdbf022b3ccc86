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
  /** The task's direct downstream tasks (for `branch`); none when absent. */
  readonly downstream?: readonly string[];
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
export interface RunOperator<C> {
  readonly name: string;
  readonly config: z.ZodType<C>;
  run(config: C, ctx: OperatorContext): Promise<unknown>;
  /** Why this deployment cannot run a task with this config, checked at registration. */
  refuses?(config: C): string | undefined;
}

/**
 * The external work of a deferred attempt, as kept with the task instance while it runs: which
 * operator owns it, the name that the attempt gave it, and what the operator needs to check or
 * stop it (an execution ARN, a task ARN).
 */
export interface DeferredWork {
  readonly operator: string;
  readonly name: string;
  readonly [detail: string]: unknown;
}

/** What became of external work: still going, or ended with an output or an error. */
export type WorkState =
  | { readonly state: 'running' }
  | { readonly state: 'success'; readonly output: unknown }
  | { readonly state: 'failed'; readonly error: string };

/**
 * An operator whose work runs outside the worker (a Step Functions execution, an ECS task):
 * the worker only starts it, and the attempt then holds no worker. The end arrives as an AWS
 * event (`fromEvent`), or the reaper asks (`check`) when the event is late. Cancel and timeout
 * `stop` it. Every method may be repeated: `start` with the same `name` finds the work it
 * started before instead of starting a second one.
 */
export interface DeferredOperator<C> {
  readonly name: string;
  readonly config: z.ZodType<C>;
  readonly deferred: true;
  /** Why this deployment cannot run a task with this config, checked at registration. */
  refuses?(config: C): string | undefined;
  start(config: C, ctx: OperatorContext & { readonly workName: string }): Promise<DeferredWork>;
  check(work: DeferredWork): Promise<WorkState>;
  stop(work: DeferredWork, reason: string): Promise<void>;
  /** The name of the work whose end an AWS event reports, if it is one of this operator's. */
  nameOfEvent(event: AwsEvent): string | undefined;
  /** The end that event reports for that work; undefined when only `check` can tell. */
  endOfEvent(event: AwsEvent, work: DeferredWork): WorkState | undefined;
}

/** An EventBridge event, as a rule delivers it. */
export interface AwsEvent {
  readonly source?: string;
  readonly 'detail-type'?: string;
  readonly detail?: unknown;
}

export type Operator<C> = RunOperator<C> | DeferredOperator<C>;

export const isDeferred = <C>(op: Operator<C>): op is DeferredOperator<C> =>
  'deferred' in op && op.deferred === true;

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
    if (!this.#builtIn.has(operator.name)) {
      this.#schemas.register(operator.name, operator.config, { deferred: isDeferred(operator) });
    }
    this.#operators.set(operator.name, operator as Operator<unknown>);
    return this;
  }

  get(name: string): Operator<unknown> | undefined {
    return this.#operators.get(name);
  }

  /** The operator of that name if it runs its work in the worker (not deferred). */
  runner(name: string): RunOperator<unknown> | undefined {
    const op = this.#operators.get(name);
    return op && !isDeferred(op) ? op : undefined;
  }

  /** The deferred operators: the ones whose work ends with an AWS event. */
  deferred(): DeferredOperator<unknown>[] {
    return [...this.#operators.values()].filter(isDeferred);
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
