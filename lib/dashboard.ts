import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  METRIC_DIMENSIONS,
  METRIC_NAMESPACE,
  Metric,
  type MetricName,
} from '../core/metric-names.ts';

/**
 * One of the metrics that the Airless handlers emit (core/metric-names.ts): namespace
 * `Airless`, the `service` dimension only.
 * @param options statistic, period and label; @default Sum over 5 minutes
 */
export function airlessMetric(
  metricName: MetricName,
  options: cloudwatch.MetricOptions = {},
): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRIC_NAMESPACE,
    metricName,
    dimensionsMap: { ...METRIC_DIMENSIONS },
    statistic: cloudwatch.Stats.SUM,
    period: Duration.minutes(5),
    ...options,
  });
}

/**
 * The DynamoDB operations that adapters/aws/dynamodb.ts calls: the `Operation` values of the
 * table's `ThrottledRequests` metric that can have data.
 */
const TABLE_OPERATIONS = [
  dynamodb.Operation.GET_ITEM,
  dynamodb.Operation.PUT_ITEM,
  dynamodb.Operation.UPDATE_ITEM,
  dynamodb.Operation.DELETE_ITEM,
  dynamodb.Operation.QUERY,
  dynamodb.Operation.BATCH_WRITE_ITEM,
  dynamodb.Operation.TRANSACT_WRITE_ITEMS,
];

export interface DashboardProps {
  /**
   * The dashboard's name.
   * @default - a name that CloudFormation generates
   */
  readonly dashboardName?: string;
  /**
   * The period of every graph.
   * @default Duration.minutes(5)
   */
  readonly period?: Duration;
  /** The functions whose errors, throttles and duration are graphed, by a name for the legend. */
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
  /** The state table, whose throttles are graphed. */
  readonly table: dynamodb.ITable;
  /**
   * The table's global secondary indexes, whose throttle events are graphed too (a throttled
   * index throttles the writes of its table).
   * @default - none
   */
  readonly tableIndexNames?: readonly string[];
  /** The FIFO queue of task attempts: its depth and the age of its oldest message. */
  readonly taskQueue: sqs.IQueue;
  /**
   * The FIFO queue of `fargate` task attempts, whose messages stay in flight while they run.
   * @default - none
   */
  readonly fargateTaskQueue?: sqs.IQueue | undefined;
  /** Queues of work that failed for good, by a name for the legend. */
  readonly deadLetterQueues: Readonly<Record<string, sqs.IQueue>>;
  /**
   * Alarms whose states the dashboard shows at the top.
   * @default - no alarm widget
   */
  readonly alarms?: readonly cloudwatch.IAlarm[];
}

/**
 * The CloudWatch dashboard of an Airless deployment (DESIGN.md, "Operating it"): runs and tasks
 * by outcome, the lag from queued to started, the task queue, the dead-letter queues, each
 * function's errors, throttles and duration, DynamoDB throttles, AWS requests per task and the
 * reaper's repairs. It graphs only the metrics the handlers emit (core/metric-names.ts), which
 * have no dimension per DAG or run, and AWS's own service metrics; per-DAG views are Logs
 * Insights queries on the function logs.
 */
