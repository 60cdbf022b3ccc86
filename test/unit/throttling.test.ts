import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { memoryDeps } from '../../adapters/memory/deps.ts';
import { executeTask } from '../../app/tasks.ts';
import { NotFoundError, ThrottledError } from '../../core/errors.ts';
import { NO_COUNTS } from '../../core/readiness/index.ts';
import { finishTask, queueTask } from '../../core/state/index.ts';

/**
 * DynamoDB throttling on every write path. The emulator never throttles, so this is the one place
 * where an SDK client is faked: it answers every call as DynamoDB does when it sheds load, and
 * the store must turn that into a retryable ThrottledError (never a conflict, never success), so
 * that the queue or stream delivers the work again.
 */
function throttled(name: string): DynamoStateStore {
  const client = {
    send: async () => {
      throw Object.assign(new Error('Rate of requests exceeds the allowed throughput'), {
        name,
        $metadata: { httpStatusCode: 400 },
      });
    },
  } as unknown as DynamoDBDocumentClient;
  return new DynamoStateStore(client, 'table');
}

const at = new Date('2026-03-09T06:30:00.000Z');
const key = { dagId: 'd', runId: 'r', taskId: 't' };
const newRun = (n: number) => ({
  dagId: 'd',
  runId: 'r',
  dagVersion: 1,
  kind: 'manual' as const,
  logicalDate: at,
  conf: {},
  tasks: Array.from({ length: n }, (_, i) => ({ taskId: `t${i}`, upstreamCount: 0 })),
  at,
});
const writes: [string, (s: DynamoStateStore) => Promise<unknown>][] = [
  [
    'putDagVersion',
    (s) => s.putDagVersion({ dagId: 'd', sourceKey: 'k', sha256: 'a', taskCount: 1, at }),
  ],
  ['setDagPaused', (s) => s.setDagPaused('d', true, at)],
  ['markDagDeleted', (s) => s.markDagDeleted('d', at)],
  [
    'putImportError',
    (s) => s.putImportError({ key: 'dags/x.json', errors: [], time: at.toISOString() }),
  ],
  ['createRun (one transaction)', (s) => s.createRun(newRun(2))],
  ['createRun (run item)', (s) => s.createRun(newRun(150))],
  ['writeRunTasks', (s) => s.writeRunTasks(newRun(150), { token: 'w', seconds: 60, now: at })],
  ['transitionRun', (s) => s.transitionRun('d', 'r', ['queued'], 'running', at)],
  ['acquireRunSlot', (s) => s.acquireRunSlot('d', 'r', 1)],
  ['releaseRunSlot', (s) => s.releaseRunSlot('d', 'r')],
  [
    'transitionTask',
    (s) =>
      s.transitionTask(key, queueTask({ status: 'pending', attempt: 0, leaseToken: null }, at)),
  ],
  ['recordUpstreamOutcome', (s) => s.recordUpstreamOutcome(key, 'u', 'success', 0)],
  ['recordTaskFinished', (s) => s.recordTaskFinished(key, true, 1, 0)],
  [
    'clearTasks',
    (s) =>
      s.clearTasks({
        dagId: 'd',
        runId: 'r',
        taskCount: 1,
        runStatus: 'running',
        at,
        tasks: [
          {
            taskId: 't',
            expect: { status: 'success', attempt: 1, generation: 0, counts: NO_COUNTS },
            status: 'queued',
            attempt: 2,
            newGeneration: true,
            generation: 1,
            counts: NO_COUNTS,
            counted: [],
            oldSucceeded: true,
          },
        ],
      }),
  ],
  ['countUse', (s) => s.countUse('n', 1)],
];

describe('a throttled DynamoDB', () => {
  for (const name of [
    'ProvisionedThroughputExceededException',
    'ThrottlingException',
    'RequestLimitExceeded',
  ]) {
    it.each(writes)(`${name}: %s is a retryable ThrottledError`, async (_, write) => {
      const err = await write(throttled(name)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ThrottledError);
      expect((err as ThrottledError).retryable).toBe(true);
    });
  }

  it('makes a worker give its message back, not drop it', async () => {
    const deps = { ...memoryDeps(), store: throttled('ProvisionedThroughputExceededException') };
    await expect(
      executeTask(
        deps,
        { ...key, attempt: 1, dagVersion: 1 },
        {
          leaseSeconds: 60,
          heartbeatSeconds: 30,
          remainingMs: () => 600_000,
        },
      ),
    ).rejects.toBeInstanceOf(ThrottledError);
  });
});

describe('a transaction cancelled for a concurrent one (TransactionConflict)', () => {
  /**
   * Two transactions on one gate item at once: DynamoDB cancels one with TransactionConflict,
   * which the SDK does not retry and the emulator never produces, hence the faked client. The
   * end of a pooled attempt must not be lost to it: the store tries again.
   */
  function conflicting(times: number, reasons: { Code: string }[]) {
    let calls = 0;
    const client = {
      send: async () => {
        calls++;
        if (calls <= times) {
          throw Object.assign(new Error('Transaction cancelled'), {
            name: 'TransactionCanceledException',
            CancellationReasons: reasons,
            $metadata: { httpStatusCode: 400 },
          });
        }
        return {};
      },
    } as unknown as DynamoDBDocumentClient;
    return { store: new DynamoStateStore(client, 'table'), calls: () => calls };
  }
  const running = {
    ...key,
    dagVersion: 1,
    status: 'running' as const,
    attempt: 1,
    leaseToken: 'l',
    upstreamCount: 0,
    retryBase: 0,
    generation: 0,
    counts: NO_COUNTS,
    queuedAt: null,
    leaseExpiresAt: null,
    retryAt: null,
    startTime: null,
    endTime: null,
    error: null,
    deferred: null,
    output: null,
    outputKey: null,
    gates: ['pool:p'],
  };

  it('is tried again, and the outcome written once it goes through', async () => {
    const { store, calls } = conflicting(3, [{ Code: 'None' }, { Code: 'TransactionConflict' }]);
    const done = await store.transitionTask(key, finishTask(running, { ok: true }, at));
    expect(done.status).toBe('success');
    expect(done.gates).toBeUndefined();
    expect(calls()).toBe(4);
  });

  it('is not tried for ever: a retryable error once it keeps happening', async () => {
    const { store } = conflicting(100, [{ Code: 'None' }, { Code: 'TransactionConflict' }]);
    const e = await store
      .transitionTask(key, finishTask(running, { ok: true }, at))
      .catch((x) => x);
    expect(e).toBeInstanceOf(ThrottledError);
  });

  it('a failed condition is not tried again: it is a conflict', async () => {
    const { store, calls } = conflicting(1, [
      { Code: 'ConditionalCheckFailed' },
      { Code: 'TransactionConflict' },
    ]);
    const e = await store
      .transitionTask(key, finishTask(running, { ok: true }, at))
      .catch((x) => x);
    expect(e).toBeInstanceOf(NotFoundError);
    expect(calls()).toBe(1);
  });
});
