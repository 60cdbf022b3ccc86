import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { decodeRetryTimer } from '../adapters/aws/timers.ts';
import { onRetryTimer } from '../app/retries.ts';
import { Metric } from '../core/metric-names.ts';
import { awsRequestMetrics, decodeOrDeadLetter, logger, metrics, runtime } from './runtime.ts';

/** Retry timers coming back from the delay queue: queue the next attempt, or wait again. */
const processor = new BatchProcessor(EventType.SQS);

async function lambdaHandler(event: SQSEvent, context: Context) {
  const { env, deps } = runtime();
  const record = async (r: SQSRecord) => {
    const timer = await decodeOrDeadLetter(r, decodeRetryTimer, env.RETRY_DLQ_URL);
    if (!timer) return;
    const outcome = await onRetryTimer(deps, timer);
    logger.info('retry timer', { ...timer, outcome });
    if (outcome === 'queued') metrics.addMetric(Metric.RetryQueued, MetricUnit.Count, 1);
  };
  return processPartialResponse(event, record, processor, { context });
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
