import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emulatorConfig } from '../../localstack/emulator.ts';
import { type LocalWorker, startLocalWorkers, stopLocalWorkers } from '../../localstack/workers.ts';
import { waitFor } from '../poll.ts';
import { reap, view, waitForTask } from './fault-support.ts';
import { api, createAndTrigger, outputs, type RunView, uniqueDagId, waitForRun } from './stack.ts';

/**
 * The `fargate` executor on the local stack. The emulator runs no containers, so its workers are
 * local processes of the container's entrypoint (localstack/workers.ts), as `npm start` runs
 * them; this file starts its own, so that it may kill them. The test deploy stops the Lambda
 * worker at 60 s (test/e2e/stack.setup.ts), which stands for the 15-minute Lambda limit.
 */
const cfg = emulatorConfig();
let workers: LocalWorker[] = [];
let next = 10;

function start(count: number, env: Record<string, string> = {}): LocalWorker[] {
  const started = startLocalWorkers(cfg, outputs, count, { env, firstIndex: next });
  next += count;
  workers.push(...started);
  return started;
}

const logOf = (w: LocalWorker) => readFileSync(w.logFile, 'utf8');

/** The JSON lines of the workers' logs that say an attempt of this run finished. */
function finishedLines(runId: string, of: readonly LocalWorker[] = workers) {
  return of
    .flatMap((w) => logOf(w).split('\n'))
    .filter((l) => l.includes('"attempt finished"') && l.includes(JSON.stringify(runId)))
    .map((l) => JSON.parse(l) as { taskId: string; outcome: string; attempt: number; pid: number });
}

const trigger = (doc: object) => createAndTrigger('e2e_exec', doc);

type Task = RunView['tasks'][number] & { executor?: string; error?: string };
const tasksOf = (v: RunView) => v.tasks as Task[];

beforeAll(() => {
  start(2);
});

afterAll(async () => {
  await stopLocalWorkers(workers, 30_000);
});

