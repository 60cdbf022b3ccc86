import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import { z } from 'zod';
import { triggerRun } from '../app/runs.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * The EventBridge Scheduler target: creates the run for one scheduled time. The input is
 * `{dagId, scheduledTime}`, where Scheduler substitutes the scheduled time
 * (`<aws.scheduler.scheduled-time>`), so a retried or late delivery names the same run.
 */
const input = z.object({
  dagId: z.string().min(1),
  scheduledTime: z.iso.datetime({ offset: true }),
});

async function lambdaHandler(event: unknown) {
  const parsed = input.safeParse(event);
  if (!parsed.success) {
    // Not retryable: Scheduler would only send the same thing again.
    logger.error('bad scheduler input', { event, issues: parsed.error.issues });
    return { ok: false };
  }
  const { deps } = runtime();
  const dag = await deps.store.getDag(parsed.data.dagId);
  if (!dag || dag.deleted || dag.paused) {
    logger.info('skipped: DAG deleted or paused', { dagId: parsed.data.dagId });
    return { ok: true, skipped: true };
  }
  const { run, created } = await triggerRun(deps, {
    dagId: parsed.data.dagId,
    scheduledTime: new Date(parsed.data.scheduledTime),
  });
  logger.info('scheduled run', { dagId: run.dagId, runId: run.runId, created });
  if (created) metrics.addMetric('ScheduledRunCreated', MetricUnit.Count, 1);
  return { ok: true, runId: run.runId, created };
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
