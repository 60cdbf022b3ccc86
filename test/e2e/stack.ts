import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { ApiClient } from '../../cli/api-client.ts';
import { type LocalStack, localFile, readOutputs } from '../../localstack/deploy.ts';
import { localClients } from '../../localstack/resources.ts';

/** The stack the global setup deployed, and clients for it. */
export const local = JSON.parse(readFileSync(localFile, 'utf8')) as LocalStack;
export const outputs = readOutputs();
export const api = new ApiClient(local.apiUrl, local.region);
export const s3 = localClients().s3;

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `done` holds, at most `seconds`; returns the last value. Bounded in count and time. */
export async function poll<T>(
  fn: () => Promise<T>,
  done: (v: T) => boolean,
  seconds: number,
  everyMs = 500,
): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  let last = await fn();
  for (let i = 0; i < 10_000 && !done(last) && Date.now() < deadline; i++) {
    await sleep(everyMs);
    last = await fn();
  }
  return last;
}

export async function waitForRun(dagId: string, runId: string, seconds = 90): Promise<RunView> {
  const terminal = new Set(['success', 'failed', 'cancelled']);
  const r = await poll(
    () => api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`),
    (res) => res.status === 200 && terminal.has(res.body.status),
    seconds,
  );
  if (r.status !== 200) throw new Error(`GET run: ${r.status} ${r.text}`);
  return r.body;
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
