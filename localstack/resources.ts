import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  CreateFunctionCommand,
  LambdaClient,
  waitUntilFunctionActiveV2,
} from '@aws-sdk/client-lambda';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { CreateScheduleGroupCommand } from '@aws-sdk/client-scheduler';
import { CreateQueueCommand, GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { type AwsClients, clientConfig, createClients } from '../adapters/aws/clients.ts';
import { tableDefinition } from '../adapters/aws/table.ts';

/**
 * Throwaway resources on the local emulator, for the contract tests and the benchmarks. They run
 * inside `emulator.ts exec`, which points AWS_ENDPOINT_URL at the emulator. Every name is unique,
 * so tests never see each other's data.
 */
export function emulatorEndpoint(): string {
  const endpoint = process.env.AWS_ENDPOINT_URL;
  if (!endpoint || !/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/.test(endpoint)) {
    throw new Error(
      'integration tests need the local emulator: run them with `npm run test:integration` or ' +
        '`npm test` (AWS_ENDPOINT_URL must point at 127.0.0.1)',
    );
  }
  return endpoint;
}

let clients: AwsClients | undefined;
export function localClients(): AwsClients {
  emulatorEndpoint();
  clients ??= createClients();
  return clients;
}

export const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

export async function createTable(): Promise<string> {
  const name = unique('airless-state');
  await new DynamoDBClient(clientConfig()).send(new CreateTableCommand(tableDefinition(name)));
  return name;
}

export async function createFifoQueue(opts: { visibilityTimeout?: number } = {}) {
  const { sqs } = localClients();
  const name = `${unique('airless-tasks')}.fifo`;
  const res = await sqs.send(
    new CreateQueueCommand({
      QueueName: name,
      Attributes: {
        FifoQueue: 'true',
        ContentBasedDeduplication: 'false',
        VisibilityTimeout: String(opts.visibilityTimeout ?? 30),
      },
    }),
  );
  const url = res.QueueUrl as string;
  const attrs = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }),
  );
  return { url, arn: attrs.Attributes?.QueueArn as string };
}

export async function createStandardQueue(): Promise<string> {
  const res = await localClients().sqs.send(
    new CreateQueueCommand({ QueueName: unique('airless-timers') }),
  );
  return res.QueueUrl as string;
}

export async function createBuckets() {
  const { s3 } = localClients();
  const dagsBucket = unique('airless-dags');
  const dataBucket = unique('airless-data');
  for (const Bucket of [dagsBucket, dataBucket]) await s3.send(new CreateBucketCommand({ Bucket }));
  return { dagsBucket, dataBucket };
}

export async function createScheduleGroup(): Promise<string> {
  const name = unique('airless-schedules');
  await localClients().scheduler.send(new CreateScheduleGroupCommand({ Name: name }));
  return name;
}

/**
 * Creates a Node.js function on the emulator from one CommonJS source file (zipped with the
 * emulator venv's Python, which every machine running the emulator has), and waits until it is
 * Active, as AWS documents for new functions.
 */
export async function createNodeFunction(source: string): Promise<string> {
  const name = unique('airless-fn');
  const python = new URL('.venv/bin/python', import.meta.url).pathname;
  const zip = execFileSync(python, [
    '-c',
    'import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,"w")\nz.writestr("index.js",sys.argv[1])\nz.close()\nsys.stdout.buffer.write(b.getvalue())',
    source,
  ]);
  const lambda = new LambdaClient(clientConfig());
  await lambda.send(
    new CreateFunctionCommand({
      FunctionName: name,
      Runtime: 'nodejs22.x',
      Handler: 'index.handler',
      Role: 'arn:aws:iam::000000000000:role/airless-test',
      Code: { ZipFile: zip },
    }),
  );
  await waitUntilFunctionActiveV2({ client: lambda, maxWaitTime: 30 }, { FunctionName: name });
  return name;
}
