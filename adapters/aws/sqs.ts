import { createHash } from 'node:crypto';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { z } from 'zod';
import { jsonPath } from '../../core/dag/validate.ts';
import { ThrottledError, ValidationError } from '../../core/errors.ts';
import type { TaskDispatcher, TaskMessage } from '../../core/ports.ts';
import { aws } from './errors.ts';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * One FIFO message group per task attempt. FIFO queues hold back the rest of a group while one
 * of its messages is in flight (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html),
 * so a group per attempt means nothing waits on anything else: in particular the next attempt
 * of a task whose worker died is not held back until the dead attempt's message becomes
 * visible again (the visibility timeout, up to the worker's timeout). Order between attempts
 * needs no queue: the state store decides which attempt may run. Ids are hashed because a
 * group id or deduplication id may be at most 128 characters, and a DAG id and task id may be
 * 128 each.
 */
export const messageGroupId = (m: TaskMessage) =>
  sha256(`${m.dagId}\n${m.runId}\n${m.taskId}\n${m.attempt}`);

/**
 * The run, task and attempt: SQS drops a second send of the same attempt within its 5-minute
 * deduplication window (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/using-messagededuplicationid-property.html),
 * and past it the worker's conditional claim makes a late duplicate a no-op.
 */
export const deduplicationId = (m: TaskMessage) =>
  sha256(`${m.dagId}\n${m.runId}\n${m.taskId}\n${m.attempt}${m.wake ? `\n${m.wake}` : ''}`);

const messageSchema = z.strictObject({
  v: z.literal(1),
  dagId: z.string().min(1),
  runId: z.string().min(1),
  taskId: z.string().min(1),
  attempt: z.int().min(1),
  dagVersion: z.int().min(1),
  executor: z.enum(['lambda', 'fargate']).optional(),
  waiter: z.string().min(1).max(1024).optional(),
  wake: z.string().min(1).max(128).optional(),
});

/** The message body: a reference to the state, never a copy of it. */
export function encodeTaskMessage(m: TaskMessage): string {
  const { dagId, runId, taskId, attempt, dagVersion } = m;
  const executor = m.executor === 'fargate' ? { executor: m.executor } : {};
  // A wake (app/pools.ts) says where the attempt waits, with an id of its own.
  const wake = m.waiter && m.wake ? { waiter: m.waiter, wake: m.wake } : {};
  return JSON.stringify({ v: 1, dagId, runId, taskId, attempt, dagVersion, ...executor, ...wake });
}

/** Parses a queue message body with its schema; a bad body is a ValidationError naming the field. */
export function decodeMessage<T>(body: string, schema: z.ZodType<T>, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new ValidationError([{ path: '$', message: `${what} is not JSON` }]);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ValidationError(
      r.error.issues.map((i) => ({ path: jsonPath(i.path), message: i.message })),
    );
  }
  return r.data;
}

export function decodeTaskMessage(body: string): TaskMessage {
  const {
    v: _v,
    executor,
    waiter,
    wake,
    ...m
  } = decodeMessage(body, messageSchema, 'task message');
  return {
    ...m,
    ...(executor === 'fargate' ? { executor } : {}),
    ...(waiter && wake ? { waiter, wake } : {}),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Sends task messages to the queue of their executor: Lambda workers' queue, or the Fargate
 * workers' (DESIGN.md section 9).
 */
export class SqsTaskDispatcher implements TaskDispatcher {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
    /** The Fargate workers' queue; without one, no `fargate` task is accepted at registration. */
    private readonly fargateQueueUrl?: string,
  ) {}

  async dispatch(messages: readonly TaskMessage[]): Promise<void> {
    const byQueue = new Map<string, TaskMessage[]>();
    const unroutable: TaskMessage[] = [];
    for (const m of messages) {
      const url = m.executor === 'fargate' ? this.fargateQueueUrl : this.queueUrl;
      if (url) byQueue.set(url, [...(byQueue.get(url) ?? []), m]);
      else unroutable.push(m);
    }
    const batches: [string, TaskMessage[]][] = [];
    // SendMessageBatch takes at most 10 messages.
    for (const [url, list] of byQueue) {
      for (let i = 0; i < list.length; i += 10) batches.push([url, list.slice(i, i + 10)]);
    }
    await Promise.all(batches.map(([url, b]) => this.#send(url, b)));
    // The rest are sent first: a fargate task of a deployment whose Fargate workers were removed
    // (registration refuses such DAGs, but not those registered before) holds up no other.
    if (unroutable.length > 0) {
      throw new Error(
        `dispatch: ${unroutable.map((m) => m.taskId).join(', ')} run on fargate, which this deployment no longer has`,
      );
    }
  }

  async #send(queueUrl: string, batch: TaskMessage[]): Promise<void> {
    let entries = batch.map((m, i) => ({
      Id: String(i),
      MessageBody: encodeTaskMessage(m),
      MessageGroupId: messageGroupId(m),
      MessageDeduplicationId: deduplicationId(m),
    }));
    // A batch can partly fail; resend the entries that failed through no fault of ours.
    for (let attempt = 0; entries.length > 0; attempt++) {
      if (attempt > 0) await sleep(Math.min(2000, 100 * 2 ** attempt));
      const res = await aws('dispatch', () =>
        this.sqs.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries })),
      );
      const failed = res.Failed ?? [];
      const ours = failed.find((f) => f.SenderFault);
      if (ours)
        throw new Error(`dispatch: SQS refused a message: ${ours.Code} ${ours.Message ?? ''}`);
      if (failed.length > 0 && attempt >= 4) {
        throw new ThrottledError(
          `dispatch: ${failed.length} messages not sent: ${failed[0]?.Code}`,
        );
      }
      const retry = new Set(failed.map((f) => f.Id));
      entries = entries.filter((e) => retry.has(e.Id));
    }
  }
}
