import { describe, expect, it } from 'vitest';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { clearTasks } from '../../app/clear.ts';
import { registerDag } from '../../app/dags.ts';
import { triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import { validateDag } from '../../core/dag/validate.ts';
import type { TaskMessage } from '../../core/ports.ts';

/**
 * The `branch` operator (operators/branch.ts): the tasks it chose run, the others are skipped,
 * and the skip spreads by trigger rules (app/advance.ts, app/branch.ts). On the in-memory
 * ports; test/e2e/data-flow.test.ts runs a branch on the emulator.
 */
async function setup(tasks: object[], conf: Record<string, unknown> = {}) {
  const deps = memoryDeps();
  const dagId = `br_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(deps, JSON.stringify({ dagId, tasks }));
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId, conf });
  const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
  const drain = async () => {
    for (let i = 0; i < 50 && deps.dispatcher.waiting.length > 0; i++) {
      await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
    }
  };
  await drain();
  const statuses = async () =>
    Object.fromEntries(
      (await deps.store.listTaskInstances(dagId, run.runId)).map((t) => [t.taskId, t.status]),
    );
  const task = (taskId: string) => deps.store.getTaskInstance({ dagId, runId: run.runId, taskId });
  const runStatus = async () => (await deps.store.getRun(dagId, run.runId))?.status;
  return { deps, dagId, runId: run.runId, statuses, task, runStatus, drain };
}

/** pick → (left → left2 | right → right2) → join, the join running after either side. */
const diamond = (follow: unknown, joinRule = 'none_failed_min_one_success') => [
  { taskId: 'pick', operator: 'branch', config: { follow } },
  { taskId: 'left', operator: 'noop', dependsOn: ['pick'] },
  { taskId: 'left2', operator: 'noop', dependsOn: ['left'] },
  { taskId: 'right', operator: 'noop', dependsOn: ['pick'] },
  { taskId: 'right2', operator: 'noop', dependsOn: ['right'] },
  { taskId: 'join', operator: 'noop', dependsOn: ['left2', 'right2'], triggerRule: joinRule },
];

describe('branch', () => {
  it('runs the chosen side, skips the other down to the join, and the join runs', async () => {
    const { statuses, runStatus } = await setup(diamond('left'));
    expect(await statuses()).toEqual({
      pick: 'success',
      left: 'success',
      left2: 'success',
      right: 'skipped',
      right2: 'skipped',
      join: 'success',
    });
    expect(await runStatus()).toBe('success');
  });

  it('follows a template of the run’s conf, and spreads the skip to an all_success join', async () => {
    const { statuses, runStatus } = await setup(diamond('{{ conf.side }}', 'all_success'), {
      side: 'right',
    });
    expect(await statuses()).toEqual({
      pick: 'success',
      left: 'skipped',
      left2: 'skipped',
      right: 'success',
      right2: 'success',
      join: 'skipped',
    });
    expect(await runStatus()).toBe('success');
  });

  it('skips the tasks it did not choose whatever their rule, as Airflow does', async () => {
    const { statuses } = await setup([
      { taskId: 'pick', operator: 'branch', config: { follow: 'a' } },
      { taskId: 'a', operator: 'noop', dependsOn: ['pick'] },
      { taskId: 'done', operator: 'noop', dependsOn: ['pick'], triggerRule: 'all_done' },
      { taskId: 'nf', operator: 'noop', dependsOn: ['pick'], triggerRule: 'none_failed' },
      { taskId: 'after', operator: 'noop', dependsOn: ['done'], triggerRule: 'all_done' },
    ]);
    // `after` is not the branch's to skip: its own rule runs it once `done` is skipped.
    expect(await statuses()).toEqual({
      pick: 'success',
      a: 'success',
      done: 'skipped',
      nf: 'skipped',
      after: 'success',
    });
  });

  it('leaves alone a direct downstream task that is also downstream of the chosen one', async () => {
    const { statuses } = await setup([
      { taskId: 'pick', operator: 'branch', config: { follow: 'a' } },
      { taskId: 'a', operator: 'noop', dependsOn: ['pick'] },
      { taskId: 'join', operator: 'noop', dependsOn: ['pick', 'a'] },
    ]);
    expect(await statuses()).toEqual({ pick: 'success', a: 'success', join: 'success' });
  });

  it('follows several, or none', async () => {
    const both = await setup(diamond(['left', 'right']));
    expect(Object.values(await both.statuses()).every((s) => s === 'success')).toBe(true);
    const none = await setup(diamond([]));
    expect(await none.statuses()).toMatchObject({
      pick: 'success',
      left: 'skipped',
      join: 'skipped',
    });
  });

  it('fails the attempt for good when it names a task that is not directly downstream', async () => {
    const { task, statuses } = await setup(
      diamond('{{ conf.side }}').map((t) => (t.taskId === 'pick' ? { ...t, retries: 2 } : t)),
      { side: 'left2' },
    );
    const pick = await task('pick');
    expect(pick?.status).toBe('failed');
    expect(pick?.error).toContain('"left2" is not directly downstream of pick');
    expect(await statuses()).toMatchObject({ left: 'pending', right: 'pending' });
  });

  it('keeps a skipped task skipped when it alone is cleared: the branch still chose the other side', async () => {
    // With a rule that would run it on a skipped upstream: the branch's skip is not the rule's.
    const { deps, dagId, runId, statuses, drain } = await setup(
      diamond('left').map((t) => (t.taskId === 'right' ? { ...t, triggerRule: 'all_done' } : t)),
    );
    await clearTasks(deps, dagId, runId, 'right');
    await drain();
    expect(await statuses()).toMatchObject({
      right: 'skipped',
      right2: 'skipped',
      join: 'success',
    });
  });

  it('is refused at registration when a fixed choice is not directly downstream', () => {
    const r = validateDag({ dagId: 'b', tasks: diamond(['left', 'join']) });
    expect(r.ok ? [] : r.issues).toEqual([
      {
        path: '$.tasks[0].config.follow[1]',
        message: expect.stringContaining('"join" is not directly downstream'),
      },
    ]);
  });
});
