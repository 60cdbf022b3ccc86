import { randomUUID } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { NotFoundError } from '../../core/errors.ts';
import type {
  AttemptRef,
  BlobStore,
  ScheduleRegistry,
  TaskDispatcher,
  TaskMessage,
} from '../../core/ports.ts';

/**
 * The behaviour of the smaller ports, whatever implements them: run against the AWS adapters on
 * the emulator (test/integration) and the in-memory ones (test/unit).
 */

const uid = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

/** A rejection or a synchronous throw, as either is how a port may refuse a call. */
async function refusal(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call();
  } catch (e) {
    return e;
  }
  throw new Error('expected the call to be refused');
}

export function blobStoreContract(name: string, makeBlobs: () => Promise<BlobStore>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let blobs: BlobStore;
    let ref: AttemptRef;

    beforeEach(async () => {
      blobs = await makeBlobs();
      ref = {
        dagId: uid('dag'),
        runId: 'scheduled__2026-03-09T06:30:00.000Z',
        taskId: 'load',
        attempt: 2,
      };
    });

    it('keeps one log per attempt, at logs/{dagId}/{runId}/{taskId}/{attempt}.log', async () => {
      const key = await blobs.putLog(ref, 'line 1\nline 2 ✓\n');
      expect(key).toBe(`logs/${ref.dagId}/${ref.runId}/load/2.log`);
      expect(await blobs.getLog(ref)).toBe('line 1\nline 2 ✓\n');
      expect(await blobs.getLog({ ...ref, attempt: 1 })).toBeUndefined();
      // Written again (the reaper's note on what the worker wrote): the last one stays.
      await blobs.putLog(ref, 'again');
      expect(await blobs.getLog(ref)).toBe('again');
      // A worker's own write only creates: a late worker cannot replace the reaper's account.
      expect(await blobs.putLog(ref, 'late worker', { ifAbsent: true })).toBeUndefined();
      expect(await blobs.getLog(ref)).toBe('again');
      const fresh = { ...ref, attempt: 3 };
      expect(await blobs.putLog(fresh, 'first', { ifAbsent: true })).toBe(
        `logs/${ref.dagId}/${ref.runId}/load/3.log`,
      );
      expect(await blobs.getLog(fresh)).toBe('first');
    });

    it('keeps DAG files under dags/ and version documents by content', async () => {
      const file = `${ref.dagId}/daily.json`;
      expect(await blobs.putDagFile(file, '{"dagId":"x"}')).toBe(`dags/${file}`);
      expect(await blobs.getDagFile(`dags/${file}`)).toBe('{"dagId":"x"}');
      expect(await blobs.getDagFile(`dags/${ref.dagId}/missing.json`)).toBeUndefined();
      const sha = 'ab'.repeat(32);
      const key = await blobs.putDagDocument(ref.dagId, sha, '{"v":3}');
      expect(key).toBe(`dag-versions/${ref.dagId}/${sha}.json`);
      expect(await blobs.getDagDocument(key)).toBe('{"v":3}');
      expect(await blobs.getDagDocument(`dag-versions/${ref.dagId}/missing.json`)).toBeUndefined();
      // A DAG file and a document are different objects, even under the same name.
      expect(await blobs.getDagDocument(`dags/${file}`)).toBeUndefined();
      expect(await refusal(() => blobs.putDagDocument('x', 'not-a-hash', '{}'))).toMatchObject({
        message: expect.stringMatching(/sha256/),
      });
      expect(await refusal(() => blobs.putDagFile('../escape.json', '{}'))).toBeInstanceOf(Error);
    });

    it('keeps artifacts per attempt, as bytes, refusing names that climb out', async () => {
      const bytes = new Uint8Array([0, 1, 2, 255]);
      expect(await blobs.putArtifact(ref, 'out/report.bin', bytes)).toBe(
        `artifacts/${ref.dagId}/${ref.runId}/load/2/out/report.bin`,
      );
      bytes[0] = 9; // the caller's buffer is not the stored one
      expect(await blobs.getArtifact(ref, 'out/report.bin')).toEqual(
        new Uint8Array([0, 1, 2, 255]),
      );
      await blobs.putArtifact(ref, 'note.txt', 'é');
      expect(await blobs.getArtifact(ref, 'note.txt')).toEqual(new TextEncoder().encode('é'));
      expect(await blobs.getArtifact(ref, 'nope')).toBeUndefined();
      expect(await blobs.getArtifact({ ...ref, attempt: 3 }, 'note.txt')).toBeUndefined();
      expect(await refusal(() => blobs.putArtifact(ref, '../../etc/passwd', 'x'))).toMatchObject({
        message: expect.stringMatching(/without "\.\."/),
      });
      expect(await refusal(() => blobs.putArtifact(ref, '/abs', 'x'))).toMatchObject({
        message: expect.stringMatching(/relative path/),
      });
    });
  });
}

