// npm run bench:cost: what orchestrating a task costs, in dollars per million tasks, by
// component, measured on the deployed local stack and priced with the table below.
//
// For each DAG shape it triggers one run and, once it ends, reads what the stack's Lambdas
// reported (lambdas/runtime.ts logs every invocation's AWS requests by service and operation),
// the Lambdas' REPORT lines (invocations and durations: GB-seconds at the measured durations),
// the bytes they logged (CloudWatch Logs ingestion), and the DynamoDB capacity units DynamoDB
// reported for their requests (item sizes and index entries included). It adds what no Lambda reports: the SQS event source mapping's receive and
// delete per worker batch. Step Functions Standard and Express are priced for the same DAG
// written as Pass states. Shapes: a 10-task chain, and root → N → sink fan-outs of 102, 1,002
// and 10,000 tasks (requests per task must stay flat). The last line is the noop case:
//   cost: $X.XX per million tasks, R requests per task
// Durations on the emulator are longer than on AWS (it serializes DynamoDB), so the Lambda
// compute figure is an upper bound; request counts are the same as on AWS.
import {
  CloudWatchLogsClient,
  DescribeLogGroupsCommand,
  FilterLogEventsCommand,
} from '@aws-sdk/client-cloudwatch-logs';
import { clientConfig } from '../adapters/aws/clients.ts';
import { ApiClient } from '../cli/api-client.ts';
import { deployLocal } from '../localstack/deploy.ts';
import { awsEnv, emulatorConfig } from '../localstack/emulator.ts';

/**
 * List prices, US East (N. Virginia), as published on 2026-11-27; free tiers left out.
 * - Lambda: https://aws.amazon.com/lambda/pricing/ (requests; Arm GB-seconds, first tier)
 * - DynamoDB on demand: https://aws.amazon.com/dynamodb/pricing/on-demand/ (write and read
 *   request units; a write unit is 1 KB of item, 2 in a transaction; reading the stream from
 *   Lambda is free)
 * - SQS FIFO: https://aws.amazon.com/sqs/pricing/ (each 64 KB chunk of a request is one)
 * - S3 Standard: https://aws.amazon.com/s3/pricing/ (PUT, GET)
 * - EventBridge: https://aws.amazon.com/eventbridge/pricing/ (custom events, Scheduler)
 * - CloudWatch Logs: https://aws.amazon.com/cloudwatch/pricing/ (standard ingestion)
 * - API Gateway HTTP API: https://aws.amazon.com/api-gateway/pricing/
 * - Step Functions: https://aws.amazon.com/step-functions/pricing/ (Standard per state
 *   transition; Express per request and per GB-second, 64 MB minimum, first tier)
 */
const PRICE = {
  lambdaRequest: 0.2 / 1e6,
  lambdaGbSecond: 0.0000133334,
  dynamoWriteUnit: 0.625 / 1e6,
  dynamoReadUnit: 0.125 / 1e6,
  sqsRequest: 0.5 / 1e6,
  s3Put: 0.005 / 1000,
  s3Get: 0.0004 / 1000,
  eventsPut: 1 / 1e6,
  apiRequest: 1 / 1e6,
  logsGb: 0.5,
  sfnTransition: 0.025 / 1000,
  sfnExpressRequest: 1 / 1e6,
  sfnExpressGbSecond: 0.00001667,
} as const;

const cfg = emulatorConfig();
Object.assign(process.env, awsEnv(cfg));
console.log('deploying the stack to the emulator…');
const { local } = await deployLocal(cfg, { quiet: true });
const api = new ApiClient(local.apiUrl, local.region);
const logs = new CloudWatchLogsClient(clientConfig());
const suffix = Date.now().toString(36);

interface RunView {
  status: string;
  startTime: string;
  endTime: string;
}

