import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { beforeEach, describe, expect, it } from 'vitest';
import { S3BlobStore, type S3Buckets } from '../../adapters/aws/s3.ts';
import type { AttemptRef } from '../../core/ports.ts';
import { createBuckets, localClients } from '../../localstack/resources.ts';

let store: S3BlobStore;
let buckets: S3Buckets;
const ref: AttemptRef = {
  dagId: 'daily_sales',
  runId: 'scheduled__2026-03-09T06:30:00.000Z',
  taskId: 'load',
  attempt: 2,
};

beforeEach(async () => {
  buckets = await createBuckets();
  store = new S3BlobStore(localClients().s3, buckets);
});

async function keys(bucket: string): Promise<string[]> {
  const res = await localClients().s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (res.Contents ?? []).map((o) => o.Key ?? '');
}

describe('S3 blob store', () => {
  it('writes each attempt log at logs/{dagId}/{runId}/{taskId}/{attempt}.log', async () => {
    const key = await store.putLog(ref, 'line 1\nline 2 ✓\n');
    expect(key).toBe('logs/daily_sales/scheduled__2026-03-09T06:30:00.000Z/load/2.log');
    expect(await keys(buckets.dataBucket)).toEqual([key]);
    expect(await store.getLog(ref)).toBe('line 1\nline 2 ✓\n');
    expect(await store.getLog({ ...ref, attempt: 1 })).toBeUndefined();
  });

  it('keeps DAG files under dags/ in the DAGs bucket, and versions in the data bucket', async () => {
    expect(await store.putDagFile('sales/daily.json', '{"dagId":"x"}')).toBe(
      'dags/sales/daily.json',
    );
    expect(await store.getDagFile('dags/sales/daily.json')).toBe('{"dagId":"x"}');
    expect(await store.getDagFile('dags/missing.json')).toBeUndefined();
    const sha = 'ab'.repeat(32);
    const key = await store.putDagDocument('x', sha, '{"v":3}');
    expect(key).toBe(`dag-versions/x/${sha}.json`);
    expect(await store.getDagDocument(key)).toBe('{"v":3}');
    expect(await store.getDagDocument('dag-versions/x/missing.json')).toBeUndefined();
    expect(await keys(buckets.dagsBucket)).toEqual(['dags/sales/daily.json']);
    expect(await keys(buckets.dataBucket)).toEqual([key]);
    expect(() => store.putDagDocument('x', 'not-a-hash', '{}')).toThrow(/sha256/);
  });

  it('stores artifacts per attempt, refusing names that climb out', async () => {
    const bytes = new Uint8Array([0, 1, 2, 255]);
    expect(await store.putArtifact(ref, 'out/report.bin', bytes)).toBe(
      'artifacts/daily_sales/scheduled__2026-03-09T06:30:00.000Z/load/2/out/report.bin',
    );
    expect(await store.getArtifact(ref, 'out/report.bin')).toEqual(bytes);
    expect(await store.getArtifact(ref, 'nope')).toBeUndefined();
    expect(() => store.putArtifact(ref, '../../etc/passwd', 'x')).toThrow(/without "\.\."/);
    expect(() => store.putArtifact(ref, '/abs', 'x')).toThrow(/relative path/);
  });
});
