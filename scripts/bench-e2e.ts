// npm run bench:e2e: the deployed stack on the local emulator, over HTTP.
//   - the wall time of a 40-task chain (t00 → t01 → … → t39), against a warm 1-task run measured
//     in the same run (the fixed cost of a run: trigger, one dispatch, one completion);
//   - the task-to-task lag along the chain (start of a task − end of its upstream), p50 and p95;
//   - the AWS requests the stack spent per task, read from the Lambdas' own reports
//     (lambdas/runtime.ts logs the requests of every invocation);
//   - the AWS requests per task of a 200-wide fan-out written out (root → 200 tasks → sink),
//     against the same work as a mapped task (list → mapOver of 200 → sink), in the same run;
//   - how long the API takes to answer the trigger of a 10,000-task DAG, against the trigger of
//     a 1-task DAG, and how long until its task instances are all written (off the request path).
import {
  CloudWatchLogsClient,
  DescribeLogGroupsCommand,
  FilterLogEventsCommand,
} from '@aws-sdk/client-cloudwatch-logs';
import { clientConfig } from '../adapters/aws/clients.ts';
import { ApiClient } from '../cli/api-client.ts';
import { deployLocal } from '../localstack/deploy.ts';
import { emulatorConfig } from '../localstack/emulator.ts';

const CHAIN = 40;
const cfg = emulatorConfig();
console.log('deploying the stack to the emulator…');
const { local } = await deployLocal(cfg, { quiet: true });
const api = new ApiClient(local.apiUrl, local.region);
const suffix = Date.now().toString(36);

interface RunView {
  status: string;
  startTime: string;
  endTime: string;
  tasks: { taskId: string; status: string; startTime: string; endTime: string }[];
}