async function runDag(
  dagId: string,
  tasks: object[],
): Promise<{ t0: number; runId: string; seconds: number }> {
  const created = await api.request('POST', '/v1/dags', { dagId, tasks });
  if (created.status !== 201) throw new Error(`create ${dagId}: ${created.status} ${created.text}`);
  const t0 = Date.now();
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
  const path = `/v1/dags/${dagId}/runs/${encodeURIComponent(trig.body.runId)}`;
  for (let i = 0; i < 6000 && Date.now() - t0 < 1_800_000; i++) {
    // The run alone (one read): the whole view would query every task instance each poll.
    const r = await api.request<RunView>('GET', `${path}?tasks=false`);
    if (r.body.status === 'success') {
      // The run's own timestamps: the task rate the stack sustained over it.
      const seconds = (Date.parse(r.body.endTime) - Date.parse(r.body.startTime)) / 1000;
      return { t0, runId: trig.body.runId, seconds };
    }
    if (['failed', 'cancelled'].includes(r.body.status))
      throw new Error(`${dagId} ${r.body.status}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${dagId} did not finish`);
}

interface Usage {
  /** `service Operation` → requests, as the Lambdas reported them. */
  ops: Map<string, number>;
  invocations: Map<string, number>;
  gbSeconds: number;
  logBytes: number;
  /** DynamoDB capacity units as DynamoDB reported them (adapters/aws/clients.ts). */
  capacity: { read: number; write: number; indexWrite: number };
  /** DynamoDB writes sent as statements of a BatchExecuteStatement (up to 25 a request). */
  batchedWrites: number;
  /** Write units by operation and item kind: where DynamoDB's bill goes. */
  writesByKind: Map<string, number>;
}

/** What the stack's functions did since `since`; the API's GETs (this script polling) left out. */
async function usageSince(since: number): Promise<Usage> {
  const groups = (await logs.send(new DescribeLogGroupsCommand({}))).logGroups ?? [];
  const usage: Usage = {
    ops: new Map(),
    invocations: new Map(),
    gbSeconds: 0,
    logBytes: 0,
    capacity: { read: 0, write: 0, indexWrite: 0 },
    batchedWrites: 0,
    writesByKind: new Map(),
  };
  for (const fn of ['Worker', 'Advance', 'Api', 'Trigger', 'Retrier', 'Complete']) {
    const group = groups.find((g) => g.logGroupName?.includes(`${fn}Function`))?.logGroupName;
    if (!group) continue;
    // Requests of the API's polling are this script's, not the run's: skip those invocations.
    const skipped = new Set<string>();
    const events: { message: string }[] = [];
    // Pages by nextToken (AWS), and by time: the emulator answers at most 10,000 events and no
    // token, so a full page is followed by another from its last timestamp, without repeats.
    const seen = new Set<string>();
    let token: string | undefined;
    let from = since;
    for (let page = 0; page < 2000; page++) {
      const res = await logs.send(
        new FilterLogEventsCommand({
          logGroupName: group,
          startTime: from,
          ...(token ? { nextToken: token } : {}),
        }),
      );
      const got = res.events ?? [];
      for (const e of got) {
        const id = e.eventId ?? `${e.logStreamName}|${e.timestamp}|${e.message}`;
        if (seen.has(id)) continue;
        seen.add(id);
        events.push({ message: e.message ?? '' });
      }
      token = res.nextToken;
      if (token) continue;
      const last = got.at(-1)?.timestamp;
      if (got.length < 10_000 || last === undefined || last <= from) break;
      from = last;
    }
    for (const { message } of events) {
      if (!message.includes('"aws requests"')) continue;
      const line = JSON.parse(message.slice(message.indexOf('{'))) as {
        awsRequests?: Record<string, number>;
        dynamoCapacity?: {
          read: number;
          write: number;
          indexWrite: number;
          batchedWrites?: number;
          writesByKind?: Record<string, number>;
        };
        routeKey?: string;
        function_request_id?: string;
      };
      if (fn === 'Api' && line.routeKey !== 'POST /v1/dags/{dag_id}/runs') {
        if (line.function_request_id) skipped.add(line.function_request_id);
        continue;
      }
      for (const [op, n] of Object.entries(line.awsRequests ?? {})) {
        usage.ops.set(op, (usage.ops.get(op) ?? 0) + n);
      }
      usage.capacity.read += line.dynamoCapacity?.read ?? 0;
      usage.capacity.write += line.dynamoCapacity?.write ?? 0;
      usage.capacity.indexWrite += line.dynamoCapacity?.indexWrite ?? 0;
      usage.batchedWrites += line.dynamoCapacity?.batchedWrites ?? 0;
      for (const [kind, n] of Object.entries(line.dynamoCapacity?.writesByKind ?? {})) {
        usage.writesByKind.set(kind, (usage.writesByKind.get(kind) ?? 0) + n);
      }
    }
    for (const { message } of events) {
      const report = /^REPORT RequestId: (\S+)\s+Duration: ([\d.]+) ms.*Memory Size: (\d+) MB/.exec(
        message,
      );
      if (report) {
        if (skipped.has(report[1] ?? '')) continue;
        usage.invocations.set(fn, (usage.invocations.get(fn) ?? 0) + 1);
        usage.gbSeconds += (Number(report[2]) / 1000) * (Number(report[3]) / 1024);
      } else if (fn !== 'Api') {
        // The API's lines are mostly this script's polling: left out, as its requests are.
        usage.logBytes += Buffer.byteLength(message);
      }
    }
  }
  return usage;
}

interface Shape {
  name: string;
  tasks: object[];
  /** State transitions of the same DAG as a Standard state machine of Pass states. */
  transitions: number;
}

const noop = (taskId: string, dependsOn?: string[]) => ({
  taskId,
  operator: 'noop',
  ...(dependsOn ? { dependsOn } : {}),
});
const chain = (n: number): Shape => ({
  name: `${n}-task chain`,
  tasks: Array.from({ length: n }, (_, i) => noop(`t${i}`, i > 0 ? [`t${i - 1}`] : undefined)),
  transitions: n + 1,
});
const fan = (n: number): Shape => ({
  name: `root → ${n} → sink`,
  tasks: [
    noop('root'),
    ...Array.from({ length: n }, (_, i) => noop(`m${i}`, ['root'])),
    noop(
      'sink',
      Array.from({ length: n }, (_, i) => `m${i}`),
    ),
  ],
  // A Parallel or Map state: each branch's Pass state, plus the Parallel/Map, root and sink.
  transitions: n + 4,
});

async function measure(shape: Shape) {
  const dagId = `bench_cost_${shape.name.replace(/\W+/g, '_')}_${suffix}`;
  const { t0, seconds } = await runDag(dagId, shape.tasks);
  await new Promise((r) => setTimeout(r, 3000)); // the last invocations' log lines land
  const u = await usageSince(t0);
  const tasks = shape.tasks.length;
  const count = (prefix: string, ops?: string[]) =>
    [...u.ops]
      .filter(([o]) => o.startsWith(prefix) && (!ops || ops.some((x) => o.endsWith(` ${x}`))))
      .reduce((a, [, n]) => a + n, 0);
  // A BatchExecuteStatement is one request, and carries up to 25 writes: counted as its writes.
  const dynamoWrites =
    count('dynamodb', [
      'UpdateItem',
      'PutItem',
      'DeleteItem',
      'BatchWriteItem',
      'TransactWriteItems',
    ]) + u.batchedWrites;
  const workerBatches = u.invocations.get('Worker') ?? 0;
  // The event source mapping's receive and delete per batch it delivered: billed, not reported.
  const sqs = count('sqs') + 2 * workerBatches;
  const s3Puts = count('s3', ['PutObject']);
  const s3Gets = count('s3', ['GetObject']);
  const events = count('events');
  const apiCalls = 1;
  const invocations = [...u.invocations.values()].reduce((a, b) => a + b, 0);
  const cost = {
    'Lambda requests': invocations * PRICE.lambdaRequest,
    'Lambda compute': u.gbSeconds * PRICE.lambdaGbSecond,
    // As DynamoDB reported them: item sizes, index entries, transactions at twice the units.
    'DynamoDB writes': u.capacity.write * PRICE.dynamoWriteUnit,
    'DynamoDB reads': u.capacity.read * PRICE.dynamoReadUnit,
    'SQS FIFO': sqs * PRICE.sqsRequest,
    'S3 PUT': s3Puts * PRICE.s3Put,
    'S3 GET': s3Gets * PRICE.s3Get,
    EventBridge: events * PRICE.eventsPut,
    'API Gateway': apiCalls * PRICE.apiRequest,
    'CloudWatch Logs': (u.logBytes / 1024 ** 3) * PRICE.logsGb,
  };
  const total = Object.values(cost).reduce((a, b) => a + b, 0);
  const requests =
    invocations + count('dynamodb') + sqs + count('s3') + events + count('scheduler') + apiCalls;
  const perMillion = (usd: number) => (usd / tasks) * 1e6;
  console.log(
    `\n${shape.name} (${tasks} tasks, ${seconds.toFixed(1)} s of run time: ${(tasks / seconds).toFixed(1)} tasks/s on the emulator): per task, and $ per million tasks`,
  );
  console.log(
    `  requests ${(requests / tasks).toFixed(2)}: Lambda ${(invocations / tasks).toFixed(2)}, DynamoDB ${(count('dynamodb') / tasks).toFixed(2)} (${(dynamoWrites / tasks).toFixed(2)} writes, ${(u.batchedWrites / tasks).toFixed(2)} of them in ${(count('dynamodb', ['BatchExecuteStatement']) / tasks).toFixed(2)} BatchExecuteStatement requests: ${(u.capacity.write / tasks).toFixed(2)} write units, ${(u.capacity.indexWrite / tasks).toFixed(2)} of them index entries), SQS ${(sqs / tasks).toFixed(2)}, S3 ${(count('s3') / tasks).toFixed(2)}, EventBridge ${(events / tasks).toFixed(2)}`,
  );
  const byKind = [...u.writesByKind]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${(n / tasks).toFixed(2)}`);
  console.log(`  write units per task, by operation and item: ${byKind.join(', ')}`);
  for (const [k, v] of Object.entries(cost)) {
    console.log(`  ${k.padEnd(18)} $${perMillion(v).toFixed(2).padStart(8)}`);
  }
  console.log(`  ${'total'.padEnd(18)} $${perMillion(total).toFixed(2).padStart(8)}`);
  // The same DAG as a state machine of Pass states: Standard per transition; Express per
  // request and per GB-second at the 64 MB minimum, for as long as this run took.
  const standard = shape.transitions * PRICE.sfnTransition;
  console.log(
    `  Step Functions Standard, the same DAG: $${perMillion(standard).toFixed(2)} (ratio Airless / Standard ${(total / standard).toFixed(2)})`,
  );
  console.log(
    `  Step Functions Express, one request and 64 MB for the run's duration: $${perMillion(PRICE.sfnExpressRequest + (64 / 1024) * PRICE.sfnExpressGbSecond * ((Date.now() - t0) / 1000)).toFixed(2)} (an upper bound: Pass states take far less than this run)`,
  );
  return { tasks, total, requests, perTask: requests / tasks, perMillion: perMillion(total) };
}