describe('the fargate executor', () => {
  it('runs a DAG that mixes lambda and fargate tasks; the run view shows each executor', async () => {
    const { dagId, runId } = await trigger({
      tasks: [
        { taskId: 'extract', operator: 'noop', config: { output: { rows: 3 } } },
        {
          taskId: 'transform',
          operator: 'noop',
          executor: 'fargate',
          timeoutSeconds: 3600,
          dependsOn: ['extract'],
          config: { output: { rows: 3, clean: true } },
        },
        { taskId: 'load', operator: 'noop', dependsOn: ['transform'] },
      ],
    });
    const run = await waitForRun(dagId, runId, 120);
    expect(run.status).toBe('success');
    // The run view lists tasks by id.
    expect(tasksOf(run).map((t) => [t.taskId, t.executor, t.status])).toEqual([
      ['extract', 'lambda', 'success'],
      ['load', 'lambda', 'success'],
      ['transform', 'fargate', 'success'],
    ]);
    // transform ran in a local Fargate worker process, and only it did.
    expect(finishedLines(runId).map((l) => [l.taskId, l.outcome])).toEqual([
      ['transform', 'success'],
    ]);
    const output = await api.request<{ output: unknown }>(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/transform/output`,
    );
    expect(output.body).toEqual({ output: { rows: 3, clean: true } });
  });

  it('a fargate task outlives the Lambda limit; the same task on lambda is cut there', async () => {
    // The test deploy's Lambda worker stops at 60 s and cuts an attempt 15 s before (app/tasks.ts).
    const { dagId, runId } = await trigger({
      tasks: [
        { taskId: 'on_lambda', operator: 'noop', config: { sleepSeconds: 50 } },
        {
          taskId: 'on_fargate',
          operator: 'noop',
          executor: 'fargate',
          timeoutSeconds: 3600,
          config: { sleepSeconds: 50 },
        },
      ],
    });
    const run = await waitForRun(dagId, runId, 240);
    const byId = new Map(tasksOf(run).map((t) => [t.taskId, t]));
    expect(byId.get('on_fargate')).toMatchObject({ status: 'success', executor: 'fargate' });
    expect(byId.get('on_lambda')).toMatchObject({ status: 'failed', executor: 'lambda' });
    expect(byId.get('on_lambda')?.error).toMatch(/timed out after 45s/);
  });

  it('refuses a lambda task too long for one invocation, naming fargate', async () => {
    const r = await api.request<{ details: { path: string; message: string }[] }>(
      'POST',
      '/v1/dags',
      {
        dagId: uniqueDagId('e2e_exec'),
        tasks: [{ taskId: 'long', operator: 'noop', timeoutSeconds: 3600 }],
      },
    );
    expect(r.status).toBe(400);
    expect(r.body.details).toEqual([
      {
        path: '$.tasks[0].timeoutSeconds',
        message: expect.stringMatching(/"executor": "fargate"/),
      },
    ]);
  });

  it('a worker killed mid-attempt: the reaper fails the attempt, and the retry runs on another', async () => {
    const { dagId, runId } = await trigger({
      tasks: [
        {
          taskId: 'job',
          operator: 'noop',
          executor: 'fargate',
          timeoutSeconds: 3600,
          retries: 1,
          retryDelaySeconds: 0,
          config: { sleepSeconds: 15 },
        },
      ],
    });
    await waitForTask(dagId, runId, 'job', ['running']);
    // Kill every worker that could hold it, with no chance to hand it back; start fresh ones.
    const killed = workers.filter((w) => w.process.exitCode === null);
    for (const w of killed) w.process.kill('SIGKILL');
    await Promise.all(killed.map((w) => w.exited));
    workers = workers.filter((w) => !killed.includes(w));
    start(2);
    // The lease (30 s in the test deploy) runs out; a reaper pass fails attempt 1 for a retry.
    const run = await waitFor(
      async () => {
        await reap();
        return view(dagId, runId);
      },
      (v) => ['success', 'failed'].includes(v.status),
      { timeoutMs: 180_000, intervalMs: 3000, what: 'the killed job to be retried and end' },
    );
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.status, t.attempt])).toEqual([['success', 2]]);
    const log1 = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/job/logs?attempt=1`,
    );
    expect(log1.text).toMatch(/failed by the reaper/);
  });

  it('a worker told to stop hands an unfinished attempt back: the same attempt ends on another worker', async () => {
    // Every running worker is replaced by one that drains for only 2 s, so that it hands back.
    // Stopped, not killed: a worker killed inside a long poll may take a message with it for the
    // receive's visibility timeout (adapters/aws/task-source.ts).
    const old = workers.filter((w) => w.process.exitCode === null);
    await stopLocalWorkers(old, 30_000);
    workers = workers.filter((w) => !old.includes(w));
    const [quick] = start(1, { WORKER_STOP_SECONDS: '12' });
    const { dagId, runId } = await trigger({
      tasks: [
        {
          taskId: 'long',
          operator: 'noop',
          executor: 'fargate',
          timeoutSeconds: 3600,
          config: { sleepSeconds: 20 },
        },
      ],
    });
    await waitForTask(dagId, runId, 'long', ['running']);
    quick?.process.kill('SIGTERM');
    expect(await quick?.exited).toBe(0);
    expect(finishedLines(runId, quick ? [quick] : []).map((l) => [l.outcome, l.attempt])).toEqual([
      ['handed_back', 1],
    ]);
    // Handed back, not failed: queued again with the same attempt, no try spent.
    const back = await view(dagId, runId);
    expect(back.tasks.map((t) => [t.status, t.attempt])).toEqual([['queued', 1]]);
    start(1);
    const run = await waitForRun(dagId, runId, 120);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.status, t.attempt])).toEqual([['success', 1]]);
  });
});
