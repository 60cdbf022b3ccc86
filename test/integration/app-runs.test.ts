import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { S3BlobStore } from '../../adapters/aws/s3.ts';
import { EventBridgeScheduleRegistry } from '../../adapters/aws/scheduler.ts';
import { SqsRetryTimers } from '../../adapters/aws/timers.ts';
import { advance } from '../../app/advance.ts';
import { clearTasks } from '../../app/clear.ts';
import { registerDag } from '../../app/dags.ts';
import type { Deps } from '../../app/deps.ts';
import { reap } from '../../app/reaper.ts';
import { reconcileRunSlots, triggerRun, writeRunTasks } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import { validateDagText } from '../../core/dag/validate.ts';
import { ConflictError } from '../../core/errors.ts';
import type { TaskDispatcher, TaskInstanceRecord, TaskMessage } from '../../core/ports.ts';
import { claimTask, isTerminalRun, isTerminalTask } from '../../core/state/index.ts';
import {
  createBuckets,
  createScheduleGroup,
  createStandardQueue,
  createTable,
  localClients,
  unique,
} from '../../localstack/resources.ts';
import { builtInOperators } from '../../operators/index.ts';

/**
 * The application layer (trigger, readiness, clear, the reaper) on the real DynamoDB store and
 * S3, with the queue and the stream played by the test: messages are collected as sent, and
 * `pump` runs them and delivers each finished task's event, as often as it likes (delivery is
 * at least once, so repeats must be harmless). The SQS and stream adapters have tests of their
 * own.
 */
class CollectingDispatcher implements TaskDispatcher {
  readonly sent: TaskMessage[] = [];
  async dispatch(messages: readonly TaskMessage[]): Promise<void> {
    this.sent.push(...messages);
  }
  take(): TaskMessage[] {
    return this.sent.splice(0, this.sent.length);
  }
}

let deps: Deps;
let dispatcher: CollectingDispatcher;
const execOpts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 600_000 };

beforeAll(async () => {
  const aws = localClients();
  dispatcher = new CollectingDispatcher();
  deps = {
    store: new DynamoStateStore(aws.dynamodb, await createTable()),
    dispatcher,
    blobs: new S3BlobStore(aws.s3, await createBuckets()),
    schedules: new EventBridgeScheduleRegistry(aws.scheduler, {
      groupName: await createScheduleGroup(),
      target: {
        arn: 'arn:aws:lambda:us-east-1:000000000000:function:t',
        roleArn: 'arn:aws:iam::000000000000:role/r',
      },
    }),
    timers: new SqsRetryTimers(aws.sqs, await createStandardQueue()),
    operators: builtInOperators(),
    clock: () => new Date(),
    random: () => 0,
    newId: randomUUID,
  };
});

async function register(doc: object): Promise<string> {
  const dagId = unique('dag');
  const r = await registerDag(deps, JSON.stringify({ dagId, ...doc }));
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return dagId;
}

const tasksOf = async (dagId: string, runId: string) =>
  new Map((await deps.store.listTaskInstances(dagId, runId)).map((t) => [t.taskId, t]));

/** Delivers every finished task's event (again), as the stream would. */
async function deliverEvents(dagId: string, runId: string, version: number) {
  for (const t of (await tasksOf(dagId, runId)).values()) {
    if (isTerminalTask(t.status)) await advance(deps, t, t.status, version, t.generation);
  }
}

/**
 * Runs the run to its end: sent messages run (retries become due at once: `random` is 0 and
 * the test DAGs have no delay), finished tasks' events are delivered, and after every step a
 * run that says `success` must have every task finished. Bounded in steps.
 */
async function pump(dagId: string, runId: string) {
  for (let step = 0; step < 60; step++) {
    const run = await deps.store.getRun(dagId, runId);
    if (!run) throw new Error('no run');
    const tasks = await tasksOf(dagId, runId);
    if (run.status === 'success') {
      for (const t of tasks.values()) expect(['success', 'skipped']).toContain(t.status);
    }
    if (isTerminalRun(run.status) && dispatcher.sent.length === 0) return run;
    for (const m of dispatcher.take()) await executeTask(deps, m, execOpts);
    // Retries: what the retrier would queue once the timer fires.
    await reap(deps, { queuedGraceSeconds: 3600, retryGraceSeconds: -1, limit: 50 });
    await deliverEvents(dagId, runId, run.dagVersion);
  }
  throw new Error(`run ${runId} did not end within the step bound`);
}

