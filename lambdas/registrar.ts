import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { S3Event, S3EventRecord } from 'aws-lambda';
import { boundIssues, deleteDag, registerDag, unregisterDagFile } from '../app/dags.ts';
import { AirlessError, ConflictError, type Issue } from '../core/errors.ts';
import { Metric } from '../core/metric-names.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * Registers DAG files under `dags/` in the DAGs bucket, as Airflow's DAG processor does: a valid
 * file becomes a new DAG version (and schedule); a file that cannot be registered, for whatever
 * reason, leaves an import error that says why, and nothing else; a removed file removes its
 * DAG (history kept).
 */
async function onRecord(r: S3EventRecord) {
  const { deps } = runtime();
  // Keys in S3 events are URL-encoded, with spaces as '+'.
  const key = decodeURIComponent(r.s3.object.key.replace(/\+/g, ' '));
  if (!key.startsWith('dags/') || !key.endsWith('.json')) return;
  if (r.eventName.startsWith('ObjectRemoved')) {
    // A later upload of the same key may have landed since: only a file that is gone counts.
    if ((await deps.blobs.getDagFile(key)) !== undefined) return;
    const dagId = await unregisterDagFile(deps, key);
    await deps.store.clearImportError(key);
    logger.info('DAG file removed', { key, dagId });
    return;
  }
  const text = await deps.blobs.getDagFile(key);
  if (text === undefined) return; // deleted since the event was sent
  const previous = await deps.store.dagOfFile(key);
  let issues: readonly Issue[];
  let dagId: string | undefined;
  let unexpected: unknown;
  try {
    const result = await registerDag(deps, text, undefined, key);
    if (result.ok) {
      await deps.store.clearImportError(key);
      // The file now declares another dagId: the DAG it declared before goes, as in Airflow.
      if (previous && previous !== result.dagId) {
        const old = await deps.store.getDag(previous);
        if (old && !old.deleted && old.fileKey === key) await deleteDag(deps, previous);
      }
      logger.info('registered', {
        key,
        dagId: result.dagId,
        version: result.version,
        created: result.created,
      });
      metrics.addMetric(Metric.DagRegistered, MetricUnit.Count, 1);
      if (result.warnings.length > 0) {
        logger.warn('registered with warnings', { key, warnings: result.warnings });
      }
      return;
    }
    issues = result.issues;
    dagId = result.dagId;
  } catch (e) {
    // Retryable errors (throttling) go back to S3's retries. Anything else must be seen: it
    // becomes the import error. An unexpected error is also thrown, so that S3's retries try
    // again (a later success clears the import error).
    if (e instanceof AirlessError && e.retryable) throw e;
    unexpected = !(e instanceof AirlessError);
    issues =
      e instanceof ConflictError
        ? [{ path: '$.dagId', message: e.message }]
        : [{ path: '$', message: `could not be registered: ${(e as Error).message}` }];
  }
  await deps.store.putImportError({
    key,
    ...(dagId ? { dagId } : {}),
    errors: boundIssues(issues),
    time: deps.clock().toISOString(),
  });
  logger.warn('import error', { key, issues: issues.slice(0, 10), count: issues.length });
  metrics.addMetric(Metric.DagImportError, MetricUnit.Count, 1);
  if (unexpected) throw new Error(`registering ${key} failed: ${issues[0]?.message}`);
}

async function lambdaHandler(event: S3Event) {
  for (const r of event.Records) await onRecord(r);
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
