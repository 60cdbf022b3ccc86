import {
  DescribeTasksCommand,
  ECSClient,
  ListTasksCommand,
  StopTaskCommand,
} from '@aws-sdk/client-ecs';
import { DescribeExecutionCommand, SFNClient } from '@aws-sdk/client-sfn';
import { describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { workName } from '../../app/deferred.ts';
import { waitFor } from '../poll.ts';
import { reap, view, waitForTask } from './fault-support.ts';
import {
  api,
  createAndTrigger,
  invoke,
  outputs,
  type RunView,
  uniqueDagId,
  waitForRun,
} from './stack.ts';

/**
 * The deferred operators on the local stack (DESIGN.md section 9), against the state machine
 * and ECS task definition that the test deploy puts next to the scheduler
 * (lib/emulator-test-targets.ts). The emulator runs the state machine and publishes its
 * "Execution Status Change" events, so the Step Functions path is whole here. It runs no ECS
 * container and publishes no "ECS Task State Change" event: the ECS tests cover RunTask, the
 * reaper's DescribeTasks check, StopTask, and the completion function given the event that AWS
 * would deliver (localstack/README.md says exactly which).
 */
const sfn = new SFNClient(clientConfig());
const ecs = new ECSClient(clientConfig());
const machine = outputs.TestStateMachineArn ?? '';
const cluster = outputs.TestClusterName ?? '';
const taskDefinition = outputs.TestTaskDefinitionArn ?? '';

type Task = RunView['tasks'][number] & { error?: string };

const trigger = (tasks: object[]) => createAndTrigger('e2e_defer', { tasks });

const sfnTask = (input: object, extra: object = {}) => ({
  taskId: 'sfn',
  operator: 'stepfunctions',
  config: { stateMachineArn: machine, input },
  ...extra,
});

const executionArn = (ref: { dagId: string; runId: string; taskId: string; attempt: number }) =>
  `${machine.replace(':stateMachine:', ':execution:')}:airless-${workName(ref)}`;

/**
 * Gives the completion function an event as EventBridge would, with Lambda's retries of an
 * asynchronous invocation: an end that comes before the worker recorded the start is refused
 * (to be retried), and taken on a later try.
 */
async function deliver(event: object): Promise<unknown> {
  return waitFor(
    async () => {
      try {
        return await invoke('CompleteFunction', event);
      } catch (e) {
        if (/before its attempt recorded it/.test(String(e))) return undefined;
        throw e;
      }
    },
    (outcome) => outcome !== undefined,
    { timeoutMs: 30_000, intervalMs: 500, what: 'the completion function to take the event' },
  );
}

const logOf = async (dagId: string, runId: string, taskId: string, attempt: number) =>
  (
    await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/${taskId}/logs?attempt=${attempt}`,
    )
  ).text;

describe('the stepfunctions operator', () => {
  it("starts an execution and holds no worker; the execution's end event ends the task with its output", async () => {
    const { dagId, runId } = await trigger([
      sfnTask({ mode: 'wait', waitSeconds: 5, orders: 7 }),
      { taskId: 'after', operator: 'noop', dependsOn: ['sfn'] },
    ]);
    // While the execution waits, the task is running and no worker holds it.
    const running = await waitFor(
      () => view(dagId, runId),
      (v) => v.tasks.find((t) => t.taskId === 'sfn')?.status === 'running',
      { timeoutMs: 60_000, intervalMs: 200, what: 'the sfn task to be running' },
    );
    expect(running.tasks.find((t) => t.taskId === 'sfn')?.attempt).toBe(1);
    const run = await waitForRun(dagId, runId, 120);
    expect(run.status).toBe('success');
    // The run view lists tasks by id.
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['after', 'success', 1],
      ['sfn', 'success', 1],
    ]);
    const output = await api.request<{ output: unknown }>(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/sfn/output`,
    );
    expect(output.status).toBe(200);
    expect(output.body.output).toEqual({
      mode: 'wait',
      waitSeconds: 5,
      orders: 7,
      result: { ok: true },
    });
    const exec = await sfn.send(
      new DescribeExecutionCommand({
        executionArn: executionArn({ dagId, runId, taskId: 'sfn', attempt: 1 }),
      }),
    );
    expect(exec.status).toBe('SUCCEEDED');
    const log = await logOf(dagId, runId, 'sfn', 1);
    expect(log).toMatch(/started execution .*:execution:/);
    expect(log).toMatch(/deferred: stepfunctions work [0-9a-f]{32} runs without a worker/);
    expect(log).toMatch(/ended \(event\)/);
    // The output of a task without one is a 404 that says so.
    const none = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/after/output`,
    );
    expect(none.status).toBe(404);
  });

  it('a failing execution fails the attempt; the task retries with a new execution, then fails', async () => {
    const { dagId, runId } = await trigger([
      sfnTask({ mode: 'fail' }, { retries: 1, retryDelaySeconds: 0 }),
    ]);
    const run = await waitForRun(dagId, runId, 120);
    expect(run.status).toBe('failed');
    const [task] = run.tasks as Task[];
    expect([task?.status, task?.attempt]).toEqual(['failed', 2]);
    expect(task?.error).toMatch(/execution FAILED: Airless.TestFailure: the input asked to fail/);
    for (const attempt of [1, 2]) {
      const exec = await sfn.send(
        new DescribeExecutionCommand({
          executionArn: executionArn({ dagId, runId, taskId: 'sfn', attempt }),
        }),
      );
      expect(exec.status, `attempt ${attempt}`).toBe('FAILED');
    }
  });

  it('cancelling the run stops the execution', async () => {
    const { dagId, runId } = await trigger([sfnTask({ mode: 'wait', waitSeconds: 300 })]);
    const arn = executionArn({ dagId, runId, taskId: 'sfn', attempt: 1 });
    await waitFor(
      async () =>
        sfn.send(new DescribeExecutionCommand({ executionArn: arn })).catch(() => undefined),
      (e) => e?.status === 'RUNNING',
      { timeoutMs: 60_000, intervalMs: 250, what: 'the execution to start' },
    );
    const cancel = await api.request(
      'POST',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/cancel`,
    );
    expect(cancel.status).toBe(200);
    // Stopped by the cancel, or, if the cancel came before the attempt recorded its execution,
    // by the worker that then found its attempt cancelled.
    await waitFor(
      () => sfn.send(new DescribeExecutionCommand({ executionArn: arn })),
      (e) => e.status === 'ABORTED',
      { timeoutMs: 30_000, intervalMs: 250, what: 'the execution to be stopped' },
    );
    // Its ABORTED event finds the attempt cancelled, and changes nothing.
    const after = await waitForRun(dagId, runId, 30);
    expect(after.status).toBe('cancelled');
    expect(after.tasks.map((t) => [t.status, t.attempt])).toEqual([['cancelled', 1]]);
  });

  it('refuses at registration a state machine the deployment may not start, naming the field', async () => {
    const other = machine.replace(/:stateMachine:.*$/, ':stateMachine:not-granted');
    const r = await api.request<{ details: { path: string; message: string }[] }>(
      'POST',
      '/v1/dags',
      {
        dagId: uniqueDagId('e2e_defer'),
        tasks: [{ taskId: 's', operator: 'stepfunctions', config: { stateMachineArn: other } }],
      },
    );
    expect(r.status).toBe(400);
    expect(r.body.details).toEqual([
      {
        path: '$.tasks[0].config',
        message: expect.stringContaining('is not one this deployment may start'),
      },
    ]);
  });
});

