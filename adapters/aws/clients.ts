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

/**
 * DynamoDB's bill is in capacity units, not requests: an item's size, every index entry a write
 * inserts, moves or deletes, twice for a transaction's items. Every DynamoDB request asks for its
 * consumed capacity (free to ask: https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_PutItem.html#DDB-PutItem-request-ReturnConsumedCapacity)
 * and the units are summed here, the table's and the indexes' apart. A refused conditional write
 * reports none, though it is billed one unit: those are left out.
 */
const capacity = { read: 0, write: 0, indexWrite: 0, batchedWrites: 0 };
/** Write units by operation and the kind of item written (`UpdateItem TI`), for the benchmark. */
const writesByKind = new Map<string, number>();

export interface Capacity {
  read: number;
  write: number;
  indexWrite: number;
  /** Writes made as statements of a BatchExecuteStatement: one request carries up to 25. */
  batchedWrites: number;
  writesByKind: Record<string, number>;
}

/** The DynamoDB capacity units consumed since the last call, and resets them. */
export function takeCapacity(): Capacity {
  const out = { ...capacity, writesByKind: Object.fromEntries(writesByKind) };
  capacity.read = 0;
  capacity.write = 0;
  capacity.indexWrite = 0;
  capacity.batchedWrites = 0;
  writesByKind.clear();
  return out;
}

/** The kinds of item a write touches, by sort key (`TI#t1` → `TI`), in the order written. */
function itemKinds(input: Record<string, unknown> | undefined): string {
  const kind = (r: unknown) => {
    const o = r as { Key?: { sk?: unknown }; Item?: { sk?: unknown } } | undefined;
    return String(o?.Key?.sk ?? o?.Item?.sk ?? '?').split('#')[0] ?? '?';
  };
  const actions = (input?.TransactItems ?? []) as Record<string, unknown>[];
  if (actions.length > 0) {
    const kinds = new Set(actions.map((a) => kind(Object.values(a)[0])));
    return `[${[...kinds].join(',')}]`;
  }
  const batch = input?.RequestItems as Record<string, Record<string, unknown>[]> | undefined;
  if (batch) {
    const kinds = new Set(
      Object.values(batch)
        .flat()
        .map((r) => kind(Object.values(r)[0])),
    );
    return `[${[...kinds].join(',')}]`;
  }
  return kind(input);
}

const WRITES =
  /^(PutItem|UpdateItem|DeleteItem|BatchWriteItem|TransactWriteItems|Put|Update|Delete|BatchWrite|TransactWrite)Command$/;

interface Consumed {
  readonly CapacityUnits?: number;
  readonly Table?: { readonly CapacityUnits?: number };
  readonly GlobalSecondaryIndexes?: Record<string, { readonly CapacityUnits?: number }>;
}

function tally(
  commandName: string | undefined,
  input: Record<string, unknown> | undefined,
  consumed: Consumed | Consumed[] | undefined,
) {
  // Its writes are counted by the store (countWriteUnits).
  if (commandName === 'BatchExecuteStatementCommand') return;
  const write = WRITES.test(String(commandName));
  let units = 0;
  for (const c of Array.isArray(consumed) ? consumed : consumed ? [consumed] : []) {
    const total = c.CapacityUnits ?? 0;
    if (!write) {
      capacity.read += total;
      continue;
    }
    const indexes = Object.values(c.GlobalSecondaryIndexes ?? {}).reduce(
      (a, i) => a + (i.CapacityUnits ?? 0),
      0,
    );
    capacity.write += total;
    capacity.indexWrite += indexes;
    units += total;
  }
  if (units > 0) {
    const key = `${String(commandName).replace(/Command$/, '')} ${itemKinds(input)}`;
    writesByKind.set(key, (writesByKind.get(key) ?? 0) + units);
  }
}

/**
 * Counts a write the store made to the item `key` as a statement of a BatchExecuteStatement, and
 * its write units, which the store worked out itself: the emulator reports one unit a statement,
 * whatever the items' sizes, where DynamoDB bills each statement as the UpdateItem it is
 * (dynamodb.ts `writeUnits`).
 */
export function countWriteUnits(key: { sk: string }, units: number, indexUnits: number): void {
  capacity.batchedWrites += 1;
  capacity.write += units + indexUnits;
  capacity.indexWrite += indexUnits;
  const kind = `BatchExecuteStatement ${itemKinds({ Key: key })}`;
  writesByKind.set(kind, (writesByKind.get(kind) ?? 0) + units + indexUnits);
}

function measured<T extends { middlewareStack: { add: (...a: never[]) => void } }>(client: T): T {
  const middleware =
    (next: Handler, context: { commandName?: string }) =>
    async (args: { input?: Record<string, unknown> }) => {
      if (args.input && args.input.ReturnConsumedCapacity === undefined) {
        args.input.ReturnConsumedCapacity = 'INDEXES';
      }
      const result = (await next(args)) as { output?: { ConsumedCapacity?: Consumed } };
      tally(context.commandName, args.input, result.output?.ConsumedCapacity);
      return result;
    };
  (client.middlewareStack.add as (m: unknown, o: object) => void)(middleware, {
    step: 'initialize',
    name: 'airlessConsumedCapacity',
  });
  return client;
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

/**
 * How long a DynamoDB request may wait for its connection, and then for its answer, before it is
 * abandoned and retried like any other failed attempt (`maxAttempts`). Without them a request on
 * a dead connection waits for the Lambda's own timeout. A retried write may have landed
 * unanswered: every write is conditional or idempotent, and its refused repeat is read as a lost
 * answer (app/tasks.ts), as after any network error. No DynamoDB request here waits on purpose
 * (no long poll), so the bounds are far above its latency: milliseconds, a BatchExecuteStatement
 * of 25 about 20 ms on the emulator.
 */
export const DYNAMODB_TIMEOUTS = { connectionTimeout: 3_000, requestTimeout: 10_000 } as const;

export function createClients(
  env: NodeJS.ProcessEnv = process.env,
  dynamodbTimeouts: {
    readonly connectionTimeout: number;
    readonly requestTimeout: number;
  } = DYNAMODB_TIMEOUTS,
): AwsClients {
  const config = clientConfig(env);
  return {
    dynamodb: measured(
      counted(
        'dynamodb',
        DynamoDBDocumentClient.from(
          new DynamoDBClient({
            ...config,
            requestHandler: { ...dynamodbTimeouts, throwOnRequestTimeout: true },
          }),
          {
            marshallOptions: { removeUndefinedValues: true },
          },
        ),
      ),
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
