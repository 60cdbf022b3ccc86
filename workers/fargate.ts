// The Fargate worker (DESIGN.md section 9): a long-running process that takes `fargate` task
// attempts from their SQS FIFO queue and runs them with the same code as the Lambda worker
// (app/tasks.ts executeTask, through app/worker-loop.ts). In AWS it is the container of the
// Fargate service (lib/fargate-workers.ts); locally `npm start` runs copies of it as plain Node
// processes against the emulator (localstack/workers.ts). Bundled to dist/fargate-worker.mjs.
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { awsClients, takeRequestCounts } from '../adapters/aws/clients.ts';
import { SqsTaskSource } from '../adapters/aws/task-source.ts';
import { runWorkerLoop } from '../app/worker-loop.ts';
import { Metric } from '../core/metric-names.ts';
import { countOutcome, logger, metrics, runtime } from '../lambdas/runtime.ts';

const { env, deps } = runtime();
if (!env.FARGATE_QUEUE_URL) {
  logger.error('FARGATE_QUEUE_URL is not set: this worker has no queue to take tasks from');
  process.exit(2);
}

const stop = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    logger.info('stopping: no new attempts; running ones finish or are handed back', { signal });
    stop.abort();
  });
}

logger.info('fargate worker started', { concurrency: env.WORKER_CONCURRENCY, pid: process.pid });
const report = await runWorkerLoop(
  deps,
  // A claimed message is kept for two leases at each heartbeat.
  new SqsTaskSource(
    awsClients().sqs,
    env.FARGATE_QUEUE_URL,
    env.FARGATE_DLQ_URL,
    env.LEASE_SECONDS * 2,
  ),
  {
    concurrency: env.WORKER_CONCURRENCY,
    leaseSeconds: env.LEASE_SECONDS,
    heartbeatSeconds: env.HEARTBEAT_SECONDS,
    deferredCheckSeconds: env.DEFERRED_CHECK_SECONDS,
    stop: stop.signal,
    // Keep 10 s of the stop timeout for handing back what still runs.
    drainMs: Math.max(1, env.WORKER_STOP_SECONDS - 10) * 1000,
    onOutcome: (message, outcome, lag) => {
      logger.info('attempt finished', { ...message, outcome, pid: process.pid });
      countOutcome(outcome);
      if (lag !== undefined) metrics.addMetric(Metric.TaskStartLagMs, MetricUnit.Milliseconds, lag);
      const counts = takeRequestCounts();
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      metrics.addMetric(Metric.AwsRequests, MetricUnit.Count, total);
      // EMF on stdout: the container's log driver sends it to CloudWatch, which extracts it.
      metrics.publishStoredMetrics();
    },
    onError: (message, error) =>
      logger.error('attempt error', { ...message, error: error as Error }),
  },
);
logger.info('fargate worker stopped', { ...report });
process.exit(0);
