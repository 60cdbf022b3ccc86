import { UnrecoverableError } from '../core/errors.ts';
import { parseInstance } from '../core/mapping/index.ts';
import type { AttemptRef, TaskInstanceRecord } from '../core/ports.ts';
import type { StoredOutput } from '../core/state/index.ts';
import type { Deps } from './deps.ts';

/** The largest output a task may have, as JSON (DESIGN.md section 10). */
export const MAX_OUTPUT_BYTES = 256 * 1024;
/**
 * Outputs up to this size stay in the task instance's item, written by the outcome's own write:
 * no extra request. DynamoDB bills writes by the kilobyte of the whole item, and every later
 * write to the item pays for it again, so only small outputs stay inline; larger ones go to S3.
 */
export const INLINE_OUTPUT_BYTES = 4 * 1024;
const OUTPUT_ARTIFACT = 'output.json';

/** Not retryable: the next attempt would return as much. */
export class OutputTooLargeError extends UnrecoverableError {
  constructor(bytes: number) {
    super(
      `the output is ${bytes} bytes of JSON, more than the ${MAX_OUTPUT_BYTES} a task may return: ` +
        'store large results in S3 and return their location',
    );
  }
}

/**
 * Stores an attempt's output where its size says, before the outcome that refers to it is
 * written: an outcome never names an output that is not there. Nothing for null or undefined.
 */
export async function storeOutput(
  deps: Deps,
  ref: AttemptRef,
  output: unknown,
): Promise<StoredOutput | undefined> {
  if (output === undefined || output === null) return undefined;
  const json = JSON.stringify(output);
  if (json === undefined) return undefined;
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_OUTPUT_BYTES) throw new OutputTooLargeError(bytes);
  if (bytes <= INLINE_OUTPUT_BYTES) return { inline: json };
  return { key: await deps.blobs.putArtifact(ref, OUTPUT_ARTIFACT, json) };
}

/**
 * The task's output (its successful attempt's), or undefined when it has none. A mapped task's
 * (core/mapping) is its instances' outputs in index order, null for one without, once it has
 * ended (failed too, so that an `all_done` reducer sees what its instances made); an empty map's
 * is the empty list.
 */
export async function readOutput(
  deps: Deps,
  ti: TaskInstanceRecord,
): Promise<{ output: unknown } | undefined> {
  if (ti.mapAttempt !== undefined && ti.mapLength !== undefined && ti.mapCounts) {
    const instances = (await deps.store.listMapInstances(ti)).filter(
      (t) => t.mapAttempt === ti.mapAttempt,
    );
    const out: unknown[] = new Array(ti.mapLength).fill(null);
    await Promise.all(
      instances.map(async (t) => {
        const i = parseInstance(t.taskId)?.mapIndex;
        if (i !== undefined && i < out.length) out[i] = (await readOutput(deps, t))?.output ?? null;
      }),
    );
    return { output: out };
  }
  if (ti.status === 'skipped' && ti.output !== null) return { output: JSON.parse(ti.output) };
  if (ti.status !== 'success') return undefined;
  if (ti.output !== null) return { output: JSON.parse(ti.output) };
  if (ti.outputKey === null) return undefined;
  const body = await deps.blobs.getArtifact(ti, OUTPUT_ARTIFACT);
  return body ? { output: JSON.parse(Buffer.from(body).toString('utf8')) } : undefined;
}
