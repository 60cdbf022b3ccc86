import type { RunRecord, TaskInstanceRecord } from './ports.ts';
import { isTerminalRun } from './state/index.ts';

/**
 * Run events: every run end and every failed attempt, put on EventBridge so that users route
 * alerts with ordinary rules (DESIGN.md section 12), as Step Functions does with its "Execution
 * Status Change" events. They are derived from the stored records' changes (the table's stream,
 * lambdas/advance.ts), so a run end or a failure written by any path (a worker, readiness, the
 * reaper, a cancel) is published, at least once: `eventKey` names the change, for consumers
 * that must not act twice.
 */
export const EVENT_SOURCE = 'airless';

export const EventDetailType = {
  runStatusChange: 'Airless Run Status Change',
  taskFailed: 'Airless Task Failed',
} as const;
export type EventDetailType = (typeof EventDetailType)[keyof typeof EventDetailType];

export interface AirlessEvent {
  readonly detailType: EventDetailType;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** The web UI's page of a run, as a path below the UI's URL (`airless ui`). */
export const uiRunPath = (dagId: string, runId: string) =>
  `/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`;

/** The event a run's change stands for: one when it has just ended. */
export function eventsOfRunChange(
  before: Pick<RunRecord, 'status'> | undefined,
  after: RunRecord,
): AirlessEvent[] {
  if (!isTerminalRun(after.status) || before?.status === after.status) return [];
  return [
    {
      detailType: EventDetailType.runStatusChange,
      detail: {
        // The end time too: a cleared run reopens, and may end with the same status again.
        eventKey: `${after.dagId}/${after.runId}/${after.status}/${after.endTime ?? ''}`,
        dagId: after.dagId,
        runId: after.runId,
        status: after.status,
        kind: after.kind,
        logicalDate: after.logicalDate,
        startTime: after.startTime,
        endTime: after.endTime,
        ...(after.error ? { reason: after.error } : {}),
        link: uiRunPath(after.dagId, after.runId),
      },
    },
  ];
}

/**
 * The event a task instance's change stands for: one when an attempt has just failed, whether a
 * retry follows (`up_for_retry`, `willRetry: true`) or not (`failed`). A task that never ran
 * (`upstream_failed`) had no attempt, so it has no event; its run's end says the rest.
 */
export function eventsOfTaskChange(
  before: Pick<TaskInstanceRecord, 'status' | 'attempt' | 'generation'> | undefined,
  after: TaskInstanceRecord,
): AirlessEvent[] {
  if (after.status !== 'failed' && after.status !== 'up_for_retry') return [];
  if (
    before?.status === after.status &&
    before.attempt === after.attempt &&
    before.generation === after.generation
  ) {
    return [];
  }
  return [
    {
      detailType: EventDetailType.taskFailed,
      detail: {
        eventKey: `${after.dagId}/${after.runId}/${after.taskId}/${after.attempt}`,
        dagId: after.dagId,
        runId: after.runId,
        taskId: after.taskId,
        attempt: after.attempt,
        status: after.status,
        willRetry: after.status === 'up_for_retry',
        retryAt: after.retryAt,
        error: after.error,
        link: uiRunPath(after.dagId, after.runId),
      },
    },
  ];
}
