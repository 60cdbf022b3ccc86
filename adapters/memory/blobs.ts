import type { AttemptRef, BlobStore } from '../../core/ports.ts';
import { blobKeys, checkBlobName } from '../blob-keys.ts';

/**
 * The blob store in memory, with the keys the S3 store uses (adapters/aws/s3.ts) and the same
 * checks on names, so that a key handed out by one means the same in the other.
 */

export class MemoryBlobStore implements BlobStore {
  /** The DAGs bucket: DAG files as users upload them. */
  readonly #dags = new Map<string, string>();
  /** The data bucket: logs, artifacts and the documents of DAG versions. */
  readonly #data = new Map<string, string | Uint8Array>();

  async putLog(
    ref: AttemptRef,
    text: string,
    options: { readonly ifAbsent?: boolean } = {},
  ): Promise<string | undefined> {
    if (options.ifAbsent && this.#data.has(blobKeys.log(ref))) return undefined;
    return this.#put(this.#data, blobKeys.log(ref), text);
  }

  async getLog(ref: AttemptRef): Promise<string | undefined> {
    return this.#text(this.#data.get(blobKeys.log(ref)));
  }

  async putDagFile(name: string, text: string): Promise<string> {
    return this.#put(this.#dags, blobKeys.dagFile(checkBlobName(name, 'DAG file')), text);
  }

  async getDagFile(key: string): Promise<string | undefined> {
    return this.#dags.get(key);
  }

  async putDagDocument(dagId: string, sha256: string, text: string): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new Error('putDagDocument: sha256 must be 64 hex digits');
    return this.#put(this.#data, blobKeys.dagDocument(dagId, sha256), text);
  }

  async getDagDocument(key: string): Promise<string | undefined> {
    return this.#text(this.#data.get(key));
  }

  async putArtifact(ref: AttemptRef, name: string, body: string | Uint8Array): Promise<string> {
    const key = blobKeys.artifact(ref, checkBlobName(name, 'artifact name'));
    return this.#put(this.#data, key, typeof body === 'string' ? body : new Uint8Array(body));
  }

  async getArtifact(ref: AttemptRef, name: string): Promise<Uint8Array | undefined> {
    const body = this.#data.get(blobKeys.artifact(ref, checkBlobName(name, 'artifact name')));
    if (body === undefined) return undefined;
    return typeof body === 'string' ? new TextEncoder().encode(body) : new Uint8Array(body);
  }

  #put<T>(bucket: Map<string, T>, key: string, body: T): string {
    bucket.set(key, body);
    return key;
  }

  #text(body: string | Uint8Array | undefined): string | undefined {
    return typeof body === 'string' || body === undefined ? body : new TextDecoder().decode(body);
  }
}
