import { z } from 'zod';

/**
 * The `config` schema of each built-in operator. The runtime side of each operator lives in
 * `operators/`; this file only says what a DAG may write, so that validation, the JSON Schema and
 * the CLI all agree.
 */

const jsonObject = z.record(z.string(), z.unknown());

export const noopConfig = z
  .strictObject({
    sleepSeconds: z.number().min(0).max(900).optional().describe('Sleep this long, then succeed.'),
    failAttempts: z
      .int()
      .min(0)
      .max(100)
      .optional()
      .describe('Attempts 1..N fail: simulates a flaky task.'),
    output: z.unknown().optional().describe('Returned as the task output.'),
  })
  .describe('Does nothing: for tests, examples and joins.');

export const branchConfig = z
  .strictObject({
    follow: z
      .union([z.string().min(1), z.array(z.string().min(1)).max(1000)])
      .describe(
        'The direct downstream task(s) to run, usually a template such as ' +
          '"{{ conf.mode }}"; the other direct downstream tasks are skipped. [] skips them all.',
      ),
  })
  .describe("Chooses which of its direct downstream tasks run, as Airflow's branch operators do.");

export const httpConfig = z
  .strictObject({
    url: z.url({ protocol: /^https?$/, error: 'must be an absolute http(s) URL' }),
    method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']).default('GET'),
    headers: z.record(z.string(), z.string()).optional(),
    body: z.unknown().optional(),
    timeoutSeconds: z.number().positive().max(900).default(30),
    expectedStatus: z.array(z.int().min(100).max(599)).min(1).optional(),
  })
  .describe(
    'Calls an HTTPS endpoint. Loopback, private and link-local addresses, and plain http, reach ' +
      'only the networks the deployer allows (httpAllowedNetworks), never ones a DAG chooses.',
  );

export const lambdaConfig = z
  .strictObject({
    functionName: z.string().min(1).max(170).describe('A function name, name:alias or ARN.'),
    qualifier: z.string().min(1).max(128).optional(),
    payload: z.unknown().optional(),
  })
  .describe('Invokes a Lambda function and waits for its result.');

export const stepFunctionsConfig = z
  .strictObject({
    stateMachineArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/, {
        message: 'must be a state machine ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)',
      }),
    input: jsonObject
      .optional()
      .describe("The execution's input; by default the attempt's ids with the run's conf."),
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,40}$/, {
        message: 'must be 1 to 40 letters, digits, - or _',
      })
      .optional()
      .describe(
        "The start of the execution's name; the rest names the attempt, so a repeated start " +
          'finds the same execution.',
      ),
  })
  .describe(
    'Starts a Step Functions (Standard) execution; its end, reported by EventBridge, ends the ' +
      "attempt, and its output is the task's output. No worker waits for it.",
  );

const containerOverride = z.strictObject({
  name: z.string().min(1),
  command: z.array(z.string()).optional(),
  environment: z.array(z.strictObject({ name: z.string().min(1), value: z.string() })).optional(),
  cpu: z.int().min(0).optional(),
  memory: z.int().min(0).optional(),
});

export const ecsConfig = z
  .strictObject({
    cluster: z.string().min(1).describe('A cluster name or ARN.'),
    taskDefinition: z
      .string()
      .min(1)
      .describe('A task definition family, family:revision or ARN the deployment may run.'),
    containerOverrides: z.array(containerOverride).optional(),
    subnets: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe('Required unless the deployment has default subnets for ECS tasks.'),
    securityGroups: z.array(z.string().min(1)).optional(),
    assignPublicIp: z.boolean().default(false),
  })
  .describe(
    'Runs an ECS task on Fargate; its stop, reported by EventBridge, ends the attempt: success ' +
      'when every essential container exited 0. No worker waits for it.',
  );

/**
 * Operator name → config schema. Built-ins are always present; custom operators add theirs with
 * {@link OperatorSchemas.register}. The DAG schema is built from whatever is registered.
 */
export class OperatorSchemas {
  readonly #schemas = new Map<string, z.ZodType>();
  readonly #deferred = new Set<string>();

  static builtIn(): OperatorSchemas {
    return new OperatorSchemas()
      .register('noop', noopConfig)
      .register('branch', branchConfig)
      .register('http', httpConfig)
      .register('lambda', lambdaConfig)
      .register('stepfunctions', stepFunctionsConfig, { deferred: true })
      .register('ecs', ecsConfig, { deferred: true });
  }

  /**
   * `deferred`: the operator's work runs outside the worker, which only starts it (DESIGN.md
   * section 9), so its tasks' `timeoutSeconds` is not bounded by a Lambda invocation.
   */
  register(name: string, config: z.ZodType, opts: { deferred?: boolean } = {}): this {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(name)) {
      throw new Error(`operator name "${name}" must match ^[a-z][a-z0-9_.-]{0,63}$`);
    }
    if (this.#schemas.has(name)) throw new Error(`operator "${name}" is already registered`);
    this.#schemas.set(name, config);
    if (opts.deferred) this.#deferred.add(name);
    return this;
  }

  isDeferred(name: string): boolean {
    return this.#deferred.has(name);
  }

  names(): string[] {
    return [...this.#schemas.keys()];
  }

  entries(): [string, z.ZodType][] {
    return [...this.#schemas.entries()];
  }
}
