import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  CloudWatchLogsClient,
  DescribeLogGroupsCommand,
  FilterLogEventsCommand,
} from '@aws-sdk/client-cloudwatch-logs';
import { InvokeCommand, LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { ApiClient } from '../../cli/api-client.ts';
import { type LocalStack, localFile, readOutputs } from '../../localstack/deploy.ts';
import { localClients } from '../../localstack/resources.ts';
import { waitFor } from '../poll.ts';

/** The stack the global setup deployed, and clients for it. */
export const local = JSON.parse(readFileSync(localFile, 'utf8')) as LocalStack;
export const outputs = readOutputs();
export const api = new ApiClient(local.apiUrl, local.region);
export const s3 = localClients().s3;
const logs = new CloudWatchLogsClient(clientConfig());
const lambda = new LambdaClient(clientConfig());
const functionNames = new Map<string, string>();

export const uniqueDagId = (prefix: string) => `${prefix}_${randomUUID().slice(0, 8)}`;

export interface RunView {
  runId: string;
  dagId: string;
  status: string;
  logicalDate: string;
  startTime: string | null;
  endTime: string | null;
  conf: Record<string, unknown>;
  tasks: {
    taskId: string;
    status: string;
    attempt: number;
    startTime: string | null;
    endTime: string | null;
  }[];
}

/** Waits for the run to finish (success, failed or cancelled); fails naming it after `seconds`. */
export async function waitForRun(dagId: string, runId: string, seconds = 90): Promise<RunView> {
  const terminal = new Set(['success', 'failed', 'cancelled']);
  const r = await waitFor(
    () => api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`),
    (res) => res.status === 200 && terminal.has(res.body.status),
    { timeoutMs: seconds * 1000, intervalMs: 500, what: `run ${dagId} ${runId} to finish` },
  );
  return r.body;
}

/**
 * The JSON lines one of the stack's functions logged since `since` (ms), whose log group name
 * contains `fn` (e.g. "WorkerFunction"). Lines that are not JSON are left out.
 */
export async function functionLogLines(
  fn: string,
  since: number,
): Promise<Record<string, unknown>[]> {
  const groups = (await logs.send(new DescribeLogGroupsCommand({}))).logGroups ?? [];
  const group = groups.find((g) => g.logGroupName?.includes(fn))?.logGroupName;
  if (!group) return [];
  const out: Record<string, unknown>[] = [];
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
      const text = e.message ?? '';
      const start = text.indexOf('{');
      if (start < 0) continue;
      try {
        out.push(JSON.parse(text.slice(start)) as Record<string, unknown>);
      } catch {
        // Not one of our structured lines.
      }
    }
    token = res.nextToken;
    if (!token) break;
  }
  return out;
}

export async function putDagFile(key: string, body: string): Promise<void> {
  await s3.send(
    new PutObjectCommand({
      Bucket: local.dagsBucket,
      Key: key,
      Body: body,
      ContentType: 'application/json',
    }),
  );
}

export async function listKeys(bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  for (let i = 0; i < 100; i++) {
    const res = await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    keys.push(...(res.Contents ?? []).map((o) => o.Key ?? ''));
    token = res.NextContinuationToken;
    if (!token) break;
  }
  return keys;
}

export async function getText(bucket: string, key: string): Promise<string> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await res.Body?.transformToString('utf-8')) ?? '';
}

/** Invokes one of the stack's functions (by the construct id in its name) and returns its answer. */
export async function invoke(fn: string, payload?: unknown): Promise<unknown> {
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

/** Creates a DAG under a unique id from `prefix` and triggers a run of it. */
export async function createAndTrigger(
  prefix: string,
  doc: object,
): Promise<{ dagId: string; runId: string }> {
  const dagId = uniqueDagId(prefix);
  const created = await api.request('POST', '/v1/dags', { dagId, ...doc });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
  return { dagId, runId: r.body.runId };
}
