import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import { z } from 'zod';
import { loadDag } from '../app/dags.ts';
import { triggerRun } from '../app/runs.ts';
import { compileSchedule, previousRun } from '../core/cron/index.ts';
import { Metric } from '../core/metric-names.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * The EventBridge Scheduler target: creates the run for one scheduled time. The input is
 * `{dagId, scheduledTime}`, where Scheduler substitutes the scheduled time
 * (`<aws.scheduler.scheduled-time>`), so a retried or late delivery names the same run.
 */
const input = z.object({ dagId: z.string().min(1), scheduledTime: z.string() });
const iso = z.iso.datetime({ offset: true });

/**
 * Off on AWS, where Scheduler always substitutes the scheduled time. The local deploy turns it on
 * for the emulator, which passes the placeholder through: the logical date is then the schedule's
 * latest fire time at or before the invocation. That is right for an on-time delivery and wrong
 * for a late one, which is why AWS deployments never use it.
 */
const fallback = process.env.SCHEDULED_TIME_FALLBACK === 'latest-fire-time';

async function lambdaHandler(event: unknown) {
  const parsed = input.safeParse(event);
  if (!parsed.success) {
    // Not retryable: Scheduler would only send the same thing again.
    logger.error('bad scheduler input', { event, issues: parsed.error.issues });
    return { ok: false };
  }
  const { deps } = runtime();
  const { dagId } = parsed.data;
  const dag = await deps.store.getDag(dagId);
  if (!dag || dag.deleted || dag.paused) {
    logger.info('skipped: DAG deleted or paused', { dagId });
    return { ok: true, skipped: true };
  }
  let scheduledTime: Date | undefined;
  if (iso.safeParse(parsed.data.scheduledTime).success) {
    scheduledTime = new Date(parsed.data.scheduledTime);
  } else if (fallback && dag.schedule) {
    const compiled = compileSchedule(dag.schedule.cron, dag.schedule.timezone);
    if (compiled.ok) scheduledTime = previousRun(compiled.spec, compiled.timezone, deps.clock());
  }
  if (!scheduledTime) {
    logger.error('no scheduled time in the scheduler input', { event });
    return { ok: false };
  }
  // The schedule fires from its creation; its DAG's runs begin at its startDate.
  const { dag: doc } = await loadDag(deps, dagId, dag.latestVersion);
  const start = doc.schedule?.startDate;
  if (start && scheduledTime.getTime() < Date.parse(start)) {
    logger.info('skipped: before the schedule startDate', { dagId, startDate: start });
    return { ok: true, skipped: true };
  }
  const { run, created } = await triggerRun(deps, { dagId, scheduledTime });
  logger.info('scheduled run', { dagId, runId: run.runId, created });
  if (created) metrics.addMetric(Metric.ScheduledRunCreated, MetricUnit.Count, 1);
  return { ok: true, runId: run.runId, created };
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
