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
    input: jsonObject.optional(),
    pollSeconds: z.number().min(1).max(300).default(10),
  })
  .describe('Starts a Step Functions execution and waits for it.');

export const ecsConfig = z
  .strictObject({
    cluster: z.string().min(1),
    taskDefinition: z.string().min(1),
    containerName: z.string().min(1).optional(),
    command: z.array(z.string()).optional(),
    environment: z.record(z.string(), z.string()).optional(),
    subnets: z.array(z.string().min(1)).min(1),
    securityGroups: z.array(z.string().min(1)).optional(),
    assignPublicIp: z.boolean().default(false),
    pollSeconds: z.number().min(5).max(300).default(15),
  })
  .describe('Runs a Fargate task and waits for it to stop.');

/**
 * Operator name → config schema. Built-ins are always present; custom operators add theirs with
 * {@link OperatorSchemas.register}. The DAG schema is built from whatever is registered.
 */
export class OperatorSchemas {
  readonly #schemas = new Map<string, z.ZodType>();

  static builtIn(): OperatorSchemas {
    return new OperatorSchemas()
      .register('noop', noopConfig)
      .register('http', httpConfig)
      .register('lambda', lambdaConfig)
      .register('stepfunctions', stepFunctionsConfig)
      .register('ecs', ecsConfig);
  }

  register(name: string, config: z.ZodType): this {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(name)) {
      throw new Error(`operator name "${name}" must match ^[a-z][a-z0-9_.-]{0,63}$`);
    }
    if (this.#schemas.has(name)) throw new Error(`operator "${name}" is already registered`);
    this.#schemas.set(name, config);
    return this;
  }

  names(): string[] {
    return [...this.#schemas.keys()];
  }

  entries(): [string, z.ZodType][] {
    return [...this.#schemas.entries()];
  }
}
