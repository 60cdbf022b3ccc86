import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { decodeTaskMessage, SqsTaskDispatcher } from '../../adapters/aws/sqs.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { createFifoQueue, localClients } from '../../localstack/resources.ts';

/**
 * A worker that dies holds its message in flight until the visibility timeout (the worker's
 * timeout, up to 16 minutes), and a FIFO queue delivers nothing else of the same message group
 * meanwhile (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html).
 * The reaper's next attempt must not wait behind it.
 */
describe('the next attempt of a task whose worker died', () => {
  it('is delivered while the dead attempt is still in flight', async () => {
    const { sqs } = localClients();
    const queue = await createFifoQueue({ visibilityTimeout: 900 });
    const dispatcher = new SqsTaskDispatcher(sqs, queue.url);
    const attempt = (n: number): TaskMessage => ({
      dagId: 'd',
      runId: 'manual__r',
      taskId: 't',
      attempt: n,
      dagVersion: 1,
    });
    const receive = async () =>
      (
        (
          await sqs.send(
            new ReceiveMessageCommand({
              QueueUrl: queue.url,
              MaxNumberOfMessages: 10,
              WaitTimeSeconds: 2,
            }),
          )
        ).Messages ?? []
      ).map((m) => decodeTaskMessage(m.Body ?? ''));

    await dispatcher.dispatch([attempt(1)]);
    // A worker takes attempt 1 and dies: the message stays in flight for 900 s.
    expect((await receive()).map((m) => m.attempt)).toEqual([1]);
    await dispatcher.dispatch([attempt(2)]);
    // Long polling returns as soon as a message is available: no fixed wait.
    expect((await receive()).map((m) => m.attempt)).toEqual([2]);
  });
});
