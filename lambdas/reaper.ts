import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import { reap } from '../app/reaper.ts';
import { Metric } from '../core/metric-names.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/** Every minute (an EventBridge rule): expired leases, lost messages, lost retry timers. */
async function lambdaHandler() {
  const { env, deps } = runtime();
  const report = await reap(deps, {
    queuedGraceSeconds: 120,
    retryGraceSeconds: 30,
    limit: 200,
    deferredCheckSeconds: env.DEFERRED_CHECK_SECONDS,
  });
  logger.info('reaped', { ...report });
  metrics.addMetric(Metric.ExpiredLeases, MetricUnit.Count, report.expiredLeases);
  metrics.addMetric(Metric.DeferredChecked, MetricUnit.Count, report.deferredChecked);
  metrics.addMetric(Metric.Redispatched, MetricUnit.Count, report.redispatched);
  metrics.addMetric(Metric.RetriesQueuedByReaper, MetricUnit.Count, report.retriesQueued);
  metrics.addMetric(Metric.RunsWrittenByReaper, MetricUnit.Count, report.runsWritten);
  metrics.addMetric(Metric.RunsStartedByReaper, MetricUnit.Count, report.runsStarted);
  return report;
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