const noop = (taskId: string, extra: object = {}) => ({ taskId, operator: 'noop', ...extra });

describe('clear', () => {
  it('two clears at once: one applies whole, the other changes nothing (409); the run reruns', async () => {
    const dagId = await register({ tasks: [noop('a'), noop('b', { dependsOn: ['a'] })] });
    const { run } = await triggerRun(deps, { dagId });
    await pump(dagId, run.runId);
    const results = await Promise.allSettled([
      clearTasks(deps, dagId, run.runId, 'a'),
      clearTasks(deps, dagId, run.runId, 'a'),
    ]);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(refused).toHaveLength(1);
    expect((refused[0] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    // Exactly the one clear's effect: a queued once (attempt 2), b pending, one message.
    const tasks = await tasksOf(dagId, run.runId);
    expect(tasks.get('a')).toMatchObject({ status: 'queued', attempt: 2 });
    expect(tasks.get('b')).toMatchObject({ status: 'pending', attempt: 1 });
    expect(dispatcher.sent.filter((m) => m.runId === run.runId)).toHaveLength(1);
    const end = await pump(dagId, run.runId);
    expect(end.status).toBe('success');
    const after = await tasksOf(dagId, run.runId);
    expect(after.get('a')).toMatchObject({ status: 'success', attempt: 2 });
    expect(after.get('b')).toMatchObject({ status: 'success', attempt: 2 });
  });

  it('a late event of the cleared outcome neither readies downstream tasks nor ends the run', async () => {
    const dagId = await register({
      tasks: [noop('a'), noop('b', { dependsOn: ['a'] }), noop('c', { dependsOn: ['b'] })],
    });
    const { run } = await triggerRun(deps, { dagId });
    await pump(dagId, run.runId);
    const before = await tasksOf(dagId, run.runId);
    await clearTasks(deps, dagId, run.runId, 'b');
    dispatcher.take(); // b's new attempt is not run yet
    // The stream delivers b's and c's old outcomes again, after the clear.
    for (const id of ['b', 'c']) {
      const old = before.get(id) as TaskInstanceRecord;
      await advance(deps, old, 'success', run.dagVersion, old.generation);
    }
    const tasks = await tasksOf(dagId, run.runId);
    expect(tasks.get('b')).toMatchObject({ status: 'queued', attempt: 2 });
    expect(tasks.get('c')).toMatchObject({ status: 'pending', counts: { success: 0 } });
    expect((await deps.store.getRun(dagId, run.runId))?.status).toBe('running');
  });

  it('a cleared task gets its retries again', async () => {
    // Attempts 1 to 3 fail; with one retry, the first run fails after attempt 2.
    const dagId = await register({
      tasks: [noop('a', { retries: 1, retryDelaySeconds: 0, config: { failAttempts: 3 } })],
    });
    const { run } = await triggerRun(deps, { dagId });
    expect((await pump(dagId, run.runId)).status).toBe('failed');
    expect((await tasksOf(dagId, run.runId)).get('a')).toMatchObject({ attempt: 2 });
    await clearTasks(deps, dagId, run.runId, 'a');
    // Attempt 3 fails, and the retry budget counts from the clear: attempt 4 runs and succeeds.
    expect((await pump(dagId, run.runId)).status).toBe('success');
    expect((await tasksOf(dagId, run.runId)).get('a')).toMatchObject({
      status: 'success',
      attempt: 4,
    });
    const log = await deps.blobs.getLog({ dagId, runId: run.runId, taskId: 'a', attempt: 3 });
    expect(log).toMatch(/attempt 3 \(try 1 of 2\)/);
  });

  it('does not reopen a run past maxActiveRuns', async () => {
    const dagId = await register({ maxActiveRuns: 1, tasks: [noop('a')] });
    const first = await triggerRun(deps, { dagId, idempotencyKey: 'one' });
    await pump(dagId, first.run.runId);
    const second = await triggerRun(deps, { dagId, idempotencyKey: 'two' });
    expect(second.run.status).toBe('running');
    await expect(clearTasks(deps, dagId, first.run.runId, 'a')).rejects.toThrow(/maxActiveRuns/);
    expect((await deps.store.getRun(dagId, first.run.runId))?.status).toBe('success');
    await pump(dagId, second.run.runId);
    await clearTasks(deps, dagId, first.run.runId, 'a');
    expect((await pump(dagId, first.run.runId)).status).toBe('success');
  });
});

describe('failures that no retry can fix', () => {
  it('an operator with no runner is refused at registration, naming the field; nothing is stored', async () => {
    const dagId = unique('dag');
    const sfn = {
      operator: 'stepfunctions',
      config: { stateMachineArn: 'arn:aws:states:us-east-1:000000000000:stateMachine:x' },
    };
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId,
        tasks: [
          { taskId: 'a', operator: 'noop' },
          { taskId: 's1', ...sfn },
          { taskId: 's2', ...sfn },
          { taskId: 'f', operator: 'noop', executor: 'fargate', timeoutSeconds: 3600 },
        ],
      }),
    );
    expect(r.ok ? [] : r.issues).toEqual([
      {
        path: '$.tasks[1].operator',
        message:
          'operator "stepfunctions" cannot run in this deployment (2 tasks): it runs noop, branch, http, lambda',
      },
      {
        path: '$.tasks[3].executor',
        message: expect.stringMatching(
          /executor "fargate" cannot run in this deployment: it has no Fargate workers/,
        ),
      },
    ]);
    expect(await deps.store.getDag(dagId)).toBeUndefined();
  });

  it('a stored version whose operator has no runner (any more) fails for good, whatever retries are left', async () => {
    const dagId = unique('dag');
    const text = JSON.stringify({
      dagId,
      tasks: [
        {
          taskId: 'sfn',
          operator: 'stepfunctions',
          retries: 3,
          config: { stateMachineArn: 'arn:aws:states:us-east-1:000000000000:stateMachine:x' },
        },
      ],
    });
    // Registered as a deployment that had a runner would have: the format alone is checked.
    const stored = await registerDag(deps, text, validateDagText(text));
    expect(stored.ok).toBe(true);
    const { run } = await triggerRun(deps, { dagId });
    expect((await pump(dagId, run.runId)).status).toBe('failed');
    expect((await tasksOf(dagId, run.runId)).get('sfn')).toMatchObject({
      status: 'failed',
      attempt: 1,
    });
  });
});

