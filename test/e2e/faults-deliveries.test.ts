import { randomUUID } from 'node:crypto';
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import { marshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { deduplicationId, encodeTaskMessage, messageGroupId } from '../../adapters/aws/sqs.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import { encodeRetryTimer } from '../../adapters/aws/timers.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { waitFor } from '../poll.ts';
import {
  DynamoDBTable,
  endOf,
  expectOneOutcomePerAttempt,
  faultyRun,
  linesOfRun,
  noop,
  sqs,
  view,
  waitForTask,
} from './fault-support.ts';
import { api, invoke, outputs, uniqueDagId } from './stack.ts';

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
    const timer = encodeRetryTimer({
      dagId,
      runId,
      taskId: 'a',
      failedAttempt: 1,
      dagVersion: 1,
      retryAt: item.retryAt ?? new Date().toISOString(),
    });
    const sendTimer = () =>
      sqs.send(
        new SendMessageCommand({
          QueueUrl: outputs.RetryTimerQueueUrl as string,
          MessageBody: timer,
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
