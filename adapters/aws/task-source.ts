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
 * A message is received for a minute, and once its attempt is claimed it is kept in flight for
 * `keepSeconds` more at every heartbeat (`keep`): the message of a worker that died reappears
 * within that, is refused as a duplicate and removed, and a stale in-flight count does not hold
 * the service above zero. SQS ends every message's visibility 12 hours after it was received
 * (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html):
 * an attempt running longer sees its message delivered again, refused and removed, which is
 * harmless. A body that is not a task message goes to the dead-letter queue at once.
 *
 * A long poll is not cut short on stop: a receive abandoned by the client may still take a
 * message on the server, which would then stay hidden for its visibility timeout.
 */
const RECEIVE_VISIBILITY_SECONDS = 60;

export class SqsTaskSource implements TaskSource {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
    private readonly deadLetterQueueUrl?: string,
    /** How long each keep holds the message: a few heartbeats. */
    private readonly keepSeconds = 240,
    // Shorter than SQS's 20 s most: a stopping worker waits for its poll to end.
    private readonly waitSeconds = 10,
  ) {}

  async receive(max: number, _signal: AbortSignal): Promise<Delivery[]> {
    const res = await this.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: Math.max(1, Math.min(10, max)),
        WaitTimeSeconds: this.waitSeconds,
        VisibilityTimeout: RECEIVE_VISIBILITY_SECONDS,
        MessageSystemAttributeNames: ['SentTimestamp'],
      }),
    );
    const out: Delivery[] = [];
    for (const m of res.Messages ?? []) {
      const receipt = m.ReceiptHandle ?? '';
      const visibility = (seconds: number) =>
        aws('visibility', () =>
          this.sqs.send(
            new ChangeMessageVisibilityCommand({
              QueueUrl: this.queueUrl,
              ReceiptHandle: receipt,
              VisibilityTimeout: seconds,
            }),
          ),
        ).then(() => undefined);
      const done = () =>
        aws('ack', () =>
          this.sqs.send(
            new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receipt }),
          ),
        ).then(() => undefined);
      try {
        const message = decodeTaskMessage(m.Body ?? '');
        const sent = Number(m.Attributes?.SentTimestamp);
        out.push({
          message,
          ...(Number.isFinite(sent) ? { sentAt: sent } : {}),
          done,
          handBack: (delaySeconds) => visibility(delaySeconds),
          keep: () => visibility(this.keepSeconds),
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
