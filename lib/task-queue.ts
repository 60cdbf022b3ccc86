import { Duration } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface TaskQueueProps {
  /**
   * The timeout of the function that consumes the queue. A received message stays invisible
   * for this long plus a minute, so that it is not redelivered while a worker still runs it.
   * (AWS suggests six times the function timeout, so that throttled batches are retried before
   * they reappear; a redelivery is harmless here because the DynamoDB lease decides who runs an
   * attempt: https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html)
   * @default Duration.minutes(15)
   */
  readonly workerTimeout?: Duration;
  /**
   * Receives before a message moves to the dead-letter queue.
   * @default 5
   */
  readonly maxReceiveCount?: number;
  /**
   * How long a received message stays invisible, when it is not derived from `workerTimeout`:
   * the Fargate workers' queue keeps a message in flight while its attempt runs.
   * @default workerTimeout plus a minute
   */
  readonly visibilityTimeout?: Duration;
}

/** SQS FIFO queue that dispatches task attempts to workers, with its FIFO dead-letter queue. */
export class TaskQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: TaskQueueProps = {}) {
    super(scope, id);
    const common = {
      fifo: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    } as const;
    // A FIFO queue's dead-letter queue must be FIFO too. Keep dead letters for the maximum
    // retention, longer than the source queue's, so that they outlive the original message.
    // https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      ...common,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      ...common,
      // Producers set an explicit MessageDeduplicationId (one per task attempt).
      contentBasedDeduplication: false,
      // High-throughput FIFO: deduplication and the throughput quota apply per message group,
      // so that 1,000 task starts a second spread over many groups.
      // https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/high-throughput-fifo.html
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      visibilityTimeout:
        props.visibilityTimeout ??
        (props.workerTimeout ?? Duration.minutes(15)).plus(Duration.minutes(1)),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount ?? 5 },
    });
  }
}
