import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { decodeTaskMessage } from '../adapters/aws/sqs.ts';
import { executeTask } from '../app/tasks.ts';
import { Metric } from '../core/metric-names.ts';
import {
  awsRequestMetrics,
  countOutcome,
  decodeOrDeadLetter,
  logger,
  metrics,
  runtime,
} from './runtime.ts';

/**
 * Runs task attempts from the SQS FIFO queue. Records are processed in parallel with the
 * standard batch processor rather than the FIFO one: every task attempt is its own message group
 * (adapters/aws/sqs.ts), so no two records of a batch share a group and there is no order to
 * keep between them. A record fails only when the state store could not be reached; it is then
 * redelivered, and the conditional claim makes a second delivery harmless. A body that is not a
 * task message goes to the dead-letter queue at its first receive.
 */
const processor = new BatchProcessor(EventType.SQS);

/**
 * How long the attempt waited between being queued and being claimed. The message is sent right
 * after the attempt's `queued` write (app/runs.ts `queue`), so its `SentTimestamp` stands for
 * `queuedAt`; a message that the reaper had to send again counts from the resend.
 * https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html (the event's `attributes`)
 */
function startLagMs(r: SQSRecord, claimedAt: number): number | undefined {
  const sent = Number(r.attributes?.SentTimestamp);
  return Number.isFinite(sent) ? Math.max(0, claimedAt - sent) : undefined;
}

async function lambdaHandler(event: SQSEvent, context: Context) {
  const { env, deps } = runtime();
  const record = async (r: SQSRecord) => {
    const msg = await decodeOrDeadLetter(r, decodeTaskMessage, env.TASK_DLQ_URL);
    if (!msg) return;
    // The claim is the first thing executeTask does.
    const claimedAt = deps.clock().getTime();
    const outcome = await executeTask(deps, msg, {
      leaseSeconds: env.LEASE_SECONDS,
      heartbeatSeconds: env.HEARTBEAT_SECONDS,
      deferredCheckSeconds: env.DEFERRED_CHECK_SECONDS,
      remainingMs: () => context.getRemainingTimeInMillis(),
      continuations: env.WORKER_CONTINUATIONS,
      continuationMs: env.WORKER_CONTINUATION_SECONDS * 1000,
      onContinued: (next, outcome) => {
        logger.info('attempt finished', { ...next, outcome, continued: true });
        countOutcome(outcome);
      },
    });
    logger.info('attempt finished', { ...msg, outcome });
    countOutcome(outcome);
    // A refused claim started nothing: its lag would count a duplicate, not a start.
    const lag = outcome === 'not_claimed' ? undefined : startLagMs(r, claimedAt);
    if (lag !== undefined) metrics.addMetric(Metric.TaskStartLagMs, MetricUnit.Milliseconds, lag);
  };
  return processPartialResponse(event, record, processor, { context });
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