export interface DispatcherUnderTest {
  readonly dispatcher: TaskDispatcher;
  /** What was delivered so far, waiting until `count` messages came (bounded). */
  received(count: number): Promise<TaskMessage[]>;
}

export function dispatcherContract(
  name: string,
  makeDispatcher: () => Promise<DispatcherUnderTest>,
): void {
  describe(`TaskDispatcher contract: ${name}`, () => {
    let q: DispatcherUnderTest;
    const msg = (taskId: string, attempt = 1): TaskMessage => ({
      dagId: 'daily_sales',
      runId: 'scheduled__2026-03-09T06:30:00.000Z',
      taskId,
      attempt,
      dagVersion: 3,
    });

    beforeEach(async () => {
      q = await makeDispatcher();
    });

    it('delivers every message of a dispatch, more than one batch of them, as sent', async () => {
      const messages = Array.from({ length: 23 }, (_, i) => msg(`t${i}`, 1 + (i % 3)));
      await q.dispatcher.dispatch(messages);
      const got = await q.received(23);
      const order = (m: TaskMessage) => `${m.taskId}@${m.attempt}`;
      expect(got.map(order).sort()).toEqual(messages.map(order).sort());
      expect(got.find((m) => m.taskId === 't4')).toEqual(msg('t4', 2));
    });

    it('sends nothing for no messages', async () => {
      await q.dispatcher.dispatch([]);
      await q.dispatcher.dispatch([msg('last')]);
      expect((await q.received(1)).map((m) => m.taskId)).toEqual(['last']);
    });
  });
}

export function scheduleRegistryContract(
  name: string,
  makeRegistry: () => Promise<ScheduleRegistry>,
): void {
  describe(`ScheduleRegistry contract: ${name}`, () => {
    let registry: ScheduleRegistry;

    beforeEach(async () => {
      registry = await makeRegistry();
    });

    it('puts, replaces, pauses, resumes and deletes one schedule per DAG', async () => {
      const dagId = uid('dag');
      expect(await registry.get(dagId)).toBeUndefined();
      const daily = { dagId, expression: 'cron(0 0 * * ? *)', timezone: 'UTC', enabled: true };
      await registry.put(daily);
      expect(await registry.get(dagId)).toEqual(daily);
      const weekdays = {
        dagId,
        expression: 'cron(0 9 ? * 2-6 *)',
        timezone: 'Europe/London',
        enabled: false,
      };
      await registry.put(weekdays);
      expect(await registry.get(dagId)).toEqual(weekdays);
      await registry.setEnabled(dagId, true);
      expect(await registry.get(dagId)).toEqual({ ...weekdays, enabled: true });
      await registry.setEnabled(dagId, false);
      expect((await registry.get(dagId))?.enabled).toBe(false);
      await registry.delete(dagId);
      expect(await registry.get(dagId)).toBeUndefined();
      // Deleting what is not there is not an error; enabling it is.
      await registry.delete(dagId);
      await expect(registry.setEnabled(dagId, true)).rejects.toBeInstanceOf(NotFoundError);
    });

    it('keeps each DAG schedule apart', async () => {
      const a = {
        dagId: uid('a'),
        expression: 'cron(0 1 * * ? *)',
        timezone: 'UTC',
        enabled: true,
      };
      const b = { ...a, dagId: uid('b'), expression: 'cron(0 2 * * ? *)' };
      await registry.put(a);
      await registry.put(b);
      await registry.delete(a.dagId);
      expect(await registry.get(b.dagId)).toEqual(b);
    });
  });
}