async function run(
  dagId: string,
  tasks: object[],
): Promise<{ view: RunView; clientMs: number; t0: number; runId: string }> {
  const created = await api.request('POST', '/v1/dags', { dagId, tasks });
  if (created.status !== 201) throw new Error(`create ${dagId}: ${created.status} ${created.text}`);
  const t0 = Date.now();
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
  const path = `/v1/dags/${dagId}/runs/${encodeURIComponent(trig.body.runId)}`;
  for (let i = 0; i < 3000 && Date.now() - t0 < 600_000; i++) {
    // The run alone while it runs (one read); its tasks once, at the end.
    const r = await api.request<Omit<RunView, 'tasks'>>('GET', `${path}?tasks=false`);
    if (['success', 'failed', 'cancelled'].includes(r.body.status)) {
      const clientMs = Date.now() - t0;
      const view = await api.request<RunView>('GET', path);
      if (view.status !== 200) throw new Error(`${dagId} run view: ${view.status} ${view.text}`);
      return { view: view.body, clientMs, t0, runId: trig.body.runId };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${dagId} did not finish`);
}

const ms = (a: string, b: string) => new Date(b).getTime() - new Date(a).getTime();
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};

/** Sums the requests the Lambdas reported since `since`, by function. */
async function requestsSince(since: number): Promise<Record<string, number>> {
  const logs = new CloudWatchLogsClient(clientConfig());
  const groups = (await logs.send(new DescribeLogGroupsCommand({}))).logGroups ?? [];
  const out: Record<string, number> = {};
  for (const fn of ['Worker', 'Advance', 'Api']) {
    const group = groups.find((g) => g.logGroupName?.includes(`${fn}Function`))?.logGroupName;
    if (!group) continue;
    let token: string | undefined;
    for (let page = 0; page < 100; page++) {
      const res = await logs.send(
        new FilterLogEventsCommand({
          logGroupName: group,
          startTime: since,
          ...(token ? { nextToken: token } : {}),
        }),
      );
      for (const e of res.events ?? []) {
        if (!e.message?.includes('"aws requests"')) continue;
        const line = JSON.parse(e.message.slice(e.message.indexOf('{'))) as {
          awsRequestTotal?: number;
          routeKey?: string;
        };
        // The API's part in a run is the trigger; its GETs are this benchmark watching.
        if (fn === 'Api' && line.routeKey !== 'POST /v1/dags/{dag_id}/runs') continue;
        out[fn] = (out[fn] ?? 0) + (line.awsRequestTotal ?? 0);
      }
      token = res.nextToken;
      if (!token) break;
    }
  }
  return out;
}

// The first run of a freshly deployed stack pays every Lambda's cold start: warm up, then measure.
await run(`bench_warmup_${suffix}`, [{ taskId: 'only', operator: 'noop' }]);
const single = await run(`bench_one_${suffix}`, [{ taskId: 'only', operator: 'noop' }]);
const chainTasks = Array.from({ length: CHAIN }, (_, i) => ({
  taskId: `t${String(i).padStart(2, '0')}`,
  operator: 'noop',
  ...(i > 0 ? { dependsOn: [`t${String(i - 1).padStart(2, '0')}`] } : {}),
}));
const chain = await run(`bench_chain_${suffix}`, chainTasks);
if (chain.view.status !== 'success') throw new Error(`chain run ended ${chain.view.status}`);
// Let the last invocations' log lines land.
await new Promise((r) => setTimeout(r, 2000));
const requests = await requestsSince(chain.t0);

// Retry-delay accuracy: a task that fails three times with a fixed 2-second delay. The delay is
// measured from the failure (the last line of an attempt's log) to the next attempt's first line.
const RETRY_DELAY = 2;
const retried = await run(`bench_retry_${suffix}`, [
  {
    taskId: 'flaky',
    operator: 'noop',
    config: { failAttempts: 3 },
    retries: 3,
    retryDelaySeconds: RETRY_DELAY,
    retryBackoff: 'fixed',
  },
]);
const logPath = (attempt: number) =>
  `/v1/dags/bench_retry_${suffix}/runs/${encodeURIComponent(retried.runId)}/tasks/flaky/logs?attempt=${attempt}`;
const stamps = async (attempt: number) =>
  (await api.request('GET', logPath(attempt))).text
    .trim()
    .split('\n')
    .map((l) => new Date(l.slice(0, 24)).getTime());
const retryDelays: number[] = [];
for (let attempt = 1; attempt <= 3; attempt++) {
  const failedAt = (await stamps(attempt)).at(-1) as number;
  const nextStart = (await stamps(attempt + 1))[0] as number;
  retryDelays.push(nextStart - failedAt);
}

const byId = new Map(chain.view.tasks.map((t) => [t.taskId, t]));
const lags = chainTasks.slice(1).map((t, i) => {
  const prev = byId.get(chainTasks[i]?.taskId ?? '');
  const cur = byId.get(t.taskId);
  return prev && cur ? ms(prev.endTime, cur.startTime) : Number.NaN;
});
const wall = ms(chain.view.startTime, chain.view.endTime);
const oneWall = ms(single.view.startTime, single.view.endTime);
const total = Object.values(requests).reduce((a, b) => a + b, 0);

console.log(`\n${CHAIN}-task chain on the local stack (MiniStack, one machine)`);
console.log(
  `  wall time, run start → run end     ${(wall / 1000).toFixed(2)} s   (client saw ${(chain.clientMs / 1000).toFixed(2)} s)`,
);
console.log(`  baseline: a 1-task run              ${(oneWall / 1000).toFixed(2)} s`);
console.log(`    ratio chain / (${CHAIN} × 1-task run): ${(wall / (CHAIN * oneWall)).toFixed(2)}`);
console.log(
  `  task-to-task lag  p50 ${pct(lags, 50)} ms   p95 ${pct(lags, 95)} ms   (max ${Math.max(...lags)} ms)`,
);
console.log(`    ratio lag p50 / 1-task run: ${(pct(lags, 50) / oneWall).toFixed(2)}`);
console.log(`  AWS requests by the stack: ${JSON.stringify(requests)} = ${total}`);
console.log(`  AWS requests per task: ${(total / CHAIN).toFixed(2)}`);
console.log(
  `\nRetry delay, fixed ${RETRY_DELAY}s, three retries: ${retryDelays.map((d) => `${(d / 1000).toFixed(2)}s`).join(', ')}`,
);
console.log(
  `  ratio measured / configured: ${retryDelays.map((d) => (d / (RETRY_DELAY * 1000)).toFixed(2)).join(', ')}` +
    ` (late by ${retryDelays.map((d) => `${d - RETRY_DELAY * 1000} ms`).join(', ')})`,
);
if (total === 0) console.log("  (no request reports found in the emulator's CloudWatch Logs)");

// Mapping must not raise requests per task: the same 200-wide work written out as 200 tasks,
// then as one task mapped over a list of 200 (plus the mapped task's own expanding attempt).
const FAN = 200;
const settle = () => new Promise((r) => setTimeout(r, 3000));
const fanIds = Array.from({ length: FAN }, (_, i) => `w${String(i).padStart(3, '0')}`);
const fan = await run(`bench_fan_${suffix}`, [
  { taskId: 'root', operator: 'noop' },
  ...fanIds.map((taskId) => ({ taskId, operator: 'noop', dependsOn: ['root'] })),
  { taskId: 'sink', operator: 'noop', dependsOn: fanIds },
]);
if (fan.view.status !== 'success') throw new Error(`fan-out run ended ${fan.view.status}`);
await settle();
const fanRequests = await requestsSince(fan.t0);
const mapped = await run(`bench_map_${suffix}`, [
  { taskId: 'root', operator: 'noop', config: { output: fanIds } },
  { taskId: 'each', operator: 'noop', dependsOn: ['root'], mapOver: '{{ tasks.root.output }}' },
  { taskId: 'sink', operator: 'noop', dependsOn: ['each'] },
]);
if (mapped.view.status !== 'success') throw new Error(`mapped run ended ${mapped.view.status}`);
await settle();
const mapRequests = await requestsSince(mapped.t0);
const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
const perFan = sum(fanRequests) / (FAN + 2);
const perMap = sum(mapRequests) / (FAN + 2);
console.log(`\n${FAN}-wide fan-out, root → ${FAN} → sink: written out, and as a mapped task`);
console.log(
  `  written out: ${JSON.stringify(fanRequests)} = ${sum(fanRequests)}, ${perFan.toFixed(2)} per task; ${(ms(fan.view.startTime, fan.view.endTime) / 1000).toFixed(2)} s`,
);
console.log(
  `  mapped:      ${JSON.stringify(mapRequests)} = ${sum(mapRequests)}, ${perMap.toFixed(2)} per task (per mapped instance, root and sink); ${(ms(mapped.view.startTime, mapped.view.endTime) / 1000).toFixed(2)} s`,
);
console.log(`    ratio mapped / written out, requests per task: ${(perMap / perFan).toFixed(2)}`);

// The trigger of a 10,000-task DAG, paused so that its tasks do not run: the API answers once the
// run item exists; the task instances are written after, by the advance function.
const BIG = 10_000;
const timeTrigger = async (dagId: string) => {
  const t = Date.now();
  const r = await api.request<{ runId: string; status: string }>(
    'POST',
    `/v1/dags/${dagId}/runs`,
    {},
  );
  if (r.status !== 201) throw new Error(`trigger ${dagId}: ${r.status} ${r.text}`);
  return { ms: Date.now() - t, runId: r.body.runId };
};
const bigId = `bench_big_${suffix}`;
const bigDoc = {
  dagId: bigId,
  tasks: Array.from({ length: BIG }, (_, i) => ({
    taskId: `t${String(i).padStart(5, '0')}`,
    operator: 'noop',
    ...(i > 0 ? { dependsOn: ['t00000'] } : {}),
  })),
};
const bigCreated = await api.request('POST', '/v1/dags', bigDoc);
if (bigCreated.status !== 201)
  throw new Error(`create ${bigId}: ${bigCreated.status} ${bigCreated.text}`);
await api.request('PATCH', `/v1/dags/${bigId}`, { paused: true });
const smallTriggers: number[] = [];
for (let i = 0; i < 3; i++) smallTriggers.push((await timeTrigger(`bench_one_${suffix}`)).ms);
const bigTrigger = await timeTrigger(bigId);
const bigStart = Date.now() - bigTrigger.ms;
let writtenMs = Number.NaN;
for (let i = 0; i < 600 && Date.now() - bigStart < 600_000; i++) {
  const v = await api.request<RunView>(
    'GET',
    `/v1/dags/${bigId}/runs/${encodeURIComponent(bigTrigger.runId)}`,
  );
  if (v.body.tasks?.length === BIG) {
    writtenMs = Date.now() - bigStart;
    break;
  }
  await new Promise((r) => setTimeout(r, 1000));
}
await api.request('DELETE', `/v1/dags/${bigId}`);
const smallTrigger = pct(smallTriggers, 50);
console.log(`\nTrigger of a ${BIG.toLocaleString('en')}-task DAG (paused: its tasks do not run)`);
console.log(
  `  API answered in ${bigTrigger.ms} ms; baseline: a 1-task trigger ${smallTrigger} ms (median of 3)`,
);
console.log(
  `    ratio ${BIG.toLocaleString('en')}-task / 1-task trigger: ${(bigTrigger.ms / smallTrigger).toFixed(2)}`,
);
console.log(
  `  every task instance written ${(writtenMs / 1000).toFixed(1)} s after the trigger (off the request path)`,
);
