import type { AttemptRef } from '../core/ports.ts';

/**
 * Where each kind of blob lives (docs/architecture.md), and the check on names that callers
 * give: shared by the S3 store and the in-memory one, so that a key means the same in both.
 */
const attemptPath = (r: AttemptRef) => `${r.dagId}/${r.runId}/${r.taskId}/${r.attempt}`;

export const blobKeys = {
  log: (r: AttemptRef) => `logs/${attemptPath(r)}.log`,
  dagFile: (name: string) => `dags/${name}`,
  dagDocument: (dagId: string, sha256: string) => `dag-versions/${dagId}/${sha256}.json`,
  artifact: (r: AttemptRef, name: string) => `artifacts/${attemptPath(r)}/${name}`,
};

export function checkBlobName(name: string, what: string): string {
  if (!/^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,254}$/.test(name) || name.split('/').includes('..')) {
    throw new Error(`${what} "${name}" must be a relative path of [A-Za-z0-9_.-/] without ".."`);
  }
  return name;
}
