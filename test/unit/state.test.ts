import { describe, expect, it } from 'vitest';
import { InvalidTransitionError } from '../../core/errors.ts';
import {
  cancelTask,
  canTransitionRun,
  canTransitionTask,
  claimTask,
  clearTask,
  finishTask,
  heartbeatTask,
  isTerminalTask,
  manualRunId,
  queueTask,
  resolveTask,
  scheduledRunId,
  TASK_STATUSES,
  TASK_TRANSITIONS,
  type TaskInstanceState,
  type TaskStatus,
} from '../../core/state/index.ts';

const at = new Date('2026-03-09T06:30:00.000Z');
const ti = (
  status: TaskStatus,
  attempt = 0,
  leaseToken: string | null = null,
): TaskInstanceState => ({
  status,
  attempt,
  leaseToken,
});

describe('task-instance transitions', () => {
  it('walk a task through queue → claim → heartbeat → success, with 1-based attempts', () => {
    const q = queueTask(ti('pending'), at);
    expect(q.expect).toEqual({ status: 'pending', attempt: 0, leaseToken: null });
    expect(q.set).toMatchObject({ status: 'queued', attempt: 1, leaseToken: null });

    const c = claimTask(q.set, 'lease-1', 60, at);
    expect(c.expect).toEqual({ status: 'queued', attempt: 1, leaseToken: null });
    expect(c.set).toMatchObject({
      status: 'running',
      attempt: 1,
      leaseToken: 'lease-1',
      leaseExpiresAt: '2026-03-09T06:31:00.000Z',
      startTime: at.toISOString(),
    });

    const later = new Date(at.getTime() + 30_000);
    const h = heartbeatTask(c.set, 60, later);
    expect(h.expect).toEqual({ status: 'running', attempt: 1, leaseToken: 'lease-1' });
    expect(h.set.leaseExpiresAt).toBe('2026-03-09T06:31:30.000Z');

    const f = finishTask(h.set, { ok: true }, later);
    expect(f.expect.leaseToken).toBe('lease-1');
    expect(f.set).toMatchObject({ status: 'success', attempt: 1, leaseToken: null });
  });

  it('a failure with a retry time goes to up_for_retry, and the next queue is attempt 2', () => {
    const retryAt = new Date(at.getTime() + 10_000);
    const f = finishTask(ti('running', 1, 'x'), { ok: false, error: 'boom', retryAt }, at);
    expect(f.set).toMatchObject({
      status: 'up_for_retry',
      retryAt: retryAt.toISOString(),
      error: 'boom',
    });
    expect(queueTask(f.set, retryAt).set).toMatchObject({ status: 'queued', attempt: 2 });
  });

  it('a failure without a retry time is final', () => {
    const f = finishTask(ti('running', 3, 'x'), { ok: false, error: 'boom', retryAt: null }, at);
    expect(f.set).toMatchObject({ status: 'failed', attempt: 3, error: 'boom' });
  });

  it('clear keeps the attempt count, so the rerun gets a new attempt number', () => {
    const c = clearTask(ti('failed', 3), at);
    expect(c.set).toMatchObject({ status: 'pending', attempt: 3 });
    expect(queueTask(c.set, at).set.attempt).toBe(4);
  });

  it('resolve and cancel', () => {
    expect(resolveTask(ti('pending'), 'upstream_failed', at).set.status).toBe('upstream_failed');
    expect(cancelTask(ti('running', 1, 'x'), at).expect.leaseToken).toBe('x');
  });

  it('refuses transitions the table does not allow', () => {
    expect(() => claimTask(ti('pending'), 't', 60, at)).toThrow(InvalidTransitionError);
    expect(() => queueTask(ti('running', 1, 'x'), at)).toThrow(/cannot queue .* from "running"/);
    expect(() => finishTask(ti('queued', 1), { ok: true }, at)).toThrow(InvalidTransitionError);
    expect(() => cancelTask(ti('success', 1), at)).toThrow(InvalidTransitionError);
    expect(() => clearTask(ti('running', 1, 'x'), at)).toThrow(InvalidTransitionError);
  });

  it('every terminal status can only be left by clear', () => {
    for (const from of TASK_STATUSES.filter(isTerminalTask)) {
      const exits = Object.entries(TASK_TRANSITIONS)
        .filter(([, t]) => (t.from as readonly TaskStatus[]).includes(from))
        .map(([event]) => event);
      expect(exits, from).toEqual(['clear']);
    }
  });

  it('every non-terminal status can be cancelled', () => {
    for (const from of TASK_STATUSES.filter((s) => !isTerminalTask(s))) {
      expect(canTransitionTask('cancel', from, 'cancelled'), from).toBe(true);
    }
  });
});

describe('run transitions', () => {
  it('follow the documented run and task statuses', () => {
    expect(canTransitionRun('start', 'queued', 'running')).toBe(true);
    expect(canTransitionRun('finish', 'running', 'success')).toBe(true);
    // A run whose first tasks all finished before its start was written ends from `queued`.
    expect(canTransitionRun('finish', 'queued', 'success')).toBe(true);
    expect(canTransitionRun('finish', 'cancelled', 'success')).toBe(false);
    expect(canTransitionRun('start', 'success', 'running')).toBe(false);
    expect(canTransitionRun('cancel', 'success', 'cancelled')).toBe(false);
    expect(canTransitionRun('reopen', 'failed', 'running')).toBe(true);
  });
});

describe('run ids', () => {
  it('are a pure function of the run identity', () => {
    expect(scheduledRunId(at)).toBe('scheduled__2026-03-09T06:30:00.000Z');
    expect(scheduledRunId(new Date(at.getTime()))).toBe(scheduledRunId(at));
    expect(manualRunId('nightly-fix-42')).toBe('manual__nightly-fix-42');
  });
});
