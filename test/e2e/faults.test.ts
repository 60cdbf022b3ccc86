import { randomUUID } from 'node:crypto';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { marshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { deduplicationId, encodeTaskMessage, messageGroupId } from '../../adapters/aws/sqs.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import type { FaultRule } from '../../core/faults.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { waitFor } from '../poll.ts';
import { api, functionLogLines, outputs, type RunView, uniqueDagId } from './stack.ts';

/**
 * Faults injected on purpose into the deployed stack (the test deploy's emulator-only switch,
 * lib/airless-function.ts, and a 30-second lease): crashes, stalls and repeats at the named
 * points of core/faults.ts. For each, the run must end as it would have without the fault, each
 * attempt with one outcome and one log, and no task may succeed twice.
 */

const lambda = new LambdaClient(clientConfig());
const sqs = new SQSClient(clientConfig());
const dynamo = new DynamoDBClient(clientConfig());
const functionNames = new Map<string, string>();

/** Invokes one of the stack's functions (by the construct id in its name) and returns its answer. */
async function invoke(fn: string, payload?: unknown): Promise<unknown> {
  let name = functionNames.get(fn);
  if (!name) {
    const fns = (await lambda.send(new ListFunctionsCommand({}))).Functions ?? [];
    name = fns.find((f) => f.FunctionName?.includes(fn))?.FunctionName;
    if (!name) throw new Error(`no function named like ${fn}`);
    functionNames.set(fn, name);
  }
  const res = await lambda.send(
    new InvokeCommand({
      FunctionName: name,
      ...(payload === undefined
        ? {}
        : { Payload: new TextEncoder().encode(JSON.stringify(payload)) }),
    }),
  );
  expect(res.FunctionError, `${fn}: ${new TextDecoder().decode(res.Payload)}`).toBeUndefined();
  return res.Payload ? JSON.parse(new TextDecoder().decode(res.Payload) || 'null') : undefined;
}

/** One pass of the stack's reaper, now (its rule fires every minute; tests do not wait for it). */
async function reap(): Promise<void> {
  await invoke('ReaperFunction');
}

const noop = (taskId: string, extra: object = {}) => ({ taskId, operator: 'noop', ...extra });

async function faultyRun(
  tasks: object[],
  faults: FaultRule[],
  trigger: object = {},
): Promise<{ dagId: string; runId: string }> {
  const dagId = uniqueDagId('e2e_fault');
  const created = await api.request('POST', '/v1/dags', {
    dagId,
    params: { airlessFaults: faults },
    tasks,
  });
  expect(created.status).toBe(201);
  const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, trigger);
  return { dagId, runId: r.body.runId };
}

