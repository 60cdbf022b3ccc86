import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { registerDag } from '../../app/dags.ts';
import type { Deps } from '../../app/deps.ts';
import { triggerRun } from '../../app/runs.ts';
import { type Delivery, runWorkerLoop, type TaskSource } from '../../app/worker-loop.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry, type RunOperator } from '../../operators/registry.ts';

/**
 * The Fargate worker's loop (app/worker-loop.ts) on the in-memory ports, fed by a queue that
 * records what the loop does with each message: the SQS adapter has its own tests.
 */
class TestSource implements TaskSource {
  readonly #waiting: TaskMessage[] = [];
  #wake: (() => void) | undefined;
  readonly done: TaskMessage[] = [];
  readonly handedBack: TaskMessage[] = [];
  readonly kept: TaskMessage[] = [];

  push(...messages: TaskMessage[]) {
    this.#waiting.push(...messages);
    this.#wake?.();
  }

  async receive(max: number, signal: AbortSignal): Promise<Delivery[]> {
    while (this.#waiting.length === 0 && !signal.aborted) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
    }
    return this.#waiting.splice(0, max).map((message) => ({
      message,
      done: async () => {
        this.done.push(message);
      },
      handBack: async () => {
        this.handedBack.push(message);
        this.#waiting.push(message);
      },
      keep: async () => {
        this.kept.push(message);
      },
    }));
  }
}

/** Runs until released: counts how many run at once, and stops on abort as operators must. */
function gate() {
  let running = 0;
  let most = 0;
  let releaseAll: () => void = () => {};
  const released = new Promise<void>((r) => {
    releaseAll = r;
  });
  const op: RunOperator<Record<string, never>> = {
    name: 'gate',
    config: z.strictObject({}),
    async run(_config, ctx) {
      running++;
      most = Math.max(most, running);
      try {
        await new Promise<void>((resolve, reject) => {
          released.then(resolve);
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
        });
        return { ran: ctx.task.taskId };
      } finally {
        running--;
      }
    },
  };
  return { op, release: () => releaseAll(), most: () => most, running: () => running };
}

async function fargateRun(deps: Deps, tasks: number): Promise<{ dagId: string; runId: string }> {
  const dagId = `loop-${Math.random().toString(36).slice(2, 8)}`;
  const r = await registerDag(
    deps,
    JSON.stringify({
      dagId,
      defaults: { executor: 'fargate', timeoutSeconds: 3600 },
      tasks: Array.from({ length: tasks }, (_, i) => ({
        taskId: `t${i}`,
        operator: 'gate',
        config: {},
      })),
    }),
  );
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const { run } = await triggerRun(deps, { dagId });
  return { dagId, runId: run.runId };
}

const until = (check: () => boolean) =>
  expect.poll(check, { timeout: 10_000, interval: 5 }).toBe(true);

/** A gated operator, deps with Fargate workers, a run of `tasks` fargate tasks, its messages queued. */
async function setup(tasks: number) {
  const g = gate();
  const deps = {
    ...memoryDeps({ operators: new OperatorRegistry().register(noop).register(g.op) }),
    fargate: true,
  };
  const { dagId, runId } = await fargateRun(deps, tasks);
  const source = new TestSource();
  source.push(...deps.dispatcher.sent);
  return { g, deps, dagId, runId, source };
}

const loopOptions = { leaseSeconds: 60, heartbeatSeconds: 30 };

describe('the Fargate worker loop', () => {
  it('runs fargate attempts, at most `concurrency` at once, and removes each message when done', async () => {
    const { g, deps, dagId, runId, source } = await setup(5);
    expect(deps.dispatcher.sent.map((m) => m.executor)).toEqual(Array(5).fill('fargate'));
    const stop = new AbortController();
    const loop = runWorkerLoop(deps, source, {
      ...loopOptions,
      concurrency: 2,
      stop: stop.signal,
      drainMs: 10_000,
    });
    await until(() => g.running() === 2);
    g.release();
    await until(() => source.done.length === 5);
    stop.abort();
    expect(await loop).toEqual({ attempts: 5, handedBack: 0 });
    // Each claimed message was kept from other workers while its attempt ran.
    expect(source.kept).toHaveLength(5);
    expect(g.most()).toBe(2);
    const tis = await deps.store.listTaskInstances(dagId, runId);
    expect(tis.map((t) => [t.status, t.attempt, t.output])).toEqual(
      tis.map((t) => ['success', 1, JSON.stringify({ ran: t.taskId })]),
    );
  });

  it('on stop, lets an attempt finish within the drain time', async () => {
    const { g, deps, dagId, runId, source } = await setup(1);
    const stop = new AbortController();
    const loop = runWorkerLoop(deps, source, {
      ...loopOptions,
      concurrency: 4,
      stop: stop.signal,
      drainMs: 10_000,
    });
    await until(() => g.running() === 1);
    stop.abort();
    g.release();
    expect(await loop).toEqual({ attempts: 1, handedBack: 0 });
    expect(source.handedBack).toEqual([]);
    expect((await deps.store.listTaskInstances(dagId, runId))[0]).toMatchObject({
      status: 'success',
      attempt: 1,
    });
  });

  it('on stop, hands back what outlives the drain time: the same attempt, queued, for another worker', async () => {
    const { g, deps, dagId, runId, source } = await setup(1);
    const stop = new AbortController();
    const first = runWorkerLoop(deps, source, {
      ...loopOptions,
      concurrency: 4,
      stop: stop.signal,
      drainMs: 20,
    });
    await until(() => g.running() === 1);
    stop.abort();
    expect(await first).toEqual({ attempts: 1, handedBack: 1 });
    expect(source.handedBack.map((m) => [m.taskId, m.attempt])).toEqual([['t0', 1]]);
    expect((await deps.store.listTaskInstances(dagId, runId))[0]).toMatchObject({
      status: 'queued',
      attempt: 1,
      leaseToken: null,
      startTime: null,
    });
    // Another worker takes the message it handed back and runs the same attempt to its end.
    const stop2 = new AbortController();
    const second = runWorkerLoop(deps, source, {
      ...loopOptions,
      concurrency: 4,
      stop: stop2.signal,
      drainMs: 10_000,
    });
    await until(() => g.running() === 1);
    g.release();
    await until(() => source.done.length === 1);
    stop2.abort();
    expect(await second).toEqual({ attempts: 1, handedBack: 0 });
    expect((await deps.store.listTaskInstances(dagId, runId))[0]).toMatchObject({
      status: 'success',
      attempt: 1,
    });
  });

  it('refuses fargate tasks where the deployment has no Fargate workers', async () => {
    const deps = memoryDeps({ operators: new OperatorRegistry().register(noop) });
    const r = await registerDag(
      deps,
      JSON.stringify({
        dagId: 'x',
        tasks: [{ taskId: 'a', operator: 'noop', executor: 'fargate' }],
      }),
    );
    expect(r.ok ? [] : r.issues.map((i) => i.path)).toEqual(['$.tasks[0].executor']);
  });
});