// Warm up (cold starts are not a per-task cost), then the shapes.
await runDag(`bench_cost_warmup_${suffix}`, [noop('only')]);
const small = await measure(chain(10));
// `npm run bench:cost -- --chain`: the noop line alone, for a quick look while working on it.
if (process.argv.includes('--chain')) {
  console.log(
    `cost: $${small.perMillion.toFixed(2)} per million tasks, ${small.perTask.toFixed(2)} requests per task`,
  );
  process.exit(0);
}
// Flatness is a matter of size: the same shape at 10 tasks is its baseline. (A chain's tasks
// cost fewer requests than a fan-out's: its run's progress counts its last task alone.)
const tenFan = await measure(fan(8));
const fanout = await measure(fan(100));
const large = await measure(fan(1000));
const huge = await measure(fan(9998));
console.log(
  `\nrequests per task, 10,000-task fan-out / 10-task fan-out: ${(huge.perTask / tenFan.perTask).toFixed(2)} (goal: at most 1.1); / the 10-task chain: ${(huge.perTask / small.perTask).toFixed(2)}`,
);
console.log(
  `  (10 tasks: ${tenFan.perTask.toFixed(2)}, 102 tasks: ${fanout.perTask.toFixed(2)}, 1,002 tasks: ${large.perTask.toFixed(2)}, 10,000 tasks: ${huge.perTask.toFixed(2)} requests per task; $${tenFan.perMillion.toFixed(2)}, $${fanout.perMillion.toFixed(2)}, $${large.perMillion.toFixed(2)}, $${huge.perMillion.toFixed(2)} per million tasks)`,
);
console.log(
  `cost: $${small.perMillion.toFixed(2)} per million tasks, ${small.perTask.toFixed(2)} requests per task`,
);
