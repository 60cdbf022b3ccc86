import { randomUUID } from 'node:crypto';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { S3BlobStore } from '../../adapters/aws/s3.ts';
import { EventBridgeScheduleRegistry } from '../../adapters/aws/scheduler.ts';
import { decodeTaskMessage, SqsTaskDispatcher } from '../../adapters/aws/sqs.ts';
import { SqsRetryTimers } from '../../adapters/aws/timers.ts';
import { registerDag } from '../../app/dags.ts';
import type { Deps } from '../../app/deps.ts';
import { reap } from '../../app/reaper.ts';
import { cancelRun } from '../../app/runs.ts';
import { executeTask } from '../../app/tasks.ts';
import type { TaskInstanceRecord, TaskMessage } from '../../core/ports.ts';
import { queueTask } from '../../core/state/index.ts';
import {
  createBuckets,
  createFifoQueue,
  createScheduleGroup,
  createStandardQueue,
  createTable,
  localClients,
  unique,
} from '../../localstack/resources.ts';
import { builtInOperators } from '../../operators/index.ts';
import { waitFor } from '../poll.ts';

/** The worker's core, executeTask, on real adapters against the emulator. */
let deps: Deps;
let queueUrl: string;

beforeAll(async () => {
  const aws = localClients();
  queueUrl = (await createFifoQueue()).url;
  deps = {
    store: new DynamoStateStore(aws.dynamodb, await createTable()),
    dispatcher: new SqsTaskDispatcher(aws.sqs, queueUrl),
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
    random: () => 0.5,
    newId: randomUUID,
  };
});

/** Registers a one-task DAG, creates a run and queues the task: a message ready for a worker. */
async function queued(task: object): Promise<TaskMessage> {
  const dagId = unique('dag');
  const r = await registerDag(
    deps,
    JSON.stringify({ dagId, tasks: [{ taskId: 'work', ...task }] }),
  );
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const runId = `manual__${unique('r')}`;
  const now = new Date();
  await deps.store.createRun({
    dagId,
    runId,
    dagVersion: r.version,
    kind: 'manual',
    logicalDate: now,
    conf: {},
    tasks: [{ taskId: 'work', upstreamCount: 0 }],
    at: now,
  });
  await deps.store.transitionRun(dagId, runId, ['queued'], 'running', now);
  const key = { dagId, runId, taskId: 'work' };
  const ti = await deps.store.transitionTask(
    key,
    queueTask({ status: 'pending', attempt: 0, leaseToken: null }, now),
  );
  return { ...key, attempt: ti.attempt, dagVersion: r.version };
}

const opts = { leaseSeconds: 2, heartbeatSeconds: 0.5, remainingMs: () => 600_000 };

/** The task instance of `msg`, once `until` holds for it (bounded). */
async function taskWhen(
  msg: TaskMessage,
  until: (ti: TaskInstanceRecord) => boolean,
  what: string,
): Promise<TaskInstanceRecord> {
  const ti = await waitFor(
    () => deps.store.getTaskInstance(msg),
    (t) => t !== undefined && until(t),
    {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: `${msg.dagId}/${msg.runId}/${msg.taskId}: ${what}`,
    },
  );
  if (!ti) throw new Error('unreachable: waitFor returned no task instance');
  return ti;
}

