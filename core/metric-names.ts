/**
 * Every metric that Airless code emits, by name. The handlers emit them as EMF through Powertools
 * Metrics (lambdas/runtime.ts), in the namespace and with the one dimension below (the
 * `POWERTOOLS_METRICS_NAMESPACE` and `POWERTOOLS_SERVICE_NAME` that lib/airless-function.ts
 * sets); the CloudWatch dashboard, the alarms and the `metric*()` methods of `AirlessScheduler`
 * read them from here, so that a name cannot drift between the two sides.
 * test/infra/dashboard.test.ts holds that every name here is passed to `addMetric` somewhere, and
 * that the dashboard shows no Airless metric that is not here.
 *
 * No metric has a dimension per DAG, run or task: 10,000 DAGs would be 10,000 billed metrics.
 * Per-DAG views use Logs Insights on the handlers' log lines, which carry the ids. An outcome is
 * therefore part of the name (`TaskFailed`), not a dimension.
 *
 * This module is plain data: the Lambda bundles and the CDK app both import it.
 */

/** The CloudWatch namespace of every Airless metric. */
export const METRIC_NAMESPACE = 'Airless';

/** The one dimension of every Airless metric: Powertools' default `service` dimension. */
export const METRIC_DIMENSIONS: Readonly<Record<string, string>> = { service: 'airless' };

export const Metric = {
  /** Every handler, each invocation: the AWS requests it made (lambdas/runtime.ts). */
  AwsRequests: 'AwsRequests',

  /** worker, per task attempt: succeeded. */
  TaskSucceeded: 'TaskSucceeded',
  /** worker, per task attempt: failed for good (no retry left, or not retryable). */
  TaskFailed: 'TaskFailed',
  /** worker, per task attempt: failed, and a retry is scheduled (`up_for_retry`). */
  TaskRetried: 'TaskRetried',
  /** worker, per task attempt: the lease moved on while it ran (cancelled or reaped). */
  TaskLeaseLost: 'TaskLeaseLost',
  /** worker, per attempt: its log could not be written (S3 refused it); the outcome stands. */
  LogWriteFailed: 'LogWriteFailed',
  /** worker, per message: a duplicate or stale message, whose claim was refused. */
  TaskNotClaimed: 'TaskNotClaimed',
  /** worker, per attempt of a deferred operator: its external work started, no worker holds it. */
  TaskDeferred: 'TaskDeferred',
  /** worker, per attempt of a mapped task: it expanded into its instances (core/mapping). */
  TaskMapped: 'TaskMapped',
  /** reaper: deferred attempts whose end event was late, whose external work it asked about. */
  DeferredChecked: 'DeferredChecked',
  /** reaper: deferred attempts whose check failed (throttled, access denied): tried next pass. */
  DeferredCheckFailed: 'DeferredCheckFailed',
  /** complete: deferred attempts ended by the AWS event of their external work. */
  DeferredCompleted: 'DeferredCompleted',
  /** cancel: the external work of a cancelled deferred attempt could not be stopped. */
  DeferredStopFailed: 'DeferredStopFailed',
  /** Fargate worker, per attempt: handed back to the queue unfinished because the worker stopped. */
  TaskHandedBack: 'TaskHandedBack',
  /** worker, per delivery: the attempt's pool or DAG cap was full; it waits for a free slot. */
  TaskWaiting: 'TaskWaiting',
  /** worker: a write ending an attempt (outcome, hand-back) throttled by DynamoDB, tried again. */
  TaskEndThrottled: 'TaskEndThrottled',
  /** worker, per claimed attempt: milliseconds from the task's message being sent to its claim. */
  TaskStartLagMs: 'TaskStartLagMs',

  /** A run ended `success` (app/advance.ts). */
  RunSucceeded: 'RunSucceeded',
  /** A run ended `failed` (app/advance.ts, and lambdas/advance.ts for an unprocessable record). */
  RunFailed: 'RunFailed',
  /** A run was cancelled (app/runs.ts: `cancelRun`, and the waiting runs of a deleted DAG). */
  RunCancelled: 'RunCancelled',

  /** trigger: a scheduled run was created (not a repeated delivery). */
  ScheduledRunCreated: 'ScheduledRunCreated',
  /** registrar: a DAG file was registered. */
  DagRegistered: 'DagRegistered',
  /** registrar: a DAG file could not be registered; an import error says why. */
  DagImportError: 'DagImportError',
  /** retrier: a retry timer queued the next attempt. */
  RetryQueued: 'RetryQueued',
  /** worker and retrier: a message that could not be decoded, moved to its dead-letter queue. */
  PoisonMessages: 'PoisonMessages',
  /** advance: run events put on EventBridge (run ends and failed attempts, core/events.ts). */
  EventsPublished: 'EventsPublished',
  /** advance: run events the bus refused for good (deleted, access denied); see its log. */
  EventsNotPublished: 'EventsNotPublished',
  /** advance: a stream record that can never be processed; its run was failed instead. */
  UnprocessableRecords: 'UnprocessableRecords',

  /** reaper, each pass: running attempts whose lease had expired (zombies), failed or retried. */
  ExpiredLeases: 'ExpiredLeases',
  /** reaper, each pass: queued attempts whose message was sent again. */
  Redispatched: 'Redispatched',
  /** reaper, each pass: overdue retries (lost timers) queued. */
  RetriesQueuedByReaper: 'RetriesQueuedByReaper',
  /** reaper, each pass: large runs whose task instances it wrote (lost creation event). */
  RunsWrittenByReaper: 'RunsWrittenByReaper',
  /** reaper, each pass: waiting runs it started into free slots (lost run end). */
  RunsStartedByReaper: 'RunsStartedByReaper',
} as const;

export type MetricName = (typeof Metric)[keyof typeof Metric];
