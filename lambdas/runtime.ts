import { randomUUID } from 'node:crypto';
import { LogFormatter, Logger, LogItem } from '@aws-lambda-powertools/logger';
import type { LogAttributes, UnformattedAttributes } from '@aws-lambda-powertools/logger/types';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type middy from '@middy/core';
import { z } from 'zod';
import { awsClients, takeCapacity, takeRequestCounts } from '../adapters/aws/clients.ts';
import { sendToDeadLetterQueue } from '../adapters/aws/dead-letters.ts';
import { DynamoStateStore } from '../adapters/aws/dynamodb.ts';
import { EventBridgePublisher } from '../adapters/aws/events.ts';
import { S3BlobStore } from '../adapters/aws/s3.ts';
import { EventBridgeScheduleRegistry } from '../adapters/aws/scheduler.ts';
import { SqsTaskDispatcher } from '../adapters/aws/sqs.ts';
import { SqsRetryTimers } from '../adapters/aws/timers.ts';
import type { Deps } from '../app/deps.ts';
import type { ExecuteOutcome } from '../app/tasks.ts';
import { ValidationError } from '../core/errors.ts';
import { Metric } from '../core/metric-names.ts';
import { builtInOperators, parseNetworkList } from '../operators/index.ts';

/**
 * Powertools' structure, less what the log group and the REPORT line already say once per
 * function or invocation (the function's name, ARN and memory size, the sampling rate): about
 * 230 bytes off every line, and CloudWatch Logs bills each byte it ingests (bench:cost).
 * The request id stays (a line's invocation) and the X-Ray trace id (its trace).
 */
export class CompactLogFormatter extends LogFormatter {
  formatAttributes(attributes: UnformattedAttributes, additional: LogAttributes): LogItem {
    return new LogItem({
      attributes: {
        level: attributes.logLevel,
        message: attributes.message,
        timestamp: this.formatTimestamp(attributes.timestamp),
        service: attributes.serviceName,
        cold_start: attributes.lambdaContext?.coldStart,
        function_request_id: attributes.lambdaContext?.awsRequestId,
        xray_trace_id: attributes.xRayTraceId,
      },
    }).addAttributes(additional);
  }
}

/** Shared by every handler in a container: created once, at cold start. */
export const logger = new Logger({ logFormatter: new CompactLogFormatter() });
export const metrics = new Metrics();

