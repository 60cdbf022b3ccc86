import {
  DeleteRuleCommand,
  EventBridgeClient,
  PutRuleCommand,
  PutTargetsCommand,
  RemoveTargetsCommand,
} from '@aws-sdk/client-eventbridge';
import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { runEventPattern } from '../../lib/run-events.ts';
import { waitFor } from '../poll.ts';
import { api, uniqueDagId, waitForRun } from './stack.ts';

/**
 * Run events reach users as they would on AWS: through a rule of their own on the bus, here
 * with an SQS queue as its target (DESIGN.md section 12). The rule matches only this file's
 * DAGs, so other tests' events do not reach the queue.
 */

const eventbridge = new EventBridgeClient(clientConfig());
const sqs = new SQSClient(clientConfig());
const prefix = uniqueDagId('e2e_events');
const dags = { flaky: `${prefix}_flaky`, fine: `${prefix}_fine`, slow: `${prefix}_slow` };
const ruleName = `${prefix}-rule`;
let queueUrl = '';

interface Received {
  'detail-type': string;
  source: string;
  detail: Record<string, unknown>;
}
const received: Received[] = [];

/** Everything on the queue so far, kept in `received` (each message read once, then deleted). */
async function drain(): Promise<Received[]> {
  for (let i = 0; i < 20; i++) {
    const r = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10 }),
    );
    const messages = r.Messages ?? [];
    if (messages.length === 0) break;
    for (const m of messages) received.push(JSON.parse(m.Body ?? '{}') as Received);
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: messages.map((m, n) => ({ Id: String(n), ReceiptHandle: m.ReceiptHandle })),
      }),
    );
  }
  return received;
}

const eventsOf = (runId: string) => received.filter((e) => e.detail.runId === runId);

beforeAll(async () => {
  const q = await sqs.send(new CreateQueueCommand({ QueueName: ruleName }));
  queueUrl = q.QueueUrl ?? '';
  const attrs = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }),
  );
  // The same pattern helper the CDK construct offers, so users can write the same rule.
  const pattern = runEventPattern({ dagIds: Object.values(dags) });
  await eventbridge.send(
    new PutRuleCommand({
      Name: ruleName,
      EventPattern: JSON.stringify({
        source: pattern.source,
        detail: pattern.detail,
      }),
    }),
  );
  await eventbridge.send(
    new PutTargetsCommand({
      Rule: ruleName,
      Targets: [{ Id: 'queue', Arn: attrs.Attributes?.QueueArn }],
    }),
  );
});

afterAll(async () => {
  await eventbridge.send(new RemoveTargetsCommand({ Rule: ruleName, Ids: ['queue'] }));
  await eventbridge.send(new DeleteRuleCommand({ Name: ruleName }));
  await sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
});

describe('run events on EventBridge', () => {
  it('a failed run: each failed attempt, then the run end, with ids, status and a UI link', async () => {
    await api.request('POST', '/v1/dags', {
      dagId: dags.flaky,
      tasks: [
        // Fails once, then succeeds on its retry: one Task Failed, willRetry.
        {
          taskId: 'a',
          operator: 'noop',
          retries: 1,
          retryDelaySeconds: 0,
          config: { failAttempts: 1 },
        },
        // Fails for good: one Task Failed, not retried; the run fails.
        { taskId: 'b', operator: 'noop', dependsOn: ['a'], config: { failAttempts: 1 } },
        // Never runs (upstream_failed): no attempt, so no Task Failed.
        { taskId: 'c', operator: 'noop', dependsOn: ['b'] },
      ],
    });
    const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dags.flaky}/runs`, {});
    const runId = r.body.runId;
    expect((await waitForRun(dags.flaky, runId)).status).toBe('failed');
    await waitFor(
      async () => {
        await drain();
        return eventsOf(runId);
      },
      (e) => e.some((x) => x['detail-type'] === 'Airless Run Status Change'),
      { timeoutMs: 60_000, intervalMs: 500, what: `the run end event of ${runId}` },
    );
    const mine = eventsOf(runId);
    expect(mine.every((e) => e.source === 'airless')).toBe(true);
    const failures = mine
      .filter((e) => e['detail-type'] === 'Airless Task Failed')
      .map((e) => [e.detail.taskId, e.detail.attempt, e.detail.status, e.detail.willRetry]);
    expect(failures.sort()).toEqual([
      ['a', 1, 'up_for_retry', true],
      ['b', 1, 'failed', false],
    ]);
    const failedB = mine.find((e) => e.detail.taskId === 'b');
    expect(failedB?.detail.error).toMatch(/failing attempt 1/);
    const ends = mine.filter((e) => e['detail-type'] === 'Airless Run Status Change');
    expect(ends).toHaveLength(1);
    expect(ends[0]?.detail).toMatchObject({
      dagId: dags.flaky,
      runId,
      status: 'failed',
      link: `/dags/${encodeURIComponent(dags.flaky)}/runs/${encodeURIComponent(runId)}`,
    });
  });

  it('a run that succeeds and one that is cancelled: one run end each, no task failure', async () => {
    await api.request('POST', '/v1/dags', {
      dagId: dags.fine,
      tasks: [{ taskId: 'only', operator: 'noop' }],
    });
    await api.request('POST', '/v1/dags', {
      dagId: dags.slow,
      tasks: [{ taskId: 'wait', operator: 'noop', config: { sleepSeconds: 30 } }],
    });
    const fine = (await api.request<{ runId: string }>('POST', `/v1/dags/${dags.fine}/runs`, {}))
      .body.runId;
    const slow = (await api.request<{ runId: string }>('POST', `/v1/dags/${dags.slow}/runs`, {}))
      .body.runId;
    expect((await waitForRun(dags.fine, fine)).status).toBe('success');
    expect(
      (await api.request('POST', `/v1/dags/${dags.slow}/runs/${encodeURIComponent(slow)}/cancel`))
        .status,
    ).toBeLessThan(300);
    expect((await waitForRun(dags.slow, slow)).status).toBe('cancelled');
    await waitFor(
      async () => {
        await drain();
        return [eventsOf(fine), eventsOf(slow)];
      },
      ([f, s]) => (f?.length ?? 0) > 0 && (s?.length ?? 0) > 0,
      { timeoutMs: 60_000, intervalMs: 500, what: 'the run end events' },
    );
    expect(eventsOf(fine).map((e) => [e['detail-type'], e.detail.status])).toEqual([
      ['Airless Run Status Change', 'success'],
    ]);
    expect(eventsOf(slow).map((e) => [e['detail-type'], e.detail.status])).toEqual([
      ['Airless Run Status Change', 'cancelled'],
    ]);
  });
});
