import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ECSClient } from '@aws-sdk/client-ecs';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { SchedulerClient } from '@aws-sdk/client-scheduler';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * The one place that creates AWS SDK clients. Region and credentials come from the environment
 * through the SDK's default chain; `AWS_ENDPOINT_URL` (the local emulator) overrides every
 * service's endpoint. Create clients once per process and share them.
 */
export interface AwsClients {
  readonly dynamodb: DynamoDBDocumentClient;
  readonly sqs: SQSClient;
  readonly s3: S3Client;
  readonly scheduler: SchedulerClient;
  /** For the `lambda` operator, which invokes DAG authors' functions from workers. */
  readonly lambda: LambdaClient;
  /** Run events (core/events.ts). */
  readonly eventbridge: EventBridgeClient;
  /** For the deferred `stepfunctions` and `ecs` operators. */
  readonly sfn: SFNClient;
  readonly ecs: ECSClient;
}

export function clientConfig(env: NodeJS.ProcessEnv = process.env) {
  const endpoint = env.AWS_ENDPOINT_URL;
  return {
    ...(env.AWS_REGION ? { region: env.AWS_REGION } : {}),
    ...(endpoint ? { endpoint } : {}),
    // Adaptive retry rate-limits the client itself when the service throttles.
    retryMode: 'adaptive',
    maxAttempts: 5,
  } as const;
}

/**
 * AWS requests are the product's cost, so every client counts them: each HTTP attempt (retries
 * included), by service and operation. Handlers report the counts per invocation.
 */
const requestCounts = new Map<string, number>();

/** The requests counted since the last call, by `service Operation`, and resets the counts. */
export function takeRequestCounts(): Record<string, number> {
  const out = Object.fromEntries(requestCounts);
  requestCounts.clear();
  return out;
}

type Handler = (args: unknown) => Promise<unknown>;
function counted<T extends { middlewareStack: { add: (...a: never[]) => void } }>(
  service: string,
  client: T,
): T {
  const middleware =
    (next: Handler, context: { commandName?: string }) => async (args: unknown) => {
      const op = `${service} ${String(context.commandName).replace(/Command$/, '')}`;
      requestCounts.set(op, (requestCounts.get(op) ?? 0) + 1);
      return next(args);
    };
  // The deserialize step runs once per HTTP attempt; each client's stack has its own generic types.
  (client.middlewareStack.add as (m: unknown, o: object) => void)(middleware, {
    step: 'deserialize',
    name: 'airlessRequestCount',
  });
  return client;
}

export function createClients(env: NodeJS.ProcessEnv = process.env): AwsClients {
  const config = clientConfig(env);
  return {
    dynamodb: counted(
      'dynamodb',
      DynamoDBDocumentClient.from(new DynamoDBClient(config), {
        marshallOptions: { removeUndefinedValues: true },
      }),
    ),
    sqs: counted('sqs', new SQSClient(config)),
    // A custom endpoint has no per-bucket DNS names: address buckets by path there.
    s3: counted('s3', new S3Client({ ...config, forcePathStyle: config.endpoint !== undefined })),
    scheduler: counted('scheduler', new SchedulerClient(config)),
    lambda: counted('lambda', new LambdaClient(config)),
    eventbridge: counted('events', new EventBridgeClient(config)),
    sfn: counted('states', new SFNClient(config)),
    ecs: counted('ecs', new ECSClient(config)),
  };
}

let shared: AwsClients | undefined;

/** Clients shared by everything in this process (a Lambda container, a CLI run). */
export function awsClients(): AwsClients {
  shared ??= createClients();
  return shared;
}
