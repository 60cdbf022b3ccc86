import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { EventBridgeEvent } from 'aws-lambda';
import { completeFromEvent } from '../app/deferred.ts';
import { Metric } from '../core/metric-names.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * The end of deferred work, as AWS reports it through EventBridge rules (lib/airless-scheduler.ts):
 * "Step Functions Execution Status Change" of the state machines this deployment may start, and
 * "ECS Task State Change" (STOPPED) of tasks it started. Records the attempt's outcome, fenced by
 * the attempt (app/deferred.ts). An error is thrown back: Lambda retries an asynchronous
 * invocation twice, over about three minutes (the rules' `retryAttempts` covers EventBridge's
 * delivery, not function errors); should every retry fail, the reaper's check records the end.
 */
async function lambdaHandler(event: EventBridgeEvent<string, unknown>) {
  const outcome = await completeFromEvent(runtime().deps, event);
  logger.info('deferred work event', {
    detailType: event['detail-type'],
    resources: event.resources,
    outcome,
  });
  if (outcome !== 'ignored' && outcome !== 'stale') {
    metrics.addMetric(Metric.DeferredCompleted, MetricUnit.Count, 1);
  }
  return outcome;
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
