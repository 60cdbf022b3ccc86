import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ConflictError, NotFoundError } from '../../core/errors.ts';
import type { AttemptRef, BlobStore } from '../../core/ports.ts';
import { blobKeys, checkBlobName } from '../blob-keys.ts';
import { aws } from './errors.ts';

export interface S3Buckets {
  /** User-facing: DAG files under `dags/`, whose uploads the registrar is notified of. */
  readonly dagsBucket: string;
  /** Internal: logs, artifacts and the validated document of each DAG version. */
  readonly dataBucket: string;
}

export class S3BlobStore implements BlobStore {
  constructor(
    private readonly s3: S3Client,
    private readonly buckets: S3Buckets,
  ) {}

  async putLog(
    ref: AttemptRef,
    text: string,
    options: { readonly ifAbsent?: boolean } = {},
  ): Promise<string | undefined> {
    try {
      return await this.#put(
        this.buckets.dataBucket,
        blobKeys.log(ref),
        text,
        'text/plain; charset=utf-8',
        options.ifAbsent,
      );
    } catch (e) {
      if (options.ifAbsent && e instanceof ConflictError) return undefined;
      throw e;
    }
  }

  async getLog(ref: AttemptRef): Promise<string | undefined> {
    return (await this.#get(this.buckets.dataBucket, blobKeys.log(ref)))?.transformToString(
      'utf-8',
    );
  }

  putDagFile(name: string, text: string): Promise<string> {
    return this.#put(
      this.buckets.dagsBucket,
      blobKeys.dagFile(checkBlobName(name, 'DAG file')),
      text,
      'application/json',
    );
  }

  async getDagFile(key: string): Promise<string | undefined> {
    return (await this.#get(this.buckets.dagsBucket, key))?.transformToString('utf-8');
  }

  putDagDocument(dagId: string, sha256: string, text: string): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new Error('putDagDocument: sha256 must be 64 hex digits');
    const key = blobKeys.dagDocument(dagId, sha256);
    return this.#put(this.buckets.dataBucket, key, text, 'application/json');
  }

  async getDagDocument(key: string): Promise<string | undefined> {
    return (await this.#get(this.buckets.dataBucket, key))?.transformToString('utf-8');
  }

  putArtifact(ref: AttemptRef, name: string, body: string | Uint8Array): Promise<string> {
    const key = blobKeys.artifact(ref, checkBlobName(name, 'artifact name'));
    return this.#put(this.buckets.dataBucket, key, body, 'application/octet-stream');
  }

  async getArtifact(ref: AttemptRef, name: string): Promise<Uint8Array | undefined> {
    const key = blobKeys.artifact(ref, checkBlobName(name, 'artifact name'));
    return (await this.#get(this.buckets.dataBucket, key))?.transformToByteArray();
  }

  async #put(
    bucket: string,
    key: string,
    body: string | Uint8Array,
    contentType: string,
    ifAbsent = false,
  ): Promise<string> {
    // S3 conditional writes: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
    await aws(`put s3://${bucket}/${key}`, () =>
      this.s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: body,
          ContentType: contentType,
          ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
        }),
      ),
    );
    return key;
  }

  async #get(bucket: string, key: string) {
    try {
      const res = await aws(`get s3://${bucket}/${key}`, () =>
        this.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })),
      );
      return res.Body;
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }
}
