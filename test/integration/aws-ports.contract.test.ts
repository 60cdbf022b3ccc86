import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { S3BlobStore } from '../../adapters/aws/s3.ts';
import { EventBridgeScheduleRegistry } from '../../adapters/aws/scheduler.ts';
import { decodeTaskMessage, SqsTaskDispatcher } from '../../adapters/aws/sqs.ts';
import type { TaskMessage } from '../../core/ports.ts';
import {
  createBuckets,
  createFifoQueue,
  createScheduleGroup,
  localClients,
} from '../../localstack/resources.ts';
import {
  blobStoreContract,
  dispatcherContract,
  scheduleRegistryContract,
} from '../contract/ports.contract.ts';
import { waitFor } from '../poll.ts';

/** The S3, SQS and EventBridge Scheduler adapters against the emulator, fresh resources each test. */
blobStoreContract('S3', async () => new S3BlobStore(localClients().s3, await createBuckets()));

dispatcherContract('SQS FIFO', async () => {
  const { sqs } = localClients();
  const { url } = await createFifoQueue({ visibilityTimeout: 30 });
  const got: TaskMessage[] = [];
  return {
    dispatcher: new SqsTaskDispatcher(sqs, url),
    // Long polling: each read waits for messages itself, so no pause between reads.
    received: (count) =>
      waitFor(
        async () => {
          const res = await sqs.send(
            new ReceiveMessageCommand({
              QueueUrl: url,
              MaxNumberOfMessages: 10,
              WaitTimeSeconds: 1,
            }),
          );
          for (const m of res.Messages ?? []) {
            got.push(decodeTaskMessage(m.Body ?? ''));
            await sqs.send(
              new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }),
            );
          }
          return got;
        },
        (g) => g.length >= count,
        {
          timeoutMs: 15_000,
          intervalMs: 0,
          maxAttempts: 50,
          what: `${count} message(s) on ${url}`,
        },
      ),
  };
});

scheduleRegistryContract(
  'EventBridge Scheduler',
  async () =>
    new EventBridgeScheduleRegistry(localClients().scheduler, {
      groupName: await createScheduleGroup(),
      target: {
        arn: 'arn:aws:lambda:us-east-1:000000000000:function:airless-trigger',
        roleArn: 'arn:aws:iam::000000000000:role/airless-scheduler',
      },
    }),
);
