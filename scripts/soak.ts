// npm run soak: many runs of DAGs of mixed shapes on the deployed local stack, with faults
// injected at random (core/faults.ts): about 10% of tasks crash once at a worker fault point,
// some advance events crash, and about 10% of messages or events are delivered twice. Checks
// that no task is lost, none succeeds twice, no run is stuck, and every run ends with the status
// computed offline from its DAG and its injected failures.
//
//   SOAK_TASKS    total tasks (default 10000)       SOAK_SEED     random seed (default 1)
//   SOAK_MINUTES  time bound for the runs (default 40)
//
// It ends with `soak: N tasks, L lost, D doubled, S stuck runs, M mismatched runs` and exits
// non-zero unless L, D, S and M are all 0. Every loop is bounded in count and time, and every
// request goes to the emulator on 127.0.0.1.

import { InvokeCommand, LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { clientConfig } from '../adapters/aws/clients.ts';
import { ApiClient } from '../cli/api-client.ts';
import { TRIGGER_RULES, type TriggerRule } from '../core/dag/schema.ts';
import type { FaultRule } from '../core/faults.ts';
import { countUpstream, decide, runOutcome } from '../core/readiness/index.ts';
import type { TaskStatus } from '../core/state/index.ts';
import { deployLocal } from '../localstack/deploy.ts';
import { emulatorConfig } from '../localstack/emulator.ts';
import { localClients } from '../localstack/resources.ts';

const TOTAL = Number(process.env.SOAK_TASKS ?? 10_000);
const MINUTES = Number(process.env.SOAK_MINUTES ?? 40);
let seed = Number(process.env.SOAK_SEED ?? 1) >>> 0;
/** mulberry32: a small seeded generator, so a failing soak can be replayed. */
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;

interface SoakTask {
  taskId: string;
  operator: 'noop';
  dependsOn: string[];
  triggerRule: TriggerRule;
  retries: number;
  retryDelaySeconds: number;
  config: { failAttempts: number };
}
interface SoakDag {
  dagId: string;
  tasks: SoakTask[];
  faults: FaultRule[];
  /** Attempts that crash (and so fail) per task, for the offline model. */
  crashed: Map<string, Set<number>>;
}

const RETRIES = 2;

function task(taskId: string, dependsOn: string[], rule: TriggerRule): SoakTask {
  const r = random();
  // Most succeed at once; some fail once or twice and are retried; a few fail for good.
  const failAttempts = r < 0.8 ? 0 : r < 0.9 ? 1 : r < 0.95 ? 2 : 3;
  return {
    taskId,
    operator: 'noop',
    dependsOn,
    triggerRule: rule,
    retries: RETRIES,
    retryDelaySeconds: 0,
    config: { failAttempts },
  };
}

/** A DAG of one of the shapes: a chain, a wide fan-out and join, or random layers (diamonds). */
function makeDag(index: number, size: number): SoakDag {
  const dagId = `soak_${Date.now().toString(36)}_${index}`;
  const tasks: SoakTask[] = [];
  const shape = index % 3;
  if (shape === 0) {
    for (let i = 0; i < size; i++) tasks.push(task(`c${i}`, i ? [`c${i - 1}`] : [], 'all_success'));
  } else if (shape === 1) {
    tasks.push(task('root', [], 'all_success'));
    for (let i = 0; i < size - 2; i++) tasks.push(task(`w${i}`, ['root'], 'all_success'));
    tasks.push(
      task(
        'join',
        tasks.slice(1).map((t) => t.taskId),
        pick(TRIGGER_RULES),
      ),
    );
  } else {
    const layers = 5;
    const per = Math.max(1, Math.floor(size / layers));
    const earlier: string[] = [];
    for (let l = 0; l < layers; l++) {
      const layer: string[] = [];
      for (let i = 0; i < per && tasks.length < size; i++) {
        const id = `l${l}_${i}`;
        const deps =
          l === 0
            ? []
            : [
                ...new Set(
                  Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(earlier)),
                ),
              ];
        tasks.push(task(id, deps, l === 0 ? 'all_success' : pick(TRIGGER_RULES)));
        layer.push(id);
      }
      earlier.push(...layer);
    }
  }
  const faults: FaultRule[] = [];
  const crashed = new Map<string, Set<number>>();
  for (const t of tasks) {
    const r = random();
    if (r < 0.1) {
      // A crash on attempt 1 at a worker point. Before the outcome is written, the attempt
      // fails (the reaper fails it once the lease expires); after, it changes nothing.
      const point = pick([
        'worker.after-claim',
        'worker.before-outcome',
        'worker.after-outcome',
      ] as const);
      faults.push({ point, taskId: t.taskId, attempt: 1, action: 'crash' });
      if (point !== 'worker.after-outcome') crashed.set(t.taskId, new Set([1]));
    } else if (r < 0.15) {
      faults.push({ point: 'advance.before-dispatch', taskId: t.taskId, action: 'crash' });
    } else if (r < 0.25) {
      const point = pick(['worker.after-outcome', 'advance.before-dispatch'] as const);
      faults.push({ point, taskId: t.taskId, action: 'repeat' });
    }
  }
  if (random() < 0.1) faults.push({ point: 'advance.before-run-end', action: 'crash' });
  return { dagId, tasks, faults, crashed };
}