const view = async (dagId: string, runId: string) =>
  (await api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`)).body;

/**
 * Waits for the run to end, running reaper passes meanwhile (two at once, to race them), within
 * the lease plus a reaper period and some slack for the emulator.
 */
async function endOf(dagId: string, runId: string, reaping = false): Promise<RunView> {
  return waitFor(
    async () => {
      if (reaping) await Promise.all([reap(), reap()]);
      return view(dagId, runId);
    },
    (v) => ['success', 'failed', 'cancelled'].includes(v.status),
    { timeoutMs: 150_000, intervalMs: 2000, what: `faulted run ${runId} to end` },
  );
}

/** Every attempt of every task has exactly one log, ending in exactly one outcome line. */
async function expectOneOutcomePerAttempt(run: RunView) {
  for (const t of run.tasks) {
    for (let attempt = 1; attempt <= t.attempt; attempt++) {
      const log = await api.request(
        'GET',
        `/v1/dags/${run.dagId}/runs/${encodeURIComponent(run.runId)}/tasks/${t.taskId}/logs?attempt=${attempt}`,
      );
      expect(log.status, `log of ${t.taskId} attempt ${attempt}`).toBe(200);
      const outcomes = log.text.split('\n').filter((l) => / (success|failed)$/.test(l));
      expect(outcomes.length, `outcomes in ${t.taskId} attempt ${attempt}`).toBeLessThanOrEqual(1);
    }
  }
}

describe('crashes', () => {
  it('after the claim: the lease expires, the reaper retries, the run succeeds once', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 }), noop('b', { dependsOn: ['a'] })],
      [{ point: 'worker.after-claim', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after the operator ran, before its outcome: retried after the lease, no double success', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 })],
      [{ point: 'worker.before-outcome', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([['a', 'success', 2]]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after the outcome was written: readiness goes on from the table, nothing reruns', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'worker.after-outcome', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('between queuing downstream tasks and sending them: the retried event sends them', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] }), noop('c', { dependsOn: ['a'] })],
      [{ point: 'advance.before-dispatch', taskId: 'a', action: 'crash' }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1, 1]);
    await expectOneOutcomePerAttempt(run);
  });

  it('after a failure was written, before its retry timer was sent: the reaper queues the retry', async () => {
    const { dagId, runId } = await faultyRun(
      [
        noop('a', { retries: 1, retryDelaySeconds: 0, config: { failAttempts: 1 } }),
        noop('b', { dependsOn: ['a'] }),
      ],
      // The timer is lost with the process; the message comes back only after the visibility
      // timeout (16 minutes), and then finds the attempt already failed.
      [{ point: 'worker.after-outcome', taskId: 'a', attempt: 1, action: 'crash' }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(run);
  });

  it('before the run end is written: the retried event ends the run', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [{ point: 'advance.before-run-end', action: 'crash', times: 2 }],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    await expectOneOutcomePerAttempt(run);
  });

  it('between creating a run and starting it: the repeated trigger starts it, once', async () => {
    const dagId = uniqueDagId('e2e_fault');
    await api.request('POST', '/v1/dags', {
      dagId,
      params: { airlessFaults: [{ point: 'trigger.after-create', action: 'crash' }] },
      tasks: [noop('a')],
    });
    const first = await api.request('POST', `/v1/dags/${dagId}/runs`, { idempotencyKey: 'k1' });
    expect(first.status).toBe(500);
    const again = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {
      idempotencyKey: 'k1',
    });
    expect(again.status).toBe(200);
    const run = await endOf(dagId, again.body.runId);
    expect(run.status).toBe('success');
    const runs = await api.request<{ runs: unknown[] }>('GET', `/v1/dags/${dagId}/runs`);
    expect(runs.body.runs).toHaveLength(1);
  });
});

describe('repeats', () => {
  it('a task message delivered again after its attempt ended changes nothing', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a'), noop('b', { dependsOn: ['a'] })],
      [
        { point: 'worker.after-outcome', taskId: 'a', action: 'repeat' },
        { point: 'advance.before-dispatch', taskId: 'a', action: 'repeat' },
      ],
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => t.attempt)).toEqual([1, 1]);
    await expectOneOutcomePerAttempt(run);
  });
});

describe('a DAG deleted while its run is active', () => {
  it('lets the run end (its version is kept), and starts nothing new', async () => {
    const dagId = uniqueDagId('e2e_fault');
    await api.request('POST', '/v1/dags', {
      dagId,
      maxActiveRuns: 1,
      tasks: [noop('a', { config: { sleepSeconds: 2 } }), noop('b', { dependsOn: ['a'] })],
    });
    const first = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
    const second = await api.request<{ runId: string; status: string }>(
      'POST',
      `/v1/dags/${dagId}/runs`,
      {},
    );
    expect(second.body.status).toBe('queued');
    expect((await api.request('DELETE', `/v1/dags/${dagId}`)).status).toBe(204);
    const run = await endOf(dagId, first.body.runId);
    expect(run.status).toBe('success');
    await expectOneOutcomePerAttempt(run);
    // The run waiting behind it never starts; the reaper ends it.
    const waiting = await endOf(dagId, second.body.runId, true);
    expect(waiting.status).toBe('cancelled');
    expect(waiting.tasks.every((t) => t.attempt === 0)).toBe(true);
  });
});

/** The worker's or retrier's log lines about one run since `since`. */
async function linesOfRun(fn: string, runId: string, since: number) {
  return (await functionLogLines(fn, since)).filter((l) => l.runId === runId);
}

async function waitForTask(dagId: string, runId: string, taskId: string, statuses: string[]) {
  return waitFor(
    () => view(dagId, runId),
    (v) => v.tasks.some((t) => t.taskId === taskId && statuses.includes(t.status)),
    { timeoutMs: 60_000, intervalMs: 200, what: `${taskId} of ${runId} to be ${statuses}` },
  );
}

/**
 * Duplicates, delivered by the test itself to the stack's real queues and functions. SQS FIFO
 * drops a second send with the same deduplication id within 5 minutes; past that window it
 * delivers it. A test cannot wait 5 minutes per case, so "outside the window" is the same body
 * sent with a new deduplication id, which is exactly what the queue delivers after the window.
 * Retry timers travel on a standard queue and schedule ticks and stream records on no queue at
 * all, so for them no window applies: "inside" is a duplicate while the attempt or run is live,
 * "outside" a late one after it ended.
 */
describe('duplicate deliveries', () => {
  const taskQueue = () => outputs.TaskQueueUrl as string;

  async function sendTask(m: TaskMessage, dedup: string) {
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: taskQueue(),
        MessageBody: encodeTaskMessage(m),
        MessageGroupId: messageGroupId(m),
        MessageDeduplicationId: dedup,
      }),
    );
  }

  it('task messages, inside and outside the deduplication window, run each attempt once', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(
      [noop('a', { config: { sleepSeconds: 2 } }), noop('b', { dependsOn: ['a'] })],
      [],
    );
    const v = await waitForTask(dagId, runId, 'a', ['running', 'success']);
    const msg = (taskId: string): TaskMessage => ({
      dagId,
      runId,
      taskId,
      attempt: 1,
      dagVersion: 1,
    });
    expect(v.tasks.find((t) => t.taskId === 'a')?.attempt).toBe(1);
    // Inside the window: the same send again (SQS drops it, or the claim refuses it).
    await sendTask(msg('a'), deduplicationId(msg('a')));
    // Outside the window, while a runs: delivered, and the claim refuses it.
    await sendTask(msg('a'), randomUUID());
    // A message for b before b was queued: nothing to claim yet.
    await sendTask(msg('b'), randomUUID());
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    // Outside the window, after the run ended.
    await sendTask(msg('a'), randomUUID());
    await sendTask(msg('b'), randomUUID());
    const refused = await waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter(
          (l) => l.message === 'attempt finished' && l.outcome === 'not_claimed',
        ),
      (lines) => lines.length >= 4,
      { timeoutMs: 60_000, intervalMs: 1000, what: `the worker to refuse the duplicates` },
    );
    // At least the two late copies of each (the inside-window copy is dropped, or refused too).
    const count = (t: string) => refused.filter((l) => l.taskId === t).length;
    expect(count('a')).toBeGreaterThanOrEqual(2);
    expect(count('b')).toBeGreaterThanOrEqual(2);
    const after = await view(dagId, runId);
    expect(after.status).toBe('success');
    expect(after.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 1],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(after);
  });

  it('retry timers, while the retry waits and after the run ended, queue one next attempt', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(
      [
        noop('a', { retries: 2, retryDelaySeconds: 4, config: { failAttempts: 1 } }),
        noop('b', { dependsOn: ['a'] }),
      ],
      [],
    );
    await waitForTask(dagId, runId, 'a', ['up_for_retry', 'queued', 'running', 'success']);
    // The timer the worker sent, as stored: the same body three more times, at once.
    const item = await new DynamoDBTable().task(dagId, runId, 'a');
    const timer = {
      v: 1,
      dagId,
      runId,
      taskId: 'a',
      failedAttempt: 1,
      dagVersion: 1,
      retryAt: item.retryAt ?? new Date().toISOString(),
    };
    const sendTimer = () =>
      sqs.send(
        new SendMessageCommand({
          QueueUrl: outputs.RetryTimerQueueUrl as string,
          MessageBody: JSON.stringify(timer),
        }),
      );
    await Promise.all([sendTimer(), sendTimer(), sendTimer()]);
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    // A late timer, after the run ended.
    await sendTimer();
    const outcomes = await waitFor(
      async () =>
        (await linesOfRun('RetrierFunction', runId, since))
          .filter((l) => l.message === 'retry timer' && l.outcome !== 'waiting')
          .map((l) => l.outcome),
      (o) => o.length >= 5,
      { timeoutMs: 60_000, intervalMs: 1000, what: 'the retrier to handle all five timers' },
    );
    // Five timers for one failed attempt: one queued the retry, the rest found nothing to do.
    expect(outcomes.sort()).toEqual(['queued', 'stale', 'stale', 'stale', 'stale']);
    const after = await view(dagId, runId);
    expect(after.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(after);
  });

  it('stream records, replayed while the run is live and after it ended, change nothing', async () => {
    const { dagId, runId } = await faultyRun(
      [
        noop('a'),
        noop('b', { dependsOn: ['a'], config: { sleepSeconds: 3 } }),
        noop('c', { dependsOn: ['a'] }),
        noop('d', { dependsOn: ['b', 'c'] }),
      ],
      [],
    );
    await waitForTask(dagId, runId, 'b', ['running']);
    const table = new DynamoDBTable();
    // a finished: its record, ten times at once, while b runs.
    const record = async (taskId: string, seq: number) => {
      const image = await table.rawTask(dagId, runId, taskId);
      return {
        eventID: randomUUID(),
        eventName: 'MODIFY',
        eventSource: 'aws:dynamodb',
        dynamodb: {
          Keys: marshall(tableKeys.task(dagId, runId, taskId)),
          NewImage: image,
          OldImage: { ...image, status: { S: 'running' } },
          SequenceNumber: String(seq),
          StreamViewType: 'NEW_AND_OLD_IMAGES',
        },
      };
    };
    const a = await record('a', 1);
    await Promise.all(
      Array.from({ length: 10 }, () => invoke('AdvanceFunction', { Records: [a] })),
    );
    const run = await endOf(dagId, runId);
    expect(run.status).toBe('success');
    const ended = run.endTime;
    // Every task's record again, after the run ended.
    const late = await Promise.all(['a', 'b', 'c', 'd'].map((t, i) => record(t, 10 + i)));
    await invoke('AdvanceFunction', { Records: late });
    const after = await view(dagId, runId);
    expect(after.status).toBe('success');
    expect(after.endTime).toBe(ended);
    expect(after.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 1],
      ['b', 'success', 1],
      ['c', 'success', 1],
      ['d', 'success', 1],
    ]);
    await expectOneOutcomePerAttempt(after);
  });
});

describe('stalls', () => {
  it('a worker stalled past its lease before its outcome: reaped, retried, its late outcome refused', async () => {
    const since = Date.now();
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 }), noop('b', { dependsOn: ['a'] })],
      [
        {
          point: 'worker.before-outcome',
          taskId: 'a',
          attempt: 1,
          action: 'stall',
          stallSeconds: 45,
        },
      ],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([
      ['a', 'success', 2],
      ['b', 'success', 1],
    ]);
    // The stalled worker wakes after the reaper failed its attempt: its outcome is refused.
    const late = await waitFor(
      async () =>
        (await linesOfRun('WorkerFunction', runId, since)).filter(
          (l) => l.message === 'attempt finished' && l.taskId === 'a' && l.attempt === 1,
        ),
      (lines) => lines.length > 0,
      { timeoutMs: 90_000, intervalMs: 2000, what: 'the stalled worker to finish' },
    );
    expect(late.map((l) => l.outcome)).toEqual(['lease_lost']);
    // The reaper's word is the last in the attempt's log.
    const log = await api.request(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}/tasks/a/logs?attempt=1`,
    );
    expect(log.text.trim().split('\n').at(-1)).toMatch(/failed by the reaper, retry at/);
    const again = await view(dagId, runId);
    expect(again.tasks.map((t) => t.attempt)).toEqual([2, 1]);
  });

  it('a worker stalled after its claim keeps its lease by heartbeat: nothing is reaped', async () => {
    const { dagId, runId } = await faultyRun(
      [noop('a', { retries: 1, retryDelaySeconds: 0 })],
      [{ point: 'worker.after-claim', taskId: 'a', action: 'stall', stallSeconds: 40 }],
    );
    const run = await endOf(dagId, runId, true);
    expect(run.status).toBe('success');
    expect(run.tasks.map((t) => [t.taskId, t.status, t.attempt])).toEqual([['a', 'success', 1]]);
    await expectOneOutcomePerAttempt(run);
  });
});