const env = z.object({
  TABLE_NAME: z.string().min(1),
  QUEUE_URL: z.string().min(1),
  DAGS_BUCKET: z.string().min(1),
  DATA_BUCKET: z.string().min(1),
  // Only the functions that manage schedules get these (the API and the registrar); the trigger
  // could not (a circular reference), and the worker, advance, retrier and reaper never need them.
  SCHEDULE_GROUP: z.string().default(''),
  TRIGGER_FUNCTION_ARN: z.string().default(''),
  SCHEDULER_ROLE_ARN: z.string().default(''),
  SCHEDULE_DLQ_ARN: z.string().optional(),
  RETRY_QUEUE_URL: z.string().min(1),
  // The EventBridge bus that run events go to (core/events.ts).
  EVENT_BUS_NAME: z.string().min(1).default('default'),
  // Where the worker and the retrier move a message that can never be processed (a poison
  // message), at once rather than after the queue's redrive count.
  TASK_DLQ_URL: z.string().optional(),
  RETRY_DLQ_URL: z.string().optional(),
  // The Fargate workers' queue (DESIGN.md section 9): where `fargate` tasks are sent. Without
  // it the deployment has no Fargate workers and refuses `fargate` tasks at registration.
  FARGATE_QUEUE_URL: z.string().optional(),
  FARGATE_DLQ_URL: z.string().optional(),
  // What the deferred operators may start (the construct's invokableStateMachines and
  // runnableTaskDefinitions), comma-separated ARNs; none means no such operator here.
  STATE_MACHINES: z.string().default(''),
  TASK_DEFINITIONS: z.string().default(''),
  ECS_DEFAULT_SUBNETS: z.string().default(''),
  // How long a deferred attempt waits for its end event before the reaper asks.
  DEFERRED_CHECK_SECONDS: z.coerce.number().int().min(5).default(300),
  // The Fargate worker process (workers/fargate.ts): attempts at once, and the seconds it has
  // between SIGTERM and being killed (the container's stop timeout).
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(100).default(4),
  WORKER_STOP_SECONDS: z.coerce.number().int().min(5).default(120),
  // How many newly ready tasks in a row a Lambda worker runs itself (app/tasks.ts
  // `continuations`), instead of a queue round trip each, and for how long in all
  // (`continuationMs`): a continuation pays off for short tasks, and hands longer work back.
  WORKER_CONTINUATIONS: z.coerce.number().int().min(0).max(1000).default(100),
  WORKER_CONTINUATION_SECONDS: z.coerce.number().min(0).max(900).default(5),
  // The most runs one backfill may create (the maxBackfillRuns prop of AirlessScheduler).
  BACKFILL_MAX_RUNS: z.coerce.number().int().min(1).max(50_000).default(10_000),
  LEASE_SECONDS: z.coerce.number().int().min(10).default(120),
  HEARTBEAT_SECONDS: z.coerce.number().int().min(1).default(30),
  // Set only by an emulator deploy with the fault-injection switch (lib/airless-function.ts).
  AIRLESS_FAULTS: z.enum(['on', 'off']).default('off'),
  // Comma-separated CIDRs that the http operator may reach despite its SSRF guard (the
  // httpAllowedNetworks prop of AirlessScheduler); only the worker is given it.
  HTTP_ALLOWED_NETWORKS: z
    .string()
    .default('')
    .transform((text, ctx) => {
      try {
        return parseNetworkList(text);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }),
});
export type Env = z.infer<typeof env>;

let cached: { env: Env; deps: Deps } | undefined;

/** The environment (checked once) and the adapters behind the application's ports. */
export function runtime(): { env: Env; deps: Deps } {
  if (cached) return cached;
  const parsed = env.safeParse(process.env);
  if (!parsed.success) {
    throw new Error(
      `bad environment: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  const e = parsed.data;
  const list = (text: string) =>
    text
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
  const aws = awsClients();
  const deps: Deps = {
    store: new DynamoStateStore(aws.dynamodb, e.TABLE_NAME),
    dispatcher: new SqsTaskDispatcher(aws.sqs, e.QUEUE_URL, e.FARGATE_QUEUE_URL),
    blobs: new S3BlobStore(aws.s3, { dagsBucket: e.DAGS_BUCKET, dataBucket: e.DATA_BUCKET }),
    schedules: new EventBridgeScheduleRegistry(aws.scheduler, {
      groupName: e.SCHEDULE_GROUP,
      target: {
        arn: e.TRIGGER_FUNCTION_ARN,
        roleArn: e.SCHEDULER_ROLE_ARN,
        ...(e.SCHEDULE_DLQ_ARN ? { deadLetterArn: e.SCHEDULE_DLQ_ARN } : {}),
      },
    }),
    timers: new SqsRetryTimers(aws.sqs, e.RETRY_QUEUE_URL),
    operators: builtInOperators({
      httpAllowedNetworks: e.HTTP_ALLOWED_NETWORKS,
      stateMachines: list(e.STATE_MACHINES),
      taskDefinitions: list(e.TASK_DEFINITIONS),
      ecsDefaultSubnets: list(e.ECS_DEFAULT_SUBNETS),
    }),
    clock: () => new Date(),
    random: Math.random,
    newId: randomUUID,
    metrics,
    faultsEnabled: e.AIRLESS_FAULTS === 'on',
    fargate: Boolean(e.FARGATE_QUEUE_URL),
    events: new EventBridgePublisher(aws.eventbridge, e.EVENT_BUS_NAME),
  };
  cached = { env: e, deps };
  return cached;
}

/**
 * Decodes a queue message; one that can never be decoded (a poison message) is moved to the
 * queue's dead-letter queue at once, counted, logged, and answered with `undefined` so that the
 * caller acknowledges it. Without a dead-letter queue configured, the decoding error escapes and
 * SQS redrives the message after its receive count, as before.
 */
export async function decodeOrDeadLetter<T>(
  record: { readonly messageId: string; readonly body: string },
  decode: (body: string) => T,
  deadLetterQueueUrl: string | undefined,
): Promise<T | undefined> {
  try {
    return decode(record.body);
  } catch (e) {
    if (!(e instanceof ValidationError) || !deadLetterQueueUrl) throw e;
    await sendToDeadLetterQueue(awsClients().sqs, deadLetterQueueUrl, record, e.message);
    logger.error('poison message moved to the dead-letter queue', {
      messageId: record.messageId,
      issues: e.issues,
    });
    metrics.addMetric(Metric.PoisonMessages, MetricUnit.Count, 1);
    return undefined;
  }
}

/**
 * Reports the AWS requests an invocation made, the product's cost: a log line with the breakdown
 * and an `AwsRequests` metric. Use it after `logMetrics`, so the metric is flushed with the rest.
 */
export function awsRequestMetrics(): middy.MiddlewareObj {
  const report = (request: middy.Request) => {
    const counts = takeRequestCounts();
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const event = request.event as { routeKey?: string } | undefined;
    logger.info('aws requests', {
      awsRequests: counts,
      awsRequestTotal: total,
      // DynamoDB capacity units (read, write, of which index writes): its bill.
      dynamoCapacity: takeCapacity(),
      routeKey: event?.routeKey,
    });
    metrics.addMetric('AwsRequests', MetricUnit.Count, total);
  };
  return {
    before: () => {
      takeRequestCounts();
      takeCapacity();
    },
    after: report,
    onError: report,
  };
}

/**
 * One count per attempt, its outcome in the name (no dimension: see metric-names.ts); for the
 * Lambda worker and the Fargate worker alike.
 */
export function countOutcome(outcome: ExecuteOutcome): void {
  switch (outcome) {
    case 'success':
      metrics.addMetric(Metric.TaskSucceeded, MetricUnit.Count, 1);
      return;
    case 'failed':
      metrics.addMetric(Metric.TaskFailed, MetricUnit.Count, 1);
      return;
    case 'up_for_retry':
      metrics.addMetric(Metric.TaskRetried, MetricUnit.Count, 1);
      return;
    case 'lease_lost':
      metrics.addMetric(Metric.TaskLeaseLost, MetricUnit.Count, 1);
      return;
    case 'not_claimed':
      metrics.addMetric(Metric.TaskNotClaimed, MetricUnit.Count, 1);
      return;
    case 'deferred':
      metrics.addMetric(Metric.TaskDeferred, MetricUnit.Count, 1);
      return;
    case 'mapped':
      metrics.addMetric(Metric.TaskMapped, MetricUnit.Count, 1);
      return;
    case 'handed_back':
      metrics.addMetric(Metric.TaskHandedBack, MetricUnit.Count, 1);
      return;
    case 'waiting':
      metrics.addMetric(Metric.TaskWaiting, MetricUnit.Count, 1);
      return;
    default:
      outcome satisfies never;
  }
}
