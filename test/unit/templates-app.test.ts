import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { registerDag } from '../../app/dags.ts';
import { readLog } from '../../app/logs.ts';
import { readOutput } from '../../app/outputs.ts';
import { triggerRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { branch } from '../../operators/branch.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * A worker renders a task's templates just before its operator runs (app/templates.ts): from
 * the run's conf, the DAG's params, and upstream outputs; on the in-memory ports. The same runs
 * on the emulator in test/e2e/data-flow.test.ts.
 */
/** An operator that logs its config and fails with it: where a secret could leak. */
const leaky: RunOperator<{ url: string }> = {
  name: 'leaky',
  config: z.strictObject({ url: z.string() }),
  // A deployment's allow-list, as the stepfunctions and ecs operators have.
  refuses: (c) => (c.url.startsWith('https://evil') ? 'not an allowed host' : undefined),
  async run(config, ctx) {
    ctx.log(`calling ${config.url}`);
    throw new Error(`${config.url} answered 500`);
  },
};

async function run(dag: object, conf: Record<string, unknown> = {}) {
  const deps = memoryDeps({
    operators: new OperatorRegistry().register(noop).register(branch).register(leaky),
  });
  const dagId = `tpl_${Math.random().toString(36).slice(2, 10)}`;
  const r = await registerDag(deps, JSON.stringify({ dagId, ...dag }));
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId, conf });
  const opts = { leaseSeconds: 60, heartbeatSeconds: 30, remainingMs: () => 900_000 };
  for (let i = 0; i < 50 && deps.dispatcher.waiting.length > 0; i++) {
    await executeTask(deps, deps.dispatcher.take() as TaskMessage, opts);
  }
  const task = async (taskId: string) => {
    const ti = await deps.store.getTaskInstance({ dagId, runId: run.runId, taskId });
    if (!ti) throw new Error(`no ${taskId}`);
    return {
      status: ti.status,
      error: ti.error,
      output: (await readOutput(deps, ti))?.output,
      log: await readLog(deps, ti, ti.attempt),
    };
  };
  return { task, runStatus: (await deps.store.getRun(dagId, run.runId))?.status };
}

describe('templated configs', () => {
  it('are held to the deployment’s allow-list once rendered', async () => {
    const { task } = await run(
      {
        tasks: [
          { taskId: 't', operator: 'leaky', retries: 2, config: { url: '{{ conf.target }}' } },
        ],
      },
      { target: 'https://evil.example/' },
    );
    const t = await task('t');
    expect(t.status).toBe('failed');
    expect(t.error).toBe('this deployment refuses the rendered config: not an allowed host');
    expect(t.log).not.toContain('calling');
  });

  it('mask secrets of conf in every line an operator logs, and in the error kept with the task', async () => {
    const { task } = await run(
      {
        tasks: [
          {
            taskId: 't',
            operator: 'leaky',
            config: { url: 'https://hooks.example/{{ conf.webhook_secret }}' },
          },
        ],
      },
      { webhook_secret: 'T000-B000-XXXX' },
    );
    const t = await task('t');
    expect(t.status).toBe('failed');
    expect(t.log).toContain('calling https://hooks.example/***');
    expect(t.log).not.toContain('T000-B000-XXXX');
    expect(t.error).toBe('https://hooks.example/*** answered 500');
  });

  it('render upstream outputs, conf and params with their types, and log the rendered config', async () => {
    const { task, runStatus } = await run(
      {
        params: { bucket: 'b1' },
        tasks: [
          { taskId: 'list', operator: 'noop', config: { output: { files: ['a.csv', 'b.csv'] } } },
          {
            taskId: 'use',
            operator: 'noop',
            dependsOn: ['list'],
            config: {
              output: {
                files: '{{ tasks.list.output.files }}',
                first: 's3://{{ params.bucket }}/{{ tasks.list.output.files[0] }}',
                n: '{{ conf.n }}',
                run: '{{ runId }}@{{ attempt }}',
              },
            },
          },
        ],
      },
      { n: 2 },
    );
    expect(runStatus).toBe('success');
    const use = await task('use');
    expect(use.output).toMatchObject({
      files: ['a.csv', 'b.csv'],
      first: 's3://b1/a.csv',
      n: 2,
      run: expect.stringMatching(/@1$/),
    });
    expect(use.log).toContain('rendered config: {"output":{"files":["a.csv","b.csv"]');
  });

  it('read the output of a finished upstream task that has none as null (a branch not taken)', async () => {
    const { task } = await run({
      tasks: [
        { taskId: 'pick', operator: 'branch', config: { follow: 'a' } },
        { taskId: 'a', operator: 'noop', dependsOn: ['pick'], config: { output: 'A' } },
        { taskId: 'b', operator: 'noop', dependsOn: ['pick'] },
        {
          taskId: 'join',
          operator: 'noop',
          dependsOn: ['a', 'b'],
          triggerRule: 'none_failed_min_one_success',
          config: { output: { a: '{{ tasks.a.output }}', b: '{{ tasks.b.output }}' } },
        },
      ],
    });
    const join = await task('join');
    expect(join.status).toBe('success');
    expect(join.output).toEqual({ a: 'A', b: null });
  });

  it('fail the attempt for good, naming the path, when a path does not resolve', async () => {
    // With retries left: the next attempt would render the same, so there is none.
    const { task } = await run({
      tasks: [
        { taskId: 't', operator: 'noop', retries: 3, config: { output: '{{ conf.missing }}' } },
      ],
    });
    const t = await task('t');
    expect(t.status).toBe('failed');
    expect(t.error).toContain('{{ conf.missing }} does not resolve: no "missing"');
  });

  it('fail the attempt when the rendered config is not valid for its operator, naming the field', async () => {
    const { task } = await run(
      { tasks: [{ taskId: 't', operator: 'noop', config: { sleepSeconds: '{{ conf.s }}' } }] },
      { s: 'soon' },
    );
    const t = await task('t');
    expect(t.status).toBe('failed');
    expect(t.error).toContain('config.sleepSeconds');
  });

  it('mask secrets from conf in the logged config', async () => {
    const { task } = await run(
      {
        tasks: [
          {
            taskId: 't',
            operator: 'noop',
            config: {
              output: { token: '{{ conf.token }}', url: 'https://x/?p={{ conf.db.password }}' },
            },
          },
        ],
      },
      { token: 'tok-12345', db: { password: 'hunter22' } },
    );
    const t = await task('t');
    expect(t.status).toBe('success');
    expect(t.log).toContain('rendered config:');
    expect(t.log).not.toContain('hunter22');
    // Nor in the output the log shows (the output itself is the task's, unmasked).
    expect(t.log).not.toContain('tok-12345');
    expect(t.output).toMatchObject({ token: 'tok-12345' });
  });
});