describe('a poison message', () => {
  it('goes to the dead-letter queue at its first receive and holds up no other run', async () => {
    const marker = `poison-${randomUUID()}`;
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: outputs.TaskQueueUrl as string,
        MessageBody: JSON.stringify({ v: 1, marker, dagId: 42 }),
        MessageGroupId: marker,
        MessageDeduplicationId: marker,
      }),
    );
    const { dagId, runId } = await faultyRun([noop('a'), noop('b', { dependsOn: ['a'] })], []);
    expect((await endOf(dagId, runId)).status).toBe('success');
    const dlq = outputs.TaskDeadLetterQueueUrl as string;
    // Well within the task queue's visibility timeout (16 minutes): a redrive by receive count
    // would take five of those.
    const found = await waitFor(
      async () => {
        const r = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: dlq,
            MaxNumberOfMessages: 10,
            MessageAttributeNames: ['All'],
            VisibilityTimeout: 5,
          }),
        );
        return (r.Messages ?? []).find((m) => m.Body?.includes(marker));
      },
      (m) => m !== undefined,
      { timeoutMs: 60_000, intervalMs: 1000, what: 'the poison message in the dead-letter queue' },
    );
    expect(found?.MessageAttributes?.['airless-reason']?.StringValue).toMatch(/dagId/);
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: dlq, ReceiptHandle: found?.ReceiptHandle }),
    );
  });
});

/** Reads task instance items straight from the stack's table. */
class DynamoDBTable {
  readonly #name = outputs.TableName as string;

  async rawTask(dagId: string, runId: string, taskId: string) {
    const res = await dynamo.send(
      new GetItemCommand({
        TableName: this.#name,
        Key: marshall(tableKeys.task(dagId, runId, taskId)),
        ConsistentRead: true,
      }),
    );
    if (!res.Item) throw new Error(`no item for ${taskId} of ${runId}`);
    return res.Item;
  }

  async task(dagId: string, runId: string, taskId: string) {
    const item = await this.rawTask(dagId, runId, taskId);
    return { retryAt: item.retryAt?.S };
  }
}
