import { z } from 'zod';

/**
 * Fault injection, for the test deploy only: named points in the application where a Lambda or
 * worker can be made to crash, stall or repeat itself on purpose, so that tests can check that
 * no task or run is lost or doubled when it happens for real. A DAG asks for faults in its
 * `params.airlessFaults`; a deployment honours them only when it was synthesized with the
 * emulator-only switch (lib/airless-function.ts), so on AWS they are inert data.
 */
export const FAULT_POINTS = [
  /** The worker claimed the attempt; the operator has not started. */
  'worker.after-claim',
  /** The operator ran (its side effect is done); neither its log nor its outcome is written. */
  'worker.before-outcome',
  /**
   * The outcome is written; nothing after it has happened (readiness from a success, the retry
   * timer of a failure, the message's deletion).
   */
  'worker.after-outcome',
  /**
   * A success was refused (its lease was lost) after going out in one request with the claim of
   * its continuation, which is tentative (app/tasks.ts); that claim is not withdrawn yet.
   */
  'worker.before-withdraw',
  /** Readiness (the worker's, after a success) queued downstream tasks; their messages are not sent. */
  'advance.before-dispatch',
  /** Readiness counted the task in the run's progress; the run end is not written. */
  'advance.before-run-end',
  /** A trigger created the run; it has not started it. */
  'trigger.after-create',
  /**
   * A mapped task's attempt wrote its instances and sent their messages; it still holds its
   * lease (core/mapping).
   */
  'mapping.after-expand',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export const faultRule = z.strictObject({
  point: z.enum(FAULT_POINTS),
  /** Where: a task (the task that runs, or the finished task whose event is advanced). */
  taskId: z.string().optional(),
  attempt: z.int().min(1).optional(),
  /**
   * crash: the invocation fails at once, as if its process died (its message or stream record
   * comes back); stall: it waits `stallSeconds` there; repeat: the step's effect is delivered
   * twice (a duplicate message or event).
   */
  action: z.enum(['crash', 'stall', 'repeat']),
  stallSeconds: z.number().min(0).max(900).optional(),
  /** At most this many times for the run (default 1): the repair that follows is not faulted. */
  times: z.int().min(1).max(10).optional(),
});
export type FaultRule = z.infer<typeof faultRule>;

/** The rules of a DAG's params that apply at this point; malformed rules are ignored. */
export function faultsAt(
  params: Readonly<Record<string, unknown>>,
  point: FaultPoint,
  where: { readonly taskId?: string; readonly attempt?: number },
): { readonly rule: FaultRule; readonly index: number }[] {
  const rules = params.airlessFaults;
  if (!Array.isArray(rules)) return [];
  const out: { rule: FaultRule; index: number }[] = [];
  rules.forEach((raw, index) => {
    const r = faultRule.safeParse(raw);
    if (!r.success || r.data.point !== point) return;
    if (r.data.taskId !== undefined && r.data.taskId !== where.taskId) return;
    if (r.data.attempt !== undefined && r.data.attempt !== where.attempt) return;
    out.push({ rule: r.data, index });
  });
  return out;
}

/** The name under which a rule's uses are counted for one run (so that `times` holds). */
export function faultUseName(
  rule: FaultRule,
  run: { readonly dagId: string; readonly runId: string },
  index: number,
): string {
  return `${run.dagId}#${run.runId}#${rule.point}#${rule.taskId ?? '*'}#${rule.attempt ?? '*'}#${index}`;
}