describe('runs that wait', () => {
  it('a trigger of a paused DAG waits queued until the DAG is unpaused', async () => {
    const dagId = await register({ tasks: [noop('a')] });
    await deps.store.setDagPaused(dagId, true, new Date());
    const { run } = await triggerRun(deps, { dagId });
    expect(run.status).toBe('queued');
    expect(dispatcher.sent.filter((m) => m.runId === run.runId)).toHaveLength(0);
    await deps.store.setDagPaused(dagId, false, new Date());
    expect(await reconcileRunSlots(deps, dagId)).toBe(1);
    expect((await pump(dagId, run.runId)).status).toBe('success');
  });

  it('a queued run whose predecessor ended without releasing its slot is started by the reaper', async () => {
    const dagId = await register({ maxActiveRuns: 1, tasks: [noop('a')] });
    const first = await triggerRun(deps, { dagId, idempotencyKey: 'one' });
    const second = await triggerRun(deps, { dagId, idempotencyKey: 'two' });
    expect(second.run.status).toBe('queued');
    // The first run ends, and the event that would release its slot is lost.
    await deps.store.transitionRun(dagId, first.run.runId, ['running'], 'success', new Date());
    dispatcher.take();
    const report = await reap(deps, {
      queuedGraceSeconds: -1,
      retryGraceSeconds: 3600,
      limit: 50,
    });
    expect(report.runsStarted).toBeGreaterThanOrEqual(1);
    expect((await deps.store.getRun(dagId, second.run.runId))?.status).toBe('running');
    expect((await pump(dagId, second.run.runId)).status).toBe('success');
  });

  it('many ended runs in a DAG history do not hide the queued one', async () => {
    const dagId = await register({ maxActiveRuns: 1, tasks: [noop('a')] });
    const runs = [];
    for (let i = 0; i < 25; i++) {
      const { run } = await triggerRun(deps, { dagId, idempotencyKey: `k${i}` });
      runs.push(run);
    }
    // One runs, 24 wait; each end starts exactly the next, oldest first.
    for (const run of runs) expect((await pump(dagId, run.runId)).status).toBe('success');
    const starts = (await Promise.all(runs.map((r) => deps.store.getRun(dagId, r.runId)))).map(
      (r) => r?.startTime ?? '',
    );
    expect([...starts].sort()).toEqual(starts);
  });
});

