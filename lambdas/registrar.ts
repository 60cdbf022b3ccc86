import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { S3Event } from 'aws-lambda';
import { registerDag } from '../app/dags.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * Registers DAG files uploaded under `dags/` in the DAGs bucket. A valid file becomes a new DAG
 * version (and schedule); an invalid one is recorded as an import error, and nothing else.
 */
async function lambdaHandler(event: S3Event) {
  const { deps } = runtime();
  for (const r of event.Records) {
    // Keys in S3 events are URL-encoded, with spaces as '+'.
    const key = decodeURIComponent(r.s3.object.key.replace(/\+/g, ' '));
    if (!key.startsWith('dags/') || !key.endsWith('.json')) continue;
    const text = await deps.blobs.getDagFile(key);
    if (text === undefined) continue; // deleted since the event was sent
    const result = await registerDag(deps, text);
    if (result.ok) {
      await deps.store.clearImportError(key);
      logger.info('registered', {
        key,
        dagId: result.dagId,
        version: result.version,
        created: result.created,
      });
      metrics.addMetric('DagRegistered', MetricUnit.Count, 1);
    } else {
      await deps.store.putImportError({
        key,
        ...(result.dagId ? { dagId: result.dagId } : {}),
        errors: result.issues,
        time: deps.clock().toISOString(),
      });
      logger.warn('import error', { key, issues: result.issues });
      metrics.addMetric('DagImportError', MetricUnit.Count, 1);
    }
  }
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
