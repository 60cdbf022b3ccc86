import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { decodeTaskMessage } from '../adapters/aws/sqs.ts';
import { executeTask } from '../app/tasks.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * Runs task attempts from the SQS FIFO queue. Records are processed in parallel with the
 * standard batch processor rather than the FIFO one: every task attempt is its own message group
 * (adapters/aws/sqs.ts), so no two records of a batch share a group and there is no order to
 * keep between them. A record fails only when the state store could not be reached; it is then
 * redelivered, and the conditional claim makes a second delivery harmless.
 */
const processor = new BatchProcessor(EventType.SQS);

async function lambdaHandler(event: SQSEvent, context: Context) {
  const { env, deps } = runtime();
  const record = async (r: SQSRecord) => {
    const msg = decodeTaskMessage(r.body);
    const outcome = await executeTask(deps, msg, {
      leaseSeconds: env.LEASE_SECONDS,
      heartbeatSeconds: env.HEARTBEAT_SECONDS,
      remainingMs: () => context.getRemainingTimeInMillis(),
    });
    logger.info('attempt finished', { ...msg, outcome });
    metrics.addMetric(`Task_${outcome}`, MetricUnit.Count, 1);
  };
  return processPartialResponse(event, record, processor, { context });
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