describe('large runs', () => {
  const big = (n: number) => ({
    tasks: Array.from({ length: n }, (_, i) => noop(`t${i}`, i === 0 ? {} : { dependsOn: ['t0'] })),
  });

  it('are answered at once, queued, and start once their tasks are written', async () => {
    const dagId = await register(big(150));
    const { run, created } = await triggerRun(deps, { dagId });
    expect(created).toBe(true);
    expect(run).toMatchObject({ status: 'queued', tasksWritten: false });
    expect(await deps.store.listTaskInstances(dagId, run.runId)).toHaveLength(0);
    expect(await writeRunTasks(deps, dagId, run.runId)).toBe('written');
    expect(await deps.store.listTaskInstances(dagId, run.runId)).toHaveLength(150);
    expect((await deps.store.getRun(dagId, run.runId))?.status).toBe('running');
    expect(await writeRunTasks(deps, dagId, run.runId)).toBe('written');
    expect((await pump(dagId, run.runId)).status).toBe('success');
  });

  it('whose writer died are finished by the reaper', async () => {
    const dagId = await register(big(120));
    const { run } = await triggerRun(deps, { dagId, idempotencyKey: 'dies' });
    expect(run.tasksWritten).toBe(false);
    // A repeated trigger finds the run as it is and writes nothing.
    const again = await triggerRun(deps, { dagId, idempotencyKey: 'dies' });
    expect(again).toMatchObject({ created: false, run: { runId: run.runId, tasksWritten: false } });
    expect(await deps.store.listTaskInstances(dagId, run.runId)).toHaveLength(0);
    // No one writes the tasks (the creation event was lost, or its writer died).
    const report = await reap(deps, {
      queuedGraceSeconds: 3600,
      retryGraceSeconds: 3600,
      limit: 50,
      creationGraceSeconds: -1,
    });
    expect(report.runsWritten).toBeGreaterThanOrEqual(1);
    expect((await deps.store.getRun(dagId, run.runId))?.status).toBe('running');
    expect((await pump(dagId, run.runId)).status).toBe('success');
  });
});

describe('the reaper and a dead worker', () => {
  it('writes the log of an attempt whose worker died, saying what happened', async () => {
    const dagId = await register({ tasks: [noop('a', { retries: 1, retryDelaySeconds: 0 })] });
    const { run } = await triggerRun(deps, { dagId });
    const [m] = dispatcher.take().filter((x) => x.runId === run.runId);
    if (!m) throw new Error('no message');
    // A worker claims with a lease that has already run out, then dies.
    await deps.store.transitionTask(
      m,
      claimTask({ status: 'queued', attempt: 1, leaseToken: null }, 'dead', -1, new Date()),
    );
    await reap(deps, { queuedGraceSeconds: 3600, retryGraceSeconds: 3600, limit: 50 });
    const log = await deps.blobs.getLog({ ...m, attempt: 1 });
    expect(log).toMatch(/stopped without writing a log/);
    expect(log).toMatch(/lease expired/);
    expect((await pump(dagId, run.runId)).status).toBe('success');
  });
});

describe('the same event, many times at once', () => {
  it('50 concurrent advances of one finished task count it once and queue its downstream once', async () => {
    const dagId = await register({
      tasks: [noop('a'), noop('b', { dependsOn: ['a'] }), noop('c', { dependsOn: ['a'] })],
    });
    const { run } = await triggerRun(deps, { dagId });
    for (const m of dispatcher.take().filter((x) => x.runId === run.runId)) {
      await executeTask(deps, m, execOpts);
    }
    const a = (await tasksOf(dagId, run.runId)).get('a') as TaskInstanceRecord;
    expect(a.status).toBe('success');
    await Promise.all(
      Array.from({ length: 50 }, () => advance(deps, a, 'success', run.dagVersion, a.generation)),
    );
    const tasks = await tasksOf(dagId, run.runId);
    for (const id of ['b', 'c']) {
      expect(tasks.get(id)).toMatchObject({ status: 'queued', attempt: 1, counts: { success: 1 } });
    }
    // Each downstream attempt was sent at least once, and each is one attempt: the copies carry
    // the same attempt (SQS drops them within 5 minutes; the claim drops any later one).
    const sent = dispatcher.take().filter((m) => m.runId === run.runId);
    expect(new Set(sent.map((m) => `${m.taskId}#${m.attempt}`))).toEqual(new Set(['b#1', 'c#1']));
    for (const m of sent) await executeTask(deps, m, execOpts);
    await deliverEvents(dagId, run.runId, run.dagVersion);
    expect((await pump(dagId, run.runId)).status).toBe('success');
    const after = await tasksOf(dagId, run.runId);
    expect([...after.values()].map((t) => t.attempt)).toEqual([1, 1, 1]);
  });
});