/** The run's final status, computed offline from the DAG and the failures injected into it. */
function expectedStatus(dag: SoakDag): string {
  const status = new Map<string, TaskStatus>();
  const byId = new Map(dag.tasks.map((t) => [t.taskId, t]));
  const done = (id: string) => status.has(id);
  // Tasks come in an order where each follows its upstream tasks (as generated).
  for (const t of dag.tasks) {
    if (!t.dependsOn.every(done)) throw new Error(`soak: ${t.taskId} before its upstream tasks`);
    const counts = countUpstream(t.dependsOn.map((u) => status.get(u) as TaskStatus));
    const decision = decide(t.triggerRule, counts, t.dependsOn.length);
    if (decision === 'skipped' || decision === 'upstream_failed') {
      status.set(t.taskId, decision);
      continue;
    }
    // It runs: the first attempt that neither fails on purpose nor crashes succeeds, if it is
    // within the retries.
    const crashes = dag.crashed.get(t.taskId) ?? new Set<number>();
    let ok = false;
    for (let a = 1; a <= (byId.get(t.taskId)?.retries ?? 0) + 1; a++) {
      if (a > t.config.failAttempts && !crashes.has(a)) {
        ok = true;
        break;
      }
    }
    status.set(t.taskId, ok ? 'success' : 'failed');
  }
  const all = [...status.values()];
  return runOutcome({
    total: all.length,
    finished: all.length,
    succeeded: all.filter((s) => s === 'success' || s === 'skipped').length,
  });
}

interface RunView {
  status: string;
  tasks: { taskId: string; status: string; attempt: number }[];
}

const started = Date.now();
const cfg = emulatorConfig();
console.log('soak: deploying the stack (fault injection on, 30-second lease)…');
const { local, outputs } = await deployLocal(cfg, {
  quiet: true,
  faultInjection: true,
  leaseSeconds: 30,
});
const api = new ApiClient(local.apiUrl, local.region);
const lambda = new LambdaClient(clientConfig());
const s3 = localClients().s3;
const reaper = ((await lambda.send(new ListFunctionsCommand({}))).Functions ?? []).find((f) =>
  f.FunctionName?.includes('ReaperFunction'),
)?.FunctionName;

const SIZE = 50;
const dags = Array.from({ length: Math.max(1, Math.round(TOTAL / SIZE)) }, (_, i) =>
  makeDag(i, SIZE),
);
const tasks = dags.reduce((n, d) => n + d.tasks.length, 0);
const faultCount = dags.reduce((n, d) => n + d.faults.length, 0);
console.log(`soak: ${dags.length} DAGs, ${tasks} tasks, ${faultCount} injected faults`);

const runs = new Map<string, string>(); // dagId → runId
for (const d of dags) {
  const c = await api.request('POST', '/v1/dags', {
    dagId: d.dagId,
    params: { airlessFaults: d.faults },
    tasks: d.tasks,
  });
  if (c.status !== 201) throw new Error(`soak: create ${d.dagId}: ${c.status} ${c.text}`);
}
for (const d of dags) {
  const r = await api.request<{ runId: string }>('POST', `/v1/dags/${d.dagId}/runs`, {});
  if (r.status !== 201) throw new Error(`soak: trigger ${d.dagId}: ${r.status} ${r.text}`);
  runs.set(d.dagId, r.body.runId);
}
console.log(
  `soak: ${runs.size} runs triggered after ${((Date.now() - started) / 1000).toFixed(0)} s`,
);

