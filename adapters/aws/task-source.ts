import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Delivery, TaskSource } from '../../app/worker-loop.ts';
import { ValidationError } from '../../core/errors.ts';
import { sendToDeadLetterQueue } from './dead-letters.ts';
import { aws } from './errors.ts';
import { decodeTaskMessage } from './sqs.ts';

/**
 * The Fargate workers' task messages, by long polling their SQS FIFO queue
 * (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html).
 * A received message stays in flight for the queue's visibility timeout (12 hours, the most SQS
 * allows), longer than almost any attempt; a longer one's message reappears and its claim is
 * refused, as for any duplicate. A body that is not a task message goes to the dead-letter queue
 * at once.
 */
export class SqsTaskSource implements TaskSource {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
    private readonly deadLetterQueueUrl?: string,
    private readonly waitSeconds = 20,
  ) {}

  async receive(max: number, signal: AbortSignal): Promise<Delivery[]> {
    const res = await this.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: Math.max(1, Math.min(10, max)),
        WaitTimeSeconds: this.waitSeconds,
        MessageSystemAttributeNames: ['SentTimestamp'],
      }),
      { abortSignal: signal },
    );
    const out: Delivery[] = [];
    for (const m of res.Messages ?? []) {
      const receipt = m.ReceiptHandle ?? '';
      const done = () =>
        aws('ack', () =>
          this.sqs.send(new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receipt })),
        ).then(() => undefined);
      try {
        const message = decodeTaskMessage(m.Body ?? '');
        const sent = Number(m.Attributes?.SentTimestamp);
        out.push({
          message,
          ...(Number.isFinite(sent) ? { sentAt: sent } : {}),
          done,
          handBack: (delaySeconds) =>
            aws('hand back', () =>
              this.sqs.send(
                new ChangeMessageVisibilityCommand({
                  QueueUrl: this.queueUrl,
                  ReceiptHandle: receipt,
                  VisibilityTimeout: delaySeconds,
                }),
              ),
            ).then(() => undefined),
        });
      } catch (e) {
        if (!(e instanceof ValidationError) || !this.deadLetterQueueUrl) throw e;
        await sendToDeadLetterQueue(
          this.sqs,
          this.deadLetterQueueUrl,
          { messageId: m.MessageId ?? receipt, body: m.Body ?? '' },
          e.message,
        );
        await done();
      }
    }
    return out;
  }
}