describe('executeTask', () => {
  it('heartbeats: the lease moves on while a long operator runs', async () => {
    const msg = await queued({ operator: 'noop', config: { sleepSeconds: 3 } });
    const running = executeTask(deps, msg, opts);
    const claimed = await taskWhen(
      msg,
      (t) => t.status === 'running' && typeof t.leaseExpiresAt === 'string',
      'claimed',
    );
    const first = new Date(claimed.leaseExpiresAt ?? '').getTime();
    // A heartbeat extends the lease while the operator is still running.
    await taskWhen(
      msg,
      (t) => t.status === 'running' && new Date(t.leaseExpiresAt ?? '').getTime() > first,
      'lease extended by a heartbeat',
    );
    expect(await running).toBe('success');
    expect(await deps.store.getTaskInstance(msg)).toMatchObject({
      status: 'success',
      attempt: 1,
      leaseToken: null,
    });
  });

  it('a duplicate message does nothing', async () => {
    const msg = await queued({ operator: 'noop' });
    expect(await executeTask(deps, msg, opts)).toBe('success');
    expect(await executeTask(deps, msg, opts)).toBe('not_claimed');
  });

  it('a cancel during the attempt fences the worker: the operator stops and nothing is recorded', async () => {
    const msg = await queued({ operator: 'noop', config: { sleepSeconds: 30 } });
    const running = executeTask(deps, msg, opts);
    await taskWhen(msg, (t) => t.status === 'running', 'claimed');
    await cancelRun(deps, msg.dagId, msg.runId);
    expect(await running).toBe('lease_lost');
    expect(await deps.store.getTaskInstance(msg)).toMatchObject({ status: 'cancelled' });
    // Stopped at the next heartbeat: the operator was aborted, it did not sleep its 30 seconds
    // out and finish.
    const log = await deps.blobs.getLog({ ...msg, attempt: 1 });
    expect(log).toContain('error: the lease on this attempt was lost');
    expect(log).not.toMatch(/ done$/m);
    expect(log?.trimEnd().endsWith(' failed')).toBe(true);
  });

  it('enforces timeoutSeconds', async () => {
    const msg = await queued({ operator: 'noop', config: { sleepSeconds: 30 }, timeoutSeconds: 1 });
    expect(await executeTask(deps, msg, opts)).toBe('failed');
    expect(await deps.store.getTaskInstance(msg)).toMatchObject({
      status: 'failed',
      error: 'timed out after 1s',
    });
  });

  it('a failure with retries left waits for its retry, then the timer queues attempt 2', async () => {
    const msg = await queued({
      operator: 'noop',
      config: { failAttempts: 1 },
      retries: 1,
      retryDelaySeconds: 1,
    });
    const before = deps.clock().getTime();
    expect(await executeTask(deps, msg, opts)).toBe('up_for_retry');
    const after = deps.clock().getTime();
    const ti = await deps.store.getTaskInstance(msg);
    expect(ti).toMatchObject({
      status: 'up_for_retry',
      attempt: 1,
      error: expect.stringContaining('on purpose'),
    });
    // retryDelaySeconds (fixed backoff) after the failure, which happened during the call.
    const retryAt = new Date(ti?.retryAt ?? '').getTime();
    expect(retryAt).toBeGreaterThanOrEqual(before + 1000);
    expect(retryAt).toBeLessThanOrEqual(after + 1000);
  });
});

describe('the reaper', () => {
  // The reaper's pass a second from now: what is queued, or due, now is overdue then, without
  // sleeping for the clock to move on.
  const reapNow = () =>
    reap(
      { ...deps, clock: () => new Date(Date.now() + 1000) },
      { queuedGraceSeconds: 0, retryGraceSeconds: 0, limit: 500 },
    );

  it('re-sends a queued attempt whose message was lost, and the attempt then runs once', async () => {
    // Queued in the state store, but no message was ever sent.
    const msg = await queued({ operator: 'noop' });
    const report = await reapNow();
    expect(report.redispatched).toBeGreaterThanOrEqual(1);
    const got = await receiveTaskMessages(msg.runId);
    expect(got).toEqual([msg]);
    expect(await executeTask(deps, msg, opts)).toBe('success');
    // Another pass finds nothing left to do for it.
    await reapNow();
    expect(await receiveTaskMessages(msg.runId)).toEqual([]);
  });

  it('queues a retry whose timer was lost', async () => {
    const msg = await queued({
      operator: 'noop',
      config: { failAttempts: 1 },
      retries: 1,
      retryDelaySeconds: 0,
    });
    expect(await executeTask(deps, msg, opts)).toBe('up_for_retry');
    const report = await reapNow();
    expect(report.retriesQueued).toBeGreaterThanOrEqual(1);
    expect(await deps.store.getTaskInstance(msg)).toMatchObject({ status: 'queued', attempt: 2 });
    expect(await receiveTaskMessages(msg.runId)).toEqual([{ ...msg, attempt: 2 }]);
  });
});

/** Task messages for one run on this test's queue (bounded receive). */
async function receiveTaskMessages(runId: string): Promise<TaskMessage[]> {
  const out: TaskMessage[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await localClients().sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
      }),
    );
    for (const m of res.Messages ?? []) {
      const t = decodeTaskMessage(m.Body ?? '');
      if (t.runId === runId) out.push(t);
      await localClients().sqs.send(
        new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }),
      );
    }
    if ((res.Messages ?? []).length === 0) break;
  }
  return out;
}