const views = new Map<string, RunView>();
const terminal = new Set(['success', 'failed', 'cancelled']);
const deadline = Date.now() + MINUTES * 60_000;
for (let round = 0; round < 10_000 && Date.now() < deadline; round++) {
  // The stack's reaper runs every minute; a pass now and then shortens the crashes' recovery.
  if (reaper) await lambda.send(new InvokeCommand({ FunctionName: reaper }));
  // The light summary while a run goes on; its whole view once, when it has ended.
  const open = dags.filter((d) => !terminal.has(views.get(d.dagId)?.status ?? ''));
  for (let i = 0; i < open.length; i += 10) {
    await Promise.all(
      open.slice(i, i + 10).map(async (d) => {
        const list = await api.request<{ runs: { status: string }[] }>(
          'GET',
          `/v1/dags/${d.dagId}/runs?limit=1`,
        );
        if (!terminal.has(list.body.runs?.[0]?.status ?? '')) return;
        const v = await api.request<RunView>(
          'GET',
          `/v1/dags/${d.dagId}/runs/${encodeURIComponent(runs.get(d.dagId) ?? '')}`,
        );
        if (v.status === 200) views.set(d.dagId, v.body);
      }),
    );
  }
  const ended = dags.filter((d) => terminal.has(views.get(d.dagId)?.status ?? '')).length;
  if (round % 6 === 0) {
    console.log(
      `soak: ${ended}/${dags.length} runs ended after ${((Date.now() - started) / 1000).toFixed(0)} s`,
    );
  }
  if (ended === dags.length) break;
  await new Promise((r) => setTimeout(r, 10_000));
}
// Runs still open at the deadline: their views as they stand, for the counts below.
for (const d of dags.filter((x) => !terminal.has(views.get(x.dagId)?.status ?? ''))) {
  const v = await api.request<RunView>(
    'GET',
    `/v1/dags/${d.dagId}/runs/${encodeURIComponent(runs.get(d.dagId) ?? '')}`,
  );
  if (v.status === 200) views.set(d.dagId, v.body);
}

// Doubled: a task with two attempts whose own logs end in success.
const bucket = outputs.DataBucketName as string;
async function lastLine(key: string): Promise<string> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const text = (await res.Body?.transformToString('utf-8')) ?? '';
  return text.trim().split('\n').at(-1) ?? '';
}
let doubled = 0;
for (const d of dags) {
  const runId = runs.get(d.dagId) ?? '';
  const keys: string[] = [];
  let token: string | undefined;
  for (let page = 0; page < 100; page++) {
    const res = await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: `logs/${d.dagId}/${runId}/`,
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    keys.push(...(res.Contents ?? []).map((o) => o.Key ?? ''));
    token = res.NextContinuationToken;
    if (!token) break;
  }
  const successes = new Map<string, number>();
  for (let i = 0; i < keys.length; i += 16) {
    await Promise.all(
      keys.slice(i, i + 16).map(async (key) => {
        if ((await lastLine(key)).endsWith(' success')) {
          const taskId = key.split('/').at(-2) ?? '';
          successes.set(taskId, (successes.get(taskId) ?? 0) + 1);
        }
      }),
    );
  }
  doubled += [...successes.values()].filter((n) => n > 1).length;
}

let lost = 0;
let stuck = 0;
let mismatched = 0;
const outcomes: Record<string, number> = {};
for (const d of dags) {
  const v = views.get(d.dagId);
  if (!v || !terminal.has(v.status)) stuck++;
  lost +=
    d.tasks.length -
    (v?.tasks.filter(
      (t) => terminal.has(t.status) || t.status === 'upstream_failed' || t.status === 'skipped',
    ).length ?? 0);
  if (v && terminal.has(v.status)) {
    outcomes[v.status] = (outcomes[v.status] ?? 0) + 1;
    const want = expectedStatus(d);
    if (v.status !== want) {
      mismatched++;
      console.log(`soak: ${d.dagId} ended ${v.status}, expected ${want}`);
    }
  }
}
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
console.log(`soak: run outcomes ${JSON.stringify(outcomes)}; ${faultCount} faults; ${minutes} min`);
console.log(
  `soak: ${tasks} tasks, ${lost} lost, ${doubled} doubled, ${stuck} stuck runs, ${mismatched} mismatched runs`,
);
process.exit(lost || doubled || stuck || mismatched ? 1 : 0);
