import { Duration } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface RetryTimersProps {
  /**
   * The timeout of the function that consumes the timers; a received timer stays invisible for
   * this long plus 30 seconds.
   * @default Duration.seconds(60)
   */
  readonly consumerTimeout?: Duration;
}

/**
 * A standard SQS queue of retry timers. Task attempts travel on a FIFO queue, which has no
 * per-message delay; a standard queue delays each message by up to 15 minutes, which is how a
 * failed attempt waits out its backoff before the retrier queues the next one.
 * https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-timers.html
 */
export class RetryTimers extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: RetryTimersProps = {}) {
    super(scope, id);
    const common = { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true } as const;
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      ...common,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      ...common,
      visibilityTimeout: (props.consumerTimeout ?? Duration.seconds(60)).plus(Duration.seconds(30)),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });
  }
}