export class Dashboard extends Construct {
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: DashboardProps) {
    super(scope, id);
    const period = props.period ?? Duration.minutes(5);
    const sum = { period, statistic: cloudwatch.Stats.SUM };
    const airless = (name: MetricName, label: string, options: cloudwatch.MetricOptions = {}) =>
      airlessMetric(name, { ...sum, label, ...options });
    const graph = (title: string, left: cloudwatch.IMetric[], more: GraphExtras = {}) =>
      new cloudwatch.GraphWidget({ title, left, width: 12, height: 6, period, ...more });

    this.dashboard = new cloudwatch.Dashboard(this, 'Resource', {
      ...(props.dashboardName === undefined ? {} : { dashboardName: props.dashboardName }),
      defaultInterval: Duration.hours(3),
    });

    if (props.alarms && props.alarms.length > 0) {
      this.dashboard.addWidgets(
        new cloudwatch.AlarmStatusWidget({
          title: 'Alarms',
          alarms: [...props.alarms],
          width: 24,
          height: 4,
          sortBy: cloudwatch.AlarmStatusWidgetSortBy.STATE_UPDATED_TIMESTAMP,
        }),
      );
    }

    this.dashboard.addWidgets(
      graph('Runs by outcome', [
        airless(Metric.RunSucceeded, 'succeeded'),
        airless(Metric.RunFailed, 'failed'),
        airless(Metric.RunCancelled, 'cancelled'),
        airless(Metric.ScheduledRunCreated, 'scheduled runs created'),
      ]),
      graph('Task attempts by outcome', [
        airless(Metric.TaskSucceeded, 'succeeded'),
        airless(Metric.TaskFailed, 'failed'),
        airless(Metric.TaskRetried, 'failed, to retry'),
        airless(Metric.TaskLeaseLost, 'lease lost'),
        airless(Metric.TaskNotClaimed, 'duplicate messages'),
        airless(Metric.TaskDeferred, 'deferred (external work started)'),
        airless(Metric.TaskMapped, 'mapped tasks expanded'),
        airless(Metric.DeferredCompleted, 'deferred, ended by their event'),
        airless(Metric.TaskHandedBack, 'handed back by a stopping worker'),
        airless(Metric.TaskWaiting, 'waiting for a pool slot'),
        airless(Metric.LogWriteFailed, 'logs that could not be written'),
        airless(Metric.TaskEndThrottled, 'outcome writes throttled, tried again'),
      ]),
    );

    this.dashboard.addWidgets(
      graph(
        'Task lag from queued to started (ms)',
        ['p50', 'p99', cloudwatch.Stats.MAXIMUM].map((statistic) =>
          airless(Metric.TaskStartLagMs, statistic, { statistic }),
        ),
      ),
      graph(
        'Task queue: depth and age of the oldest message',
        [
          props.taskQueue.metricApproximateNumberOfMessagesVisible({
            period,
            statistic: cloudwatch.Stats.MAXIMUM,
            label: 'waiting',
          }),
          props.taskQueue.metricApproximateNumberOfMessagesNotVisible({
            period,
            statistic: cloudwatch.Stats.MAXIMUM,
            label: 'in flight',
          }),
          ...(props.fargateTaskQueue
            ? [
                props.fargateTaskQueue.metricApproximateNumberOfMessagesVisible({
                  period,
                  statistic: cloudwatch.Stats.MAXIMUM,
                  label: 'fargate: waiting',
                }),
                props.fargateTaskQueue.metricApproximateNumberOfMessagesNotVisible({
                  period,
                  statistic: cloudwatch.Stats.MAXIMUM,
                  label: 'fargate: running',
                }),
              ]
            : []),
        ],
        {
          right: [
            props.taskQueue.metricApproximateAgeOfOldestMessage({
              period,
              statistic: cloudwatch.Stats.MAXIMUM,
              label: 'oldest message (s)',
            }),
          ],
          rightYAxis: { label: 'seconds', showUnits: false },
        },
      ),
    );

    this.dashboard.addWidgets(
      graph(
        'Dead-letter queues: messages',
        Object.entries(props.deadLetterQueues).map(([name, queue]) =>
          queue.metricApproximateNumberOfMessagesVisible({
            period,
            statistic: cloudwatch.Stats.MAXIMUM,
            label: name,
          }),
        ),
      ),
      graph('Reaper repairs', [
        airless(Metric.ExpiredLeases, 'expired leases (zombie attempts)'),
        airless(Metric.Redispatched, 'task messages sent again'),
        airless(Metric.RetriesQueuedByReaper, 'lost retries queued'),
        airless(Metric.RunsWrittenByReaper, 'large runs written'),
        airless(Metric.RunsStartedByReaper, 'waiting runs started'),
        airless(Metric.DeferredChecked, 'deferred work checked (event late)'),
        airless(Metric.DeferredCheckFailed, 'deferred work that could not be checked'),
        airless(Metric.DeferredStopFailed, 'deferred work not stopped on cancel'),
      ]),
    );

    // Attempts that ran to an outcome: a task that retried costs its requests to the end.
    const requests = airless(Metric.AwsRequests, 'AWS requests');
    const finished = new cloudwatch.MathExpression({
      expression: 'FILL(succeeded, 0) + FILL(failed, 0)',
      usingMetrics: {
        succeeded: airless(Metric.TaskSucceeded, 'succeeded'),
        failed: airless(Metric.TaskFailed, 'failed'),
      },
      label: 'tasks finished',
      period,
    });
    this.dashboard.addWidgets(
      graph(
        'AWS requests per task',
        [
          new cloudwatch.MathExpression({
            // Zero, not a division by zero, in a period where no task finished.
            expression: 'IF(finished > 0, requests / finished, 0)',
            usingMetrics: { requests, finished },
            label: 'AWS requests per finished task (all functions)',
            period,
          }),
        ],
        { right: [requests], rightYAxis: { label: 'requests', showUnits: false } },
      ),
      graph('Registrations, retries, run events and poison input', [
        airless(Metric.DagRegistered, 'DAG files registered'),
        airless(Metric.DagImportError, 'import errors'),
        airless(Metric.RetryQueued, 'retries queued by timers'),
        airless(Metric.UnprocessableRecords, 'unprocessable stream records'),
        airless(Metric.EventsPublished, 'run events put on EventBridge'),
        airless(Metric.EventsNotPublished, 'run events refused by the bus'),
        airless(Metric.PoisonMessages, 'poison messages dead-lettered'),
      ]),
    );

    const fns = Object.entries(props.functions);
    this.dashboard.addWidgets(
      graph(
        'Function errors',
        fns.map(([name, fn]) => fn.metricErrors({ ...sum, label: name })),
      ),
      graph(
        'Function throttles',
        fns.map(([name, fn]) => fn.metricThrottles({ ...sum, label: name })),
      ),
    );
    this.dashboard.addWidgets(
      graph(
        'Function duration (p99, ms)',
        fns.map(([name, fn]) => fn.metricDuration({ period, statistic: 'p99', label: name })),
      ),
      graph(
        'Function invocations',
        fns.map(([name, fn]) => fn.metricInvocations({ ...sum, label: name })),
      ),
    );

    const throttleEvents = (indexName?: string) => {
      const where = indexName ?? 'table';
      const dimensionsMap: Record<string, string> = { TableName: props.table.tableName };
      if (indexName) dimensionsMap.GlobalSecondaryIndexName = indexName;
      return (['ReadThrottleEvents', 'WriteThrottleEvents'] as const).map((metricName) =>
        props.table.metric(metricName, {
          ...sum,
          dimensionsMap,
          label: `${where} ${metricName === 'ReadThrottleEvents' ? 'reads' : 'writes'}`,
        }),
      );
    };
    this.dashboard.addWidgets(
      graph('DynamoDB throttle events (table and indexes)', [
        ...throttleEvents(),
        ...(props.tableIndexNames ?? []).flatMap((name) => throttleEvents(name)),
      ]),
      graph(
        'DynamoDB throttled requests by operation',
        TABLE_OPERATIONS.map((operation) =>
          props.table.metric('ThrottledRequests', {
            ...sum,
            dimensionsMap: { TableName: props.table.tableName, Operation: operation },
            label: operation,
          }),
        ),
      ),
    );
  }

  /** The dashboard's name (what `Ref` returns). */
  get dashboardName(): string {
    return this.dashboard.dashboardName;
  }
}

type GraphExtras = Pick<cloudwatch.GraphWidgetProps, 'right' | 'rightYAxis' | 'leftYAxis'>;
