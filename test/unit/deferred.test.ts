import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ManualClock, memoryDeps } from '../../adapters/memory/deps.ts';
import { registerDag } from '../../app/dags.ts';
import { checkDeferred, completeFromEvent, workName } from '../../app/deferred.ts';
import type { Deps } from '../../app/deps.ts';
import { reap } from '../../app/reaper.ts';
import { cancelRun, triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import { ConflictError, ThrottledError } from '../../core/errors.ts';
import { cancelTask, claimTask } from '../../core/state/index.ts';
import { createEcsOperator } from '../../operators/ecs.ts';
import { noop } from '../../operators/noop.ts';
import {
  type AwsEvent,
  type DeferredOperator,
  type DeferredWork,
  OperatorRegistry,
  type WorkState,
} from '../../operators/registry.ts';
import { createStepFunctionsOperator } from '../../operators/stepfunctions.ts';

/**
 * Deferred attempts (app/deferred.ts) on the in-memory ports, with an operator whose external
 * work is a map in the test: the Step Functions and ECS operators are exercised against the
 * emulator in test/e2e/deferred.test.ts; their event parsing is tested below.
 */
function externalOperator() {
  const works = new Map<string, WorkState>();
  const starts: string[] = [];
  const stops: string[] = [];
  const op: DeferredOperator<Record<string, never>> = {
    name: 'external',
    config: z.strictObject({}),
    deferred: true,
    async start(_config, ctx) {
      starts.push(ctx.workName);
      if (!works.has(ctx.workName)) works.set(ctx.workName, { state: 'running' });
      return { operator: 'external', name: ctx.workName };
    },
    async check(work) {
      return works.get(work.name) ?? { state: 'failed', error: 'gone' };
    },
    async stop(work, reason) {
      stops.push(work.name);
      works.set(work.name, { state: 'failed', error: `stopped: ${reason}` });
    },
    nameOfEvent: (e: AwsEvent) =>
      e.source === 'test' ? (e.detail as { name: string }).name : undefined,
    endOfEvent: (e: AwsEvent, _work: DeferredWork) => (e.detail as { end?: WorkState }).end,
  };
  return { op, works, starts, stops };
}

async function must<T>(p: Promise<T | undefined>): Promise<T> {
  const v = await p;
  if (v === undefined) throw new Error('no such task instance');
  return v;
}

const clockNow = () => new Date('2026-11-27T10:00:00.000Z');
const start = new Date('2026-11-27T10:00:00.000Z');
const exec = {
  leaseSeconds: 60,
  heartbeatSeconds: 30,
  remainingMs: () => 600_000,
  deferredCheckSeconds: 300,
};

async function setup(task: object = {}) {
  const ext = externalOperator();
  const clock = new ManualClock(start);
  const deps: Deps & ReturnType<typeof memoryDeps> = memoryDeps({
    clock: clock.now,
    random: () => 0,
    operators: new OperatorRegistry().register(noop).register(ext.op),
  });
  // Unique: parsed DAG versions are cached by id and version in the process (app/dags.ts).
  const dagId = `etl_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(
    deps,
    JSON.stringify({
      dagId,
      tasks: [
        { taskId: 'ext', operator: 'external', config: {}, timeoutSeconds: 3600, ...task },
        { taskId: 'after', operator: 'noop', dependsOn: ['ext'] },
      ],
    }),
  );
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId });
  const [msg] = deps.dispatcher.sent;
  if (!msg) throw new Error('nothing queued');
  const ti = () => deps.store.getTaskInstance({ dagId, runId: run.runId, taskId: 'ext' });
  return { ext, clock, deps, msg, ti, runId: run.runId, name: workName(msg) };
}

describe('deferred attempts', () => {
  it("the worker starts the work under the attempt's name, records it, and leaves the attempt running", async () => {
    const { ext, deps, msg, ti, name } = await setup();
    expect(await executeTask(deps, msg, exec)).toBe('deferred');
    expect(ext.starts).toEqual([name]);
    expect(name).toMatch(/^[0-9a-f]{32}$/);
    const t = await ti();
    expect(t).toMatchObject({
      status: 'running',
      attempt: 1,
      // The first check is after the check interval, within the task's timeout.
      leaseExpiresAt: new Date(start.getTime() + 300_000).toISOString(),
    });
    expect(JSON.parse(t?.deferred ?? '')).toEqual({
      operator: 'external',
      name,
      timeoutAt: new Date(start.getTime() + 3_600_000).toISOString(),
    });
    expect(await deps.store.getDeferral(name)).toEqual({
      dagId: msg.dagId,
      runId: msg.runId,
      taskId: 'ext',
      attempt: 1,
    });
    // A second delivery of the message finds the attempt claimed: nothing is started again.
    expect(await executeTask(deps, msg, exec)).toBe('not_claimed');
    expect(ext.starts).toEqual([name]);
  });

  it('the end event records the outcome and output once; other events change nothing', async () => {
    const { deps, msg, ti, name } = await setup();
    await executeTask(deps, msg, exec);
    expect(await completeFromEvent(deps, { source: 'elsewhere', detail: {} })).toBe('ignored');
    expect(
      await completeFromEvent(deps, { source: 'test', detail: { name: 'f'.repeat(32) } }),
    ).toBe('ignored');
    const end = { state: 'success', output: { rows: 12 } } as const;
    const event = { source: 'test', detail: { name, end } };
    expect(await completeFromEvent(deps, event)).toBe('success');
    expect(await ti()).toMatchObject({ status: 'success', deferred: null, output: '{"rows":12}' });
    // Delivered again: the attempt has ended.
    expect(await completeFromEvent(deps, event)).toBe('stale');
    const log = await deps.blobs.getLog({ ...msg });
    expect(log).toMatch(/deferred: external work/);
    expect(log).toMatch(/ended \(event\)/);
    expect(log?.match(/ success$/gm)).toHaveLength(1);
  });

  it("a failed end retries by the task's policy, and the retry starts new work", async () => {
    const { deps, msg, ti, name } = await setup({ retries: 1, retryDelaySeconds: 0 });
    await executeTask(deps, msg, exec);
    const failed = { state: 'failed', error: 'execution FAILED: boom' } as const;
    expect(await completeFromEvent(deps, { source: 'test', detail: { name, end: failed } })).toBe(
      'up_for_retry',
    );
    expect(await ti()).toMatchObject({ status: 'up_for_retry', error: 'execution FAILED: boom' });
    expect(deps.timers.scheduled.map((t) => t.timer.failedAttempt)).toEqual([1]);
    expect(workName({ ...msg, attempt: 2 })).not.toBe(name);
  });

  it('the reaper checks work whose event is late: still running sets the next check, ended records it', async () => {
    const { ext, clock, deps, msg, ti, name } = await setup();
    await executeTask(deps, msg, exec);
    clock.advance(301);
    expect(await checkDeferred(deps, await must(ti()), 300)).toBe('running');
    expect((await ti())?.leaseExpiresAt).toBe(
      new Date(clock.now().getTime() + 300_000).toISOString(),
    );
    ext.works.set(name, { state: 'success', output: 'done' });
    clock.advance(301);
    expect(await checkDeferred(deps, await must(ti()), 300)).toBe('success');
    expect(await ti()).toMatchObject({ status: 'success', output: '"done"' });
    expect(await deps.blobs.getLog({ ...msg })).toMatch(/checked by the reaper/);
  });

  it("past the task's timeout the reaper stops the work and fails the attempt", async () => {
    const { ext, clock, deps, msg, ti, name } = await setup({ timeoutSeconds: 600 });
    await executeTask(deps, msg, exec);
    clock.advance(301);
    expect(await checkDeferred(deps, await must(ti()), 300)).toBe('running');
    // The next check is at the deadline, not past it.
    expect((await ti())?.leaseExpiresAt).toBe(new Date(start.getTime() + 600_000).toISOString());
    clock.advance(300);
    expect(await checkDeferred(deps, await must(ti()), 300)).toBe('failed');
    expect(ext.stops).toEqual([name]);
    expect((await ti())?.error).toMatch(/timed out/);
  });

  it('the worker hands the attempt over under a new lease token: a cancel that read it before cannot pass', async () => {
    const { deps, msg, ti } = await setup();
    // What a cancel read while the worker was starting the work.
    const seen = await must(ti());
    expect(seen.status).toBe('queued');
    await executeTask(deps, msg, exec);
    const deferred = await must(ti());
    const claimed = { ...deferred, leaseToken: '00000001-0000-4000-8000-000000000000' };
    expect(deferred.leaseToken).not.toBe(claimed.leaseToken);
    await expect(
      deps.store.transitionTask(msg, cancelTask(claimed, clockNow())),
    ).rejects.toBeInstanceOf(ConflictError);
    expect((await ti())?.status).toBe('running');
  });

  it('an end event that comes before the start is recorded is sent back to be retried', async () => {
    const { deps, msg, name } = await setup();
    await deps.store.putDeferral(name, msg);
    await deps.store.transitionTask(
      msg,
      claimTask({ status: 'queued', attempt: 1, leaseToken: null }, 'w', 60, clockNow()),
    );
    const end = { state: 'success', output: null } as const;
    await expect(
      completeFromEvent(deps, { source: 'test', detail: { name, end } }),
    ).rejects.toBeInstanceOf(ThrottledError);
  });

  it('a check that fails holds up no other repair of the reaper, and is given up at the deadline', async () => {
    const { ext, clock, deps, msg, name, ti } = await setup();
    await executeTask(deps, msg, exec);
    ext.op.check = async () => {
      throw new Error('ThrottlingException');
    };
    clock.advance(301);
    const report = await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect(report).toMatchObject({ deferredChecked: 0, deferredFailed: 1 });
    expect(ext.works.get(name)).toEqual({ state: 'running' });
    // Asked again after the check interval, not at every pass.
    expect((await must(ti())).leaseExpiresAt).toBe(
      new Date(clock.now().getTime() + 300_000).toISOString(),
    );
    // Past the deadline, work that can never be checked is given up: the attempt fails.
    clock.advance(3600);
    await reap(deps, { queuedGraceSeconds: 60, retryGraceSeconds: 30, limit: 10 });
    expect(await must(ti())).toMatchObject({ status: 'failed' });
    expect((await must(ti())).error).toMatch(/could not be checked: ThrottlingException/);
  });

  it('cancelling the run stops the work; its late end event changes nothing', async () => {
    const { ext, deps, msg, ti, runId, name } = await setup();
    await executeTask(deps, msg, exec);
    await cancelRun(deps, msg.dagId, runId);
    expect(ext.stops).toEqual([name]);
    expect((await ti())?.status).toBe('cancelled');
    const end = { state: 'failed', error: 'aborted' } as const;
    expect(await completeFromEvent(deps, { source: 'test', detail: { name, end } })).toBe('stale');
    expect((await ti())?.status).toBe('cancelled');
  });
});

describe('the stepfunctions operator without AWS', () => {
  const machine = 'arn:aws:states:us-east-1:123456789012:stateMachine:etl';
  const op = createStepFunctionsOperator(() => {
    throw new Error('no client in this test');
  }, [machine]);
  const hash = 'a'.repeat(32);
  const event = (detail: object) => ({
    source: 'aws.states',
    'detail-type': 'Step Functions Execution Status Change',
    detail: { stateMachineArn: machine, name: `airless-${hash}`, ...detail },
  });
  const work = { operator: 'stepfunctions', name: hash, executionArn: `${machine}:x` };

  it('refuses, at registration, a state machine it was not given', () => {
    expect(op.refuses?.({ stateMachineArn: machine })).toBeUndefined();
    expect(op.refuses?.({ stateMachineArn: `${machine}2` })).toMatch(/invokableStateMachines/);
  });

  it('reads the attempt from the execution name of an ended execution only', () => {
    expect(op.nameOfEvent(event({ status: 'SUCCEEDED' }))).toBe(hash);
    expect(op.nameOfEvent(event({ status: 'RUNNING' }))).toBeUndefined();
    expect(op.nameOfEvent(event({ status: 'FAILED', name: 'someone-elses' }))).toBeUndefined();
    expect(op.nameOfEvent({ ...event({ status: 'FAILED' }), source: 'aws.ecs' })).toBeUndefined();
  });

  it('maps the end: output parsed, failures with error and cause, a truncated output asks DescribeExecution', () => {
    const arn = { executionArn: work.executionArn };
    expect(op.endOfEvent(event({ ...arn, status: 'SUCCEEDED', output: '{"a":1}' }), work)).toEqual({
      state: 'success',
      output: { a: 1 },
    });
    expect(
      op.endOfEvent(event({ ...arn, status: 'FAILED', error: 'E', cause: 'why' }), work),
    ).toEqual({ state: 'failed', error: 'execution FAILED: E: why' });
    expect(op.endOfEvent(event({ ...arn, status: 'ABORTED' }), work)).toEqual({
      state: 'failed',
      error: 'execution ABORTED',
    });
    expect(
      op.endOfEvent(
        event({ ...arn, status: 'SUCCEEDED', output: null, outputDetails: { included: false } }),
        work,
      ),
    ).toBeUndefined();
    // An execution of another machine with the same name is not this work's.
    expect(
      op.endOfEvent(event({ executionArn: 'other', status: 'SUCCEEDED' }), work),
    ).toBeUndefined();
  });
});

describe('the ecs operator without AWS', () => {
  const td = 'arn:aws:ecs:us-east-1:123456789012:task-definition/job:3';
  const op = createEcsOperator(
    () => {
      throw new Error('no client in this test');
    },
    { taskDefinitions: [td] },
  );
  const hash = 'b'.repeat(32);
  const work = {
    operator: 'ecs',
    name: hash,
    cluster: 'c',
    taskArn: 'arn:task/1',
    essential: ['main'],
  };
  const stopped = (containers: object[], extra: object = {}) => ({
    source: 'aws.ecs',
    'detail-type': 'ECS Task State Change',
    detail: {
      taskArn: 'arn:task/1',
      startedBy: `airless-${hash}`,
      lastStatus: 'STOPPED',
      stoppedReason: 'Essential container in task exited',
      containers,
      ...extra,
    },
  });

  it('refuses task definitions it was not given, by ARN, family:revision or family', () => {
    const base = { cluster: 'c', assignPublicIp: false, subnets: ['subnet-1'] };
    for (const name of [td, 'job:3', 'job']) {
      expect(op.refuses?.({ ...base, taskDefinition: name }), name).toBeUndefined();
    }
    expect(op.refuses?.({ ...base, taskDefinition: 'other' })).toMatch(/runnableTaskDefinitions/);
    // Without subnets of its own, or the deployment's, a Fargate task cannot be placed.
    const { subnets: _subnets, ...noSubnets } = base;
    expect(op.refuses?.({ ...noSubnets, taskDefinition: td })).toMatch(/subnets are required/);
  });

  it('reads the attempt from startedBy of a stopped task only', () => {
    expect(op.nameOfEvent(stopped([]))).toBe(hash);
    expect(
      op.nameOfEvent({
        ...stopped([]),
        detail: { lastStatus: 'RUNNING', startedBy: `airless-${hash}` },
      }),
    ).toBeUndefined();
    expect(
      op.nameOfEvent({ ...stopped([]), detail: { lastStatus: 'STOPPED', startedBy: 'ecs-svc/1' } }),
    ).toBeUndefined();
  });

  it('succeeds when every essential container exited 0, whatever the others did', () => {
    expect(
      op.endOfEvent(
        stopped([
          { name: 'main', exitCode: 0 },
          { name: 'sidecar', exitCode: 143 },
        ]),
        work,
      ),
    ).toEqual({ state: 'success', output: { taskArn: 'arn:task/1', exitCodes: { main: 0 } } });
    expect(op.endOfEvent(stopped([{ name: 'main', exitCode: 2 }]), work)).toEqual({
      state: 'failed',
      error: 'task stopped: Essential container in task exited; exit codes: main=2',
    });
    // A container that never started (no exit code) is a failure, with the stop reason.
    expect(
      op.endOfEvent(
        stopped([{ name: 'main' }], { stoppedReason: 'CannotPullContainerError' }),
        work,
      ),
    ).toEqual({
      state: 'failed',
      error: 'task stopped: CannotPullContainerError; exit codes: main=none',
    });
  });
});
