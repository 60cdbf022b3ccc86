import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import middy from '@middy/core';
import type { Context, DynamoDBRecord, DynamoDBStreamEvent } from 'aws-lambda';
import { toRun, toTask } from '../adapters/aws/dynamodb.ts';
import { advance, failUnprocessableRun } from '../app/advance.ts';
import { publishRunEvents } from '../app/events.ts';
import { writeRunTasks } from '../app/runs.ts';
import { AirlessError } from '../core/errors.ts';
import { eventsOfRunChange, eventsOfTaskChange } from '../core/events.ts';
import { Metric } from '../core/metric-names.ts';
import { isTerminalTask, type RunStatus, type TaskStatus } from '../core/state/index.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * Readiness for the terminal writes that no one advances inline, driven by the table's stream:
 * failures (the worker's, the reaper's), cancels, clears and deferred ends, and run events. The
 * common path does not come here: a worker that writes a success advances readiness itself
 * (app/tasks.ts), and the stream's filter drops that record (`advanceInline`), so that an edge
 * of a DAG costs no stream hop (about 200 ms on AWS) and no invocation. The stream stays for the
 * rest because it delivers every committed write at least once and retries until it is handled
 * (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.Lambda.html), which
 * makes it the simplest repair for writers that have no message of their own to come back.
 */
const processor = new BatchProcessor(EventType.DynamoDBStreams);

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

async function handle(r: DynamoDBRecord) {
  const img = r.dynamodb?.NewImage;
  const old = r.dynamodb?.OldImage;
  if (!img) return;
  const now = unmarshall(img as Record<string, AttributeValue>);
  const before = old ? unmarshall(old as Record<string, AttributeValue>) : {};
  const { deps } = runtime();
  // A large run was created with its run item alone: write its task instances and start it.
  if (r.eventName === 'INSERT' && now.type === 'RUN' && now.tasksWritten === false) {
    const result = await writeRunTasks(deps, String(now.dagId), String(now.runId));
    logger.info('run tasks written', { dagId: now.dagId, runId: now.runId, result });
    return;
  }
  if (r.eventName !== 'MODIFY') return;
  const status = str(now.status) as TaskStatus | undefined;
  // Only the moment a task instance becomes terminal (the event filter keeps these too; this is
  // the check that counts).
  // (A clear can write a task from one terminal status to the same one in a new generation.)
  const unchanged = before.status === status && before.generation === now.generation;
  // An outcome whose writer advanced readiness itself (a worker's success, a resolution) is
  // not this function's: the filter drops it, and this is the check that counts.
  if (now.type === 'TI' && status && isTerminalTask(status) && !unchanged && !now.advanceInline) {
    const key = {
      dagId: String(now.dagId),
      runId: String(now.runId),
      taskId: String(now.taskId),
      // A mapped task's instance: which expansion it counts towards (core/mapping).
      ...(typeof now.mapAttempt === 'number' && typeof now.mapLength === 'number'
        ? { mapAttempt: now.mapAttempt, mapLength: now.mapLength }
        : {}),
      ...(now.uncounted === true ? { uncounted: true } : {}),
    };
    await advance(deps, key, status, Number(now.dagVersion), Number(now.generation ?? 0));
    logger.debug('advanced', { ...key, status });
  }
  // Run events: a run that ended, an attempt that failed (core/events.ts). After readiness, so
  // that a bus that refuses them can never hold up or fail a run.
  const events =
    now.type === 'RUN'
      ? eventsOfRunChange(old ? { status: before.status as RunStatus } : undefined, toRun(now))
      : now.type === 'TI'
        ? eventsOfTaskChange(old ? toTask(before) : undefined, toTask(now))
        : [];
  if (events.length > 0)
    await publishRunEvents(deps, events, {
      error: (message, extra) => logger.error(message, extra),
    });
}

/**
 * A record that can never be processed (its DAG version is unreadable, a write it needs is
 * refused for good) must not hold up the records behind it on the shard: its run fails with the
 * reason, an error metric raises the alarm, and the batch moves on. Only errors that a retry can
 * fix (throttling, a service that is down) are reported as batch item failures.
 */
async function record(r: DynamoDBRecord) {
  try {
    await handle(r);
  } catch (e) {
    if (!(e instanceof AirlessError) || e.retryable) throw e;
    const img = unmarshall((r.dynamodb?.NewImage ?? {}) as Record<string, AttributeValue>);
    const dagId = String(img.dagId);
    const runId = String(img.runId);
    logger.error('unprocessable record: failing its run', { dagId, runId, error: e.message });
    metrics.addMetric(Metric.UnprocessableRecords, MetricUnit.Count, 1);
    await failUnprocessableRun(runtime().deps, dagId, runId, e.message);
  }
}

/** Set by the emulator deploy only (lib/airless-function.ts): its stream source ignores partial failures. */
const failWholeBatch = process.env.STREAM_PARTIAL_FAILURES === 'fail-batch';

async function lambdaHandler(event: DynamoDBStreamEvent, context: Context) {
  const response = await processPartialResponse(event, record, processor, { context });
  if (failWholeBatch && response.batchItemFailures.length > 0) {
    throw new Error(
      `${response.batchItemFailures.length} of ${event.Records.length} records failed: retrying the batch`,
    );
  }
  return response;
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
