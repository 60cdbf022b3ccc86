import {
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import {
  decodeTaskMessage,
  deduplicationId,
  encodeTaskMessage,
  messageGroupId,
  SqsTaskDispatcher,
} from '../../adapters/aws/sqs.ts';
import { ConflictError, ValidationError } from '../../core/errors.ts';
import type { TaskMessage } from '../../core/ports.ts';
import { claimTask, queueTask } from '../../core/state/index.ts';
import { createFifoQueue, createTable, localClients, unique } from '../../localstack/resources.ts';
import { waitFor } from '../poll.ts';

let sqs: SQSClient;
let queue: { url: string; arn: string };

beforeEach(async () => {
  sqs = localClients().sqs;
  queue = await createFifoQueue({ visibilityTimeout: 1 });
});

const msg = (taskId: string, attempt = 1): TaskMessage => ({
  dagId: 'daily_sales',
  runId: 'scheduled__2026-03-09T06:30:00.000Z',
  taskId,
  attempt,
  dagVersion: 3,
});

interface Received {
  body: TaskMessage;
  group: string | undefined;
  dedup: string | undefined;
  receipt: string;
  count: number;
}

/**
 * Receives (long polling, so no pause between reads) until `want` messages came; fails after
 * `seconds`, naming what it had.
 */
async function receiveAll(want: number, seconds = 10, visibility?: number): Promise<Received[]> {
  const out: Received[] = [];
  return waitFor(
    async () => {
      const res = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queue.url,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 1,
          MessageSystemAttributeNames: ['All'],
          ...(visibility !== undefined ? { VisibilityTimeout: visibility } : {}),
        }),
      );
      for (const m of res.Messages ?? []) {
        out.push({
          body: decodeTaskMessage(m.Body ?? ''),
          group: m.Attributes?.MessageGroupId,
          dedup: m.Attributes?.MessageDeduplicationId,
          receipt: m.ReceiptHandle ?? '',
          count: Number(m.Attributes?.ApproximateReceiveCount ?? 0),
        });
      }
      return out;
    },
    (got) => got.length >= want,
    {
      timeoutMs: seconds * 1000,
      intervalMs: 0,
      maxAttempts: 50,
      what: `${want} message(s) on ${queue.url}`,
    },
  );
}

/** Messages on the queue, visible or not: SQS counts them when they are sent. */
async function messagesOnQueue(): Promise<number> {
  const res = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queue.url,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return (
    Number(res.Attributes?.ApproximateNumberOfMessages ?? Number.NaN) +
    Number(res.Attributes?.ApproximateNumberOfMessagesNotVisible ?? Number.NaN)
  );
}

describe('SQS FIFO task dispatch', () => {
  it('sends one small message per task attempt, in batches, with our group and dedup ids', async () => {
    const messages = Array.from({ length: 23 }, (_, i) => msg(`t${i}`));
    await new SqsTaskDispatcher(sqs, queue.url).dispatch(messages);
    const got = await receiveAll(23, 15, 30);
    expect(got.map((m) => m.body.taskId).sort()).toEqual(messages.map((m) => m.taskId).sort());
    for (const m of got) {
      expect(m.group).toBe(messageGroupId(m.body));
      expect(m.dedup).toBe(deduplicationId(m.body));
    }
    // A reference to the state, not a copy: well under 1 KB whatever the DAG.
    expect(Math.max(...messages.map((m) => encodeTaskMessage(m).length))).toBeLessThan(200);
  });

  it('ids: one group per task instance, one dedup id per attempt, within the 128-char limits', () => {
    const long = { ...msg('t'.repeat(128)), dagId: 'd'.repeat(128) };
    expect(messageGroupId(long)).toHaveLength(64);
    expect(messageGroupId(msg('a'))).not.toBe(messageGroupId(msg('b')));
    // A group per attempt: a retry never waits behind a dead attempt's in-flight message.
    expect(messageGroupId(msg('a', 1))).not.toBe(messageGroupId(msg('a', 2)));
    expect(deduplicationId(msg('a', 1))).not.toBe(deduplicationId(msg('a', 2)));
  });

  it('sending the same attempt twice delivers it once', async () => {
    const d = new SqsTaskDispatcher(sqs, queue.url);
    await d.dispatch([msg('a')]);
    await d.dispatch([msg('a'), msg('b')]);
    // Deduplication happens when a message is sent: the queue holds two messages, not three.
    expect(await messagesOnQueue()).toBe(2);
    const got = await receiveAll(2, 10, 30);
    expect(got.map((m) => m.body.taskId).sort()).toEqual(['a', 'b']);
  });

  it('refuses a malformed message body, naming the field', () => {
    expect(() => decodeTaskMessage('{"v":1,"dagId":"d"}')).toThrow(ValidationError);
    expect(() => decodeTaskMessage('not json')).toThrow(/not JSON/);
    try {
      decodeTaskMessage(JSON.stringify({ ...msg('a'), v: 1, attempt: 0 }));
    } catch (e) {
      expect((e as ValidationError).issues[0]?.path).toBe('$.attempt');
    }
  });
});

describe('at-least-once delivery against the state store', () => {
  it('the same SQS message delivered twice makes one state transition', async () => {
    const store = new DynamoStateStore(localClients().dynamodb, await createTable());
    const dagId = unique('dag');
    const at = new Date('2026-03-09T06:30:00.000Z');
    const { run } = await store.createRun({
      dagId,
      runId: 'manual__x',
      dagVersion: 1,
      kind: 'manual',
      logicalDate: at,
      conf: {},
      tasks: [{ taskId: 'a', upstreamCount: 0 }],
      at,
    });
    const key = { dagId, runId: run.runId, taskId: 'a' };
    const pending = await store.getTaskInstance(key);
    if (!pending) throw new Error('missing task instance');
    const queued = await store.transitionTask(key, queueTask(pending, at));
    await new SqsTaskDispatcher(sqs, queue.url).dispatch([
      { ...key, attempt: queued.attempt, dagVersion: 1 },
    ]);

    // Receive it, do not delete it, and let the 1-second visibility timeout hand it out again,
    // as happens when a worker dies or runs long.
    const first = await receiveAll(1, 5);
    const second = await receiveAll(1, 10);
    expect(second[0]?.body).toEqual(first[0]?.body);
    expect(second[0]?.count).toBe(2);

    // Two workers, one per delivery, each claiming as the worker does (app/tasks.ts): from what
    // the message says, not from a read of the task, so that neither claim depends on whether
    // the other has already committed. Both claims are built before either is sent.
    const claims = [first[0], second[0]].map((m, i) => {
      if (!m) throw new Error('no message');
      const expected = { status: 'queued' as const, attempt: m.body.attempt, leaseToken: null };
      return { target: m.body, claim: claimTask(expected, `worker-${i}`, 60, at) };
    });
    const outcomes = await Promise.allSettled(
      claims.map(({ target, claim }) => store.transitionTask(target, claim)),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect(
      outcomes
        .filter((o) => o.status === 'rejected')
        .map((o) => (o as PromiseRejectedResult).reason),
    ).toEqual([expect.any(ConflictError)]);
    expect(await store.getTaskInstance(key)).toMatchObject({ status: 'running', attempt: 1 });
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: queue.url, ReceiptHandle: second[0]?.receipt }),
    );
  });
});