describe('the ecs operator (as far as the emulator goes: no container runs, no task event)', () => {
  const ecsTask = { taskId: 'job', operator: 'ecs' };
  const config = { cluster, taskDefinition, subnets: ['subnet-0123456789abcdef0'] };

  async function startedTask(dagId: string, runId: string): Promise<string> {
    const startedBy = `airless-${workName({ dagId, runId, taskId: 'job', attempt: 1 })}`;
    const arns = await waitFor(
      async () => (await ecs.send(new ListTasksCommand({ cluster, startedBy }))).taskArns ?? [],
      (list) => list.length > 0,
      { timeoutMs: 60_000, intervalMs: 250, what: `the ECS task started by ${startedBy}` },
    );
    expect(arns).toHaveLength(1);
    return arns[0] ?? '';
  }

  it('runs a task named after the attempt; when it stops, the reaper finds it and ends the attempt', async () => {
    const { dagId, runId } = await trigger([{ ...ecsTask, config }]);
    const taskArn = await startedTask(dagId, runId);
    const described = await ecs.send(new DescribeTasksCommand({ cluster, tasks: [taskArn] }));
    expect(described.tasks?.[0]).toMatchObject({ lastStatus: 'RUNNING', launchType: 'FARGATE' });
    // The container "exits" (the emulator stops it with exit code 0); no event comes, so the
    // reaper's DescribeTasks check, once the check time passes, records the end.
    await ecs.send(new StopTaskCommand({ cluster, task: taskArn, reason: 'the job finished' }));
    const run = await waitFor(
      async () => {
        await reap();
        return view(dagId, runId);
      },
      (v) => ['success', 'failed'].includes(v.status),
      { timeoutMs: 120_000, intervalMs: 3000, what: 'the reaper to end the ECS attempt' },
    );
    expect(run.status).toBe('success');
    const output = await api.request<{ output: { taskArn: string } }>(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/job/output`,
    );
    expect(output.body.output.taskArn).toBe(taskArn);
    expect(await logOf(dagId, runId, 'job', 1)).toMatch(/checked by the reaper/);
  });

  it('the "ECS Task State Change" event of its stop ends the attempt: a non-zero exit fails it', async () => {
    const { dagId, runId } = await trigger([{ ...ecsTask, config }]);
    const taskArn = await startedTask(dagId, runId);
    await waitForTask(dagId, runId, 'job', ['running']);
    // The event AWS delivers through the EcsTasksStopped rule, given to the completion function
    // as the rule would: the emulator does not publish it.
    const startedBy = `airless-${workName({ dagId, runId, taskId: 'job', attempt: 1 })}`;
    const event = {
      version: '0',
      id: 'e2e',
      source: 'aws.ecs',
      'detail-type': 'ECS Task State Change',
      account: '000000000000',
      region: 'us-east-1',
      time: new Date().toISOString(),
      resources: [taskArn],
      detail: {
        taskArn,
        startedBy,
        lastStatus: 'STOPPED',
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
        containers: [{ name: 'job', exitCode: 3, lastStatus: 'STOPPED' }],
      },
    };
    await deliver(event);
    const run = await waitForRun(dagId, runId, 30);
    expect(run.status).toBe('failed');
    expect((run.tasks[0] as Task).error).toMatch(
      /task stopped: Essential container in task exited; exit codes: job=3/,
    );
    // A repeated delivery finds the attempt ended and changes nothing.
    expect(await deliver(event)).toBe('stale');
    expect((await view(dagId, runId)).tasks.map((t) => [t.status, t.attempt])).toEqual([
      ['failed', 1],
    ]);
  });

  it('cancelling the run stops the ECS task', async () => {
    const { dagId, runId } = await trigger([{ ...ecsTask, config }]);
    const taskArn = await startedTask(dagId, runId);
    await waitForTask(dagId, runId, 'job', ['running']);
    const cancel = await api.request(
      'POST',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/cancel`,
    );
    expect(cancel.status).toBe(200);
    const described = await waitFor(
      () => ecs.send(new DescribeTasksCommand({ cluster, tasks: [taskArn] })),
      (d) => d.tasks?.[0]?.lastStatus === 'STOPPED',
      { timeoutMs: 30_000, intervalMs: 250, what: 'the ECS task to be stopped' },
    );
    expect(described.tasks?.[0]).toMatchObject({
      lastStatus: 'STOPPED',
      stoppedReason: 'the Airless run was cancelled',
    });
  });
});
