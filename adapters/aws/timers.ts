import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { z } from 'zod';
import type { RetryTimer, RetryTimers } from '../../core/ports.ts';
import { aws } from './errors.ts';
import { decodeMessage } from './sqs.ts';

/**
 * Retry timers on a standard SQS queue with a per-message delay. FIFO queues, which carry the
 * tasks, have no per-message delay; a standard queue delays each message by up to 15 minutes
 * (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-timers.html),
 * so a longer wait is a chain of delays: the retrier sends the timer again until its time comes.
 */
export const MAX_DELAY_SECONDS = 900;

const timerSchema = z.strictObject({
  v: z.literal(1),
  dagId: z.string().min(1),
  runId: z.string().min(1),
  taskId: z.string().min(1),
  failedAttempt: z.int().min(1),
  dagVersion: z.int().min(1),
  retryAt: z.iso.datetime(),
});

/** The message body of a retry timer. */
export function encodeRetryTimer(timer: RetryTimer): string {
  const { dagId, runId, taskId, failedAttempt, dagVersion, retryAt } = timer;
  return JSON.stringify({ v: 1, dagId, runId, taskId, failedAttempt, dagVersion, retryAt });
}

export function decodeRetryTimer(body: string): RetryTimer {
  const { v: _v, ...timer } = decodeMessage(body, timerSchema, 'retry timer');
  return timer;
}

export class SqsRetryTimers implements RetryTimers {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
  ) {}

  async schedule(timer: RetryTimer, now: Date): Promise<void> {
    const wait = Math.ceil((new Date(timer.retryAt).getTime() - now.getTime()) / 1000);
    await aws('schedule retry', () =>
      this.sqs.send(
        new SendMessageCommand({
          QueueUrl: this.queueUrl,
          MessageBody: encodeRetryTimer(timer),
          DelaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(0, wait)),
        }),
      ),
    );
  }
}
