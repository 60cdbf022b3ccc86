import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import middy from '@middy/core';
import type { Context, DynamoDBRecord, DynamoDBStreamEvent } from 'aws-lambda';
import { advance } from '../app/advance.ts';
import { isTerminalTask, type TaskStatus } from '../core/state/index.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

/**
 * Readiness, driven by the table's stream. Why the stream and not inline in the worker: the
 * stream delivers every committed transition at least once and retries until it is handled
 * (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.Lambda.html), so a
 * worker that dies right after writing its outcome cannot strand the run, and tasks resolved by
 * readiness itself (skipped, upstream_failed) and cancellations flow through the same path. It
 * costs a stream hop of latency per edge (see bench:e2e); reads of the stream by Lambda are free.
 */
const processor = new BatchProcessor(EventType.DynamoDBStreams);

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

async function record(r: DynamoDBRecord) {
  const img = r.dynamodb?.NewImage;
  const old = r.dynamodb?.OldImage;
  if (r.eventName !== 'MODIFY' || !img) return;
  const now = unmarshall(img as Record<string, AttributeValue>);
  const before = old ? unmarshall(old as Record<string, AttributeValue>) : {};
  const status = str(now.status) as TaskStatus | undefined;
  // Only the moment a task instance becomes terminal (the event filter keeps these too; this is
  // the check that counts).
  if (now.type !== 'TI' || !status || !isTerminalTask(status) || before.status === status) return;
  const key = { dagId: String(now.dagId), runId: String(now.runId), taskId: String(now.taskId) };
  await advance(runtime().deps, key, status, Number(now.dagVersion));
  logger.debug('advanced', { ...key, status });
}

async function lambdaHandler(event: DynamoDBStreamEvent, context: Context) {
  return processPartialResponse(event, record, processor, { context });
}

export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics());
