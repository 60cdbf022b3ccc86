import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { marshall } from '@aws-sdk/util-dynamodb';
import { expect } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import type { FaultRule } from '../../core/faults.ts';
import { waitFor } from '../poll.ts';
import { api, functionLogLines, invoke, outputs, type RunView, uniqueDagId } from './stack.ts';

/**
 * What the fault-injection tests share (faults.test.ts, faults-deliveries.test.ts): DAGs that ask
 * for faults in the test deploy (its emulator-only switch, lib/airless-function.ts, and a
 * 30-second lease), the stack's functions invoked directly, and the checks every scenario makes:
 * the run ends as it would have without the fault, each attempt with one log and at most one
 * outcome, and no task succeeds twice.
 */

export const sqs = new SQSClient(clientConfig());
const dynamo = new DynamoDBClient(clientConfig());

/** One pass of the stack's reaper, now (its rule fires every minute; tests do not wait for it). */
export async function reap(): Promise<void> {
  await invoke('ReaperFunction');
}

export const noop = (taskId: string, extra: object = {}) => ({
  taskId,
  operator: 'noop',
  ...extra,
});

export async function faultyRun(
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

export const view = async (dagId: string, runId: string) =>
  (await api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`)).body;

/**
 * Waits for the run to end, running reaper passes meanwhile (two at once, to race them), within
 * the lease plus a reaper period and some slack for the emulator.
 */
export async function endOf(dagId: string, runId: string, reaping = false): Promise<RunView> {
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
export async function expectOneOutcomePerAttempt(run: RunView) {
  for (const t of run.tasks as (RunView['tasks'][number] & { mapIndex?: number })[]) {
    // A mapped task's instance: its own logs.
    const one = t.mapIndex === undefined ? '' : `&mapIndex=${t.mapIndex}`;
    for (let attempt = 1; attempt <= t.attempt; attempt++) {
      const log = await api.request(
        'GET',
        `/v1/dags/${run.dagId}/runs/${encodeURIComponent(run.runId)}/tasks/${t.taskId}/logs?attempt=${attempt}${one}`,
      );
      expect(log.status, `log of ${t.taskId} attempt ${attempt}`).toBe(200);
      const outcomes = log.text.split('\n').filter((l) => / (success|failed)$/.test(l));
      expect(outcomes.length, `outcomes in ${t.taskId} attempt ${attempt}`).toBeLessThanOrEqual(1);
    }
  }
}

/** The worker's or retrier's log lines about one run since `since`. */
export async function linesOfRun(fn: string, runId: string, since: number) {
  return (await functionLogLines(fn, since)).filter((l) => l.runId === runId);
}

export async function waitForTask(
  dagId: string,
  runId: string,
  taskId: string,
  statuses: string[],
) {
  return waitFor(
    () => view(dagId, runId),
    (v) => v.tasks.some((t) => t.taskId === taskId && statuses.includes(t.status)),
    { timeoutMs: 60_000, intervalMs: 200, what: `${taskId} of ${runId} to be ${statuses}` },
  );
}

/** Reads task instance items straight from the stack's table. */
export class DynamoDBTable {
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
