import { createHash } from 'node:crypto';
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { aws } from './errors.ts';

/** A received SQS message, as much of it as a dead-letter send needs. */
export interface ReceivedMessage {
  readonly messageId: string;
  readonly body: string;
}

/**
 * Moves a message that can never be processed (a body that is not a task message or a retry
 * timer) to its queue's dead-letter queue at once, instead of letting SQS redrive it after
 * `maxReceiveCount` receives: on the task queue that would take five visibility timeouts, over an
 * hour. The caller then acknowledges the message. The reason goes with it as a message attribute,
 * so whoever reads the dead-letter queue sees why. On a FIFO dead-letter queue each poison
 * message is its own group, so one never holds back another, and its deduplication id is the
 * received message's id, so a retried send does not put it there twice.
 */
export async function sendToDeadLetterQueue(
  sqs: SQSClient,
  queueUrl: string,
  message: ReceivedMessage,
  reason: string,
): Promise<void> {
  const fifo = queueUrl.endsWith('.fifo');
  const id = createHash('sha256').update(message.messageId).digest('hex');
  await aws('dead-letter', () =>
    sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: message.body,
        MessageAttributes: {
          'airless-reason': { DataType: 'String', StringValue: reason.slice(0, 1000) },
          'airless-message-id': { DataType: 'String', StringValue: message.messageId },
        },
        ...(fifo ? { MessageGroupId: `poison-${id}`, MessageDeduplicationId: id } : {}),
      }),
    ),
  );
}
