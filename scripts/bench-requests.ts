// npm run bench:requests: the AWS requests that orchestrating one task costs, by service and
// operation, counted on the local emulator through the real adapters. They are the product's
// cost: Step Functions Standard charges per state transition, Airless per request.
//
// 1. One task's lifecycle, step by step: create, queue, claim, complete, and the readiness
//    update of its one downstream task.
// 2. A 200-task fan-in run, for the per-task figure once batching (run creation, SQS sends)
//    is amortized.
import { DeleteMessageBatchCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { takeRequestCounts } from '../adapters/aws/clients.ts';
import { DynamoStateStore } from '../adapters/aws/dynamodb.ts';
import { S3BlobStore } from '../adapters/aws/s3.ts';
import { SqsTaskDispatcher } from '../adapters/aws/sqs.ts';
import type { TaskInstanceRecord, TaskKey } from '../core/ports.ts';
import { claimTask, finishTask, manualRunId, queueTask } from '../core/state/index.ts';
import {
  createBuckets,
  createFifoQueue,
  createTable,
  localClients,
  unique,
} from '../localstack/resources.ts';

const clients = localClients();
/** Runs one step and returns the AWS requests it made (clients.ts counts every attempt). */
async function measure(step: string, fn: () => Promise<unknown>) {
  takeRequestCounts();
  await fn();
  const ops = Object.entries(takeRequestCounts()).sort();
  return { step, ops, total: ops.reduce((n, [, c]) => n + c, 0) };
}

const store = new DynamoStateStore(clients.dynamodb, await createTable());
const queue = await createFifoQueue();
const dispatcher = new SqsTaskDispatcher(clients.sqs, queue.url);
const blobs = new S3BlobStore(clients.s3, await createBuckets());
const dagId = unique('bench');
const at = new Date();

/** What the SQS event source mapping does for a worker: receive, then delete on success. */
async function consume(max: number) {
  let got = 0;
  for (let i = 0; i < 40 && got < max; i++) {
    const res = await clients.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queue.url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
      }),
    );
    const messages = res.Messages ?? [];
    got += messages.length;
    if (messages.length) {
      await clients.sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queue.url,
          Entries: messages.map((m, j) => ({
            Id: String(j),
            ReceiptHandle: m.ReceiptHandle ?? '',
          })),
        }),
      );
    }
  }
}

/** A run whose tasks t1..tN all feed one downstream task `join`. */
async function lifecycle(n: number) {
  const runId = manualRunId(unique('r'));
  const tasks = [
    ...Array.from({ length: n }, (_, i) => ({ taskId: `t${i + 1}`, upstreamCount: 0 })),
    { taskId: 'join', upstreamCount: n },
  ];
  const key = (taskId: string): TaskKey => ({ dagId, runId, taskId });
  const ids = tasks.slice(0, n).map((t) => t.taskId);
  const running = new Map<string, TaskInstanceRecord>();
  const steps = [
    await measure('create the run', async () => {
      const input = {
        dagId,
        runId,
        dagVersion: 1,
        kind: 'manual' as const,
        logicalDate: at,
        conf: {},
        tasks,
        at,
      };
      const { run } = await store.createRun(input);
      // A run too large for one transaction gets its task instances written after (off the
      // request path in the deployed stack): the same requests, counted here.
      if (!run.tasksWritten) {
        await store.writeRunTasks(input, { token: 'bench', seconds: 360, now: at });
      }
    }),
    await measure('queue (state + dispatch)', async () => {
      const queued = await Promise.all(
        ids.map((id) =>
          store.transitionTask(
            key(id),
            queueTask({ status: 'pending', attempt: 0, leaseToken: null }, at),
          ),
        ),
      );
      await dispatcher.dispatch(
        queued.map((t) => ({ ...key(t.taskId), attempt: t.attempt, dagVersion: 1 })),
      );
    }),
    await measure('deliver (SQS event source polling)', () => consume(n)),
    await measure('claim', async () => {
      for (const id of ids) {
        // The message carries the attempt: the expected state needs no read.
        const ti = { status: 'queued' as const, attempt: 1, leaseToken: null };
        running.set(id, await store.transitionTask(key(id), claimTask(ti, `lease-${id}`, 900, at)));
      }
    }),
    await measure('complete (log + state + run progress)', async () => {
      for (const id of ids) {
        await blobs.putLog({ ...key(id), attempt: 1 }, `task ${id} ran\n`);
        await store.transitionTask(
          key(id),
          finishTask(running.get(id) as TaskInstanceRecord, { ok: true }, at),
        );
        await store.recordTaskFinished(key(id), true, tasks.length, 0);
      }
    }),
    await measure('readiness of the downstream task', async () => {
      for (const id of ids) await store.recordUpstreamOutcome(key('join'), id, 'success', 0);
    }),
  ];
  return steps;
}

function print(title: string, steps: Awaited<ReturnType<typeof lifecycle>>, perTask: number) {
  console.log(`\n${title}`);
  const all = new Map<string, number>();
  for (const s of steps) {
    console.log(
      `  ${s.step.padEnd(40)} ${String(s.total).padStart(5)}  ${s.ops.map(([o, c]) => `${o} ×${c}`).join(', ')}`,
    );
    for (const [o, c] of s.ops) all.set(o, (all.get(o) ?? 0) + c);
  }
  const total = [...all.values()].reduce((a, b) => a + b, 0);
  console.log('  by service and operation, per task:');
  for (const [o, c] of [...all.entries()].sort()) {
    console.log(`    ${o.padEnd(36)} ${(c / perTask).toFixed(2).padStart(6)}`);
  }
  console.log(`  requests per task: ${(total / perTask).toFixed(2)}`);
}

print('One task (t1 → join): its lifecycle', await lifecycle(1), 1);
print('200 tasks fanning in to one (batching amortized)', await lifecycle(200), 200);
