import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { publishRunEvents } from '../../app/events.ts';
import { NotFoundError, ThrottledError } from '../../core/errors.ts';
import {
  EventDetailType,
  eventsOfRunChange,
  eventsOfTaskChange,
  uiRunPath,
} from '../../core/events.ts';
import type { RunRecord, TaskInstanceRecord } from '../../core/ports.ts';
import { RUN_STATUSES, TASK_STATUSES } from '../../core/state/index.ts';

const run = (status: RunRecord['status'], extra: Partial<RunRecord> = {}): RunRecord => ({
  dagId: 'etl',
  runId: 'manual__2026-11-27T10:00:00+00:00',
  dagVersion: 1,
  kind: 'manual',
  status,
  logicalDate: '2026-11-27T10:00:00.000Z',
  conf: {},
  taskCount: 2,
  tasksWritten: true,
  createdAt: '2026-11-27T10:00:00.000Z',
  startTime: '2026-11-27T10:00:01.000Z',
  endTime: status === 'failed' ? '2026-11-27T10:00:09.000Z' : null,
  ...extra,
});

const ti = (
  status: TaskInstanceRecord['status'],
  extra: Partial<TaskInstanceRecord> = {},
): TaskInstanceRecord => ({
  dagId: 'etl',
  runId: 'r1',
  taskId: 'load',
  dagVersion: 1,
  status,
  attempt: 1,
  leaseToken: null,
  upstreamCount: 0,
  retryBase: 0,
  generation: 0,
  counts: { success: 0, failed: 0, upstreamFailed: 0, skipped: 0 },
  queuedAt: null,
  leaseExpiresAt: null,
  retryAt: null,
  startTime: null,
  endTime: null,
  error: null,
  deferred: null,
  output: null,
  outputKey: null,
  ...extra,
});

describe('run events', () => {
  it('a run that ends is one Run Status Change, with its ids, status, reason and UI link', () => {
    const [e, ...rest] = eventsOfRunChange(
      { status: 'running' },
      run('failed', { error: 'could not be processed' }),
    );
    expect(rest).toEqual([]);
    expect(e?.detailType).toBe('Airless Run Status Change');
    expect(e?.detail).toMatchObject({
      dagId: 'etl',
      runId: 'manual__2026-11-27T10:00:00+00:00',
      status: 'failed',
      reason: 'could not be processed',
      endTime: '2026-11-27T10:00:09.000Z',
      link: '/dags/etl/runs/manual__2026-11-27T10%3A00%3A00%2B00%3A00',
    });
  });

  it('exactly the changes into an end status are events, for every pair of run statuses', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RUN_STATUSES),
        fc.constantFrom(...RUN_STATUSES),
        (from, to) => {
          const out = eventsOfRunChange({ status: from }, run(to));
          const ends = ['success', 'failed', 'cancelled'].includes(to) && from !== to;
          expect(out).toHaveLength(ends ? 1 : 0);
        },
      ),
    );
  });

  it('a failed attempt is one Task Failed event, saying whether a retry follows', () => {
    const retry = eventsOfTaskChange(
      ti('running'),
      ti('up_for_retry', { error: 'boom', retryAt: '2026-11-27T10:05:00.000Z' }),
    );
    expect(retry.map((e) => [e.detailType, e.detail.willRetry, e.detail.error])).toEqual([
      [EventDetailType.taskFailed, true, 'boom'],
    ]);
    const final = eventsOfTaskChange(ti('running', { attempt: 2 }), ti('failed', { attempt: 2 }));
    expect(final[0]?.detail).toMatchObject({ attempt: 2, willRetry: false, status: 'failed' });
    expect(final[0]?.detail.eventKey).toBe('etl/r1/load/2');
  });

  it('only a change into failed or up_for_retry is a Task Failed event, for every pair', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...TASK_STATUSES),
        fc.constantFrom(...TASK_STATUSES),
        fc.boolean(),
        (from, to, newAttempt) => {
          const out = eventsOfTaskChange(ti(from), ti(to, { attempt: newAttempt ? 2 : 1 }));
          const failedNow = to === 'failed' || to === 'up_for_retry';
          const changed = from !== to || newAttempt;
          expect(out).toHaveLength(failedNow && changed ? 1 : 0);
        },
      ),
    );
  });

  it('links escape every id so that the path stays one path', () => {
    expect(uiRunPath('a/b', 'x?y#z')).toBe('/dags/a%2Fb/runs/x%3Fy%23z');
  });
});

describe('publishing run events', () => {
  const events = eventsOfRunChange({ status: 'running' }, run('failed'));
  const setup = (fail?: unknown) => {
    const counted: [string, number][] = [];
    const logged: string[] = [];
    const published: unknown[] = [];
    const deps = {
      ...memoryDeps(),
      metrics: { addMetric: (name: string, _u: 'Count', n: number) => counted.push([name, n]) },
      events: {
        publish: async (e: readonly unknown[]) => {
          if (fail) throw fail;
          published.push(...e);
        },
      },
    };
    const log = { error: (m: string) => logged.push(m) };
    return { deps, log, counted, logged, published };
  };

  it('puts them and counts them', async () => {
    const s = setup();
    expect(await publishRunEvents(s.deps, events, s.log)).toBe('published');
    expect(s.published).toEqual(events);
    expect(s.counted).toEqual([['EventsPublished', 1]]);
  });

  it('throws when a retry may help: throttled, a 5xx, no answer', async () => {
    for (const fail of [
      new ThrottledError('put events: throttled'),
      Object.assign(new Error('InternalException'), { $metadata: { httpStatusCode: 500 } }),
      new Error('socket hang up'),
    ]) {
      const s = setup(fail);
      await expect(publishRunEvents(s.deps, events, s.log)).rejects.toBe(fail);
      expect(s.counted).toEqual([]);
    }
  });

  it('logs and counts, and lets the run go on, when the bus refuses for good', async () => {
    for (const fail of [
      new NotFoundError('put events: not found'),
      Object.assign(new Error('AccessDeniedException'), { $metadata: { httpStatusCode: 400 } }),
    ]) {
      const s = setup(fail);
      expect(await publishRunEvents(s.deps, events, s.log)).toBe('refused');
      expect(s.logged).toEqual(['run events not published']);
      expect(s.counted).toEqual([['EventsNotPublished', 1]]);
    }
  });

  it('a cleared run that fails again has a new event key', () => {
    const first = eventsOfRunChange({ status: 'running' }, run('failed'));
    const again = eventsOfRunChange(
      { status: 'running' },
      run('failed', { endTime: '2026-11-27T11:00:00.000Z' }),
    );
    expect(first[0]?.detail.eventKey).not.toBe(again[0]?.detail.eventKey);
  });
});
