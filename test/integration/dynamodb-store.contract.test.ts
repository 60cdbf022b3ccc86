import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { clientConfig, createClients, takeCapacity } from '../../adapters/aws/clients.ts';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import { ConflictError, NotFoundError } from '../../core/errors.ts';
import type { StateStore, TaskInstanceRecord, TaskKey } from '../../core/ports.ts';
import { claimTask, finishTask, manualRunId } from '../../core/state/index.ts';
import { createTable, localClients } from '../../localstack/resources.ts';
import { stateStoreContract } from '../contract/state-store.contract.ts';

/** The DynamoDB store against the emulator, a fresh table for each test. */
const tables = new WeakMap<StateStore, string>();

stateStoreContract(
  'DynamoDB',
  async () => {
    const table = await createTable();
    const store = new DynamoStateStore(localClients().dynamodb, table);
    tables.set(store, table);
    return store;
  },
  {
    holdCreationLease: async (store, run, token, until) => {
      await localClients().dynamodb.send(
        new UpdateCommand({
          TableName: tables.get(store),
          Key: tableKeys.run(run.dagId, run.runId),
          UpdateExpression: 'SET creatorToken = :t, creatorUntil = :u',
          ExpressionAttributeValues: { ':t': token, ':u': until.toISOString() },
        }),
      );
    },
  },
);

/** A new manual run of a new DAG with these tasks. */
async function newRun(
  store: StateStore,
  tasks: { taskId: string; upstreamCount: number }[],
): Promise<{ dagId: string; runId: string }> {
  const dagId = `dag-${randomUUID().slice(0, 8)}`;
  const { run } = await store.createRun({
    dagId,
    runId: manualRunId(randomUUID()),
    dagVersion: 1,
    kind: 'manual',
    logicalDate: new Date(0),
    conf: {},
    tasks,
    at: new Date(0),
  });
  return { dagId, runId: run.runId };
}

describe('DynamoDB store: writes to one item that arrive at once go out together', () => {
  /** A store whose client counts its UpdateItem commands (once each, whatever its retries). */
  async function countingStore() {
    const db = DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig()));
    let n = 0;
    db.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'UpdateItemCommand') n++;
        return next(args);
      },
      { step: 'initialize', name: 'countUpdates' },
    );
    const store = new DynamoStateStore(db, await createTable());
    /** The UpdateItem commands the store sent while `work` ran. */
    const updates = async (work: () => Promise<unknown>) => {
      n = 0;
      await work();
      return n;
    };
    return { store, updates };
  }

  it('counts 40 outcomes into one join in 2 writes, and 40 ends into one shard in 2', async () => {
    const { store, updates } = await countingStore();
    const ups = Array.from({ length: 40 }, (_, i) => `u${i}`);
    const { dagId, runId } = await newRun(store, [
      ...ups.map((taskId) => ({ taskId, upstreamCount: 0 })),
      { taskId: 'join', upstreamCount: 40 },
    ]);
    const join = { dagId, runId, taskId: 'join' };
    // Made in one turn: 25 (COALESCE_MAX) go together, then the other 15.
    expect(
      await updates(() =>
        Promise.all(ups.map((u) => store.recordUpstreamOutcome(join, u, 'success', 0))),
      ),
    ).toBe(2);
    expect((await store.getTaskInstance(join))?.counts.success).toBe(40);
    expect(
      await updates(() =>
        Promise.all(
          ups.map((taskId) => store.recordTaskFinished({ dagId, runId, taskId }, true, 41, 0)),
        ),
      ),
    ).toBe(2);
    // One at a time, each is its own write.
    const last = { dagId, runId, taskId: 'join' };
    expect(await updates(() => store.recordTaskFinished(last, true, 41, 0))).toBe(1);
  });
});

describe('DynamoDB store: updates of different items made at once go out together', () => {
  /** A store on a measured client (clients.ts) that records the commands it sends. */
  async function recordingStore() {
    localClients(); // points the clients at the emulator
    const db = createClients().dynamodb;
    const sent: string[] = [];
    db.middlewareStack.add(
      (next, context) => async (args) => {
        sent.push(String(context.commandName).replace(/Command$/, ''));
        return next(args);
      },
      { step: 'initialize', name: 'recordCommands' },
    );
    const table = await createTable();
    return { store: new DynamoStateStore(db, table), table, sent };
  }

  /** A run of a root and `n` tasks after it. */
  async function fanOut(store: StateStore, n: number): Promise<TaskKey[]> {
    const ids = Array.from({ length: n }, (_, i) => `t${String(i).padStart(2, '0')}`);
    const { dagId, runId } = await newRun(store, [
      { taskId: 'root', upstreamCount: 0 },
      ...ids.map((taskId) => ({ taskId, upstreamCount: 1 })),
    ]);
    return ids.map((taskId) => ({ dagId, runId, taskId }));
  }

  it('queues, claims and ends 30 tasks in 2 requests a step, billed as one at a time would be', async () => {
    const { store, sent } = await recordingStore();
    const at = new Date(1000);
    const steps: ((k: TaskKey, ti: TaskInstanceRecord) => Promise<TaskInstanceRecord>)[] = [
      async (k) =>
        (await store.recordUpstreamOutcome(k, 'root', 'success', 0, { queueAt: at })).task,
      (k, ti) => store.transitionTask(k, claimTask(ti, `lease-${k.taskId}`, 60, at)),
      (k, ti) =>
        store.transitionTask(
          k,
          // A log large enough to take the item past 1 KB: units by size, not by request.
          finishTask(ti, { ok: true, log: 'x'.repeat(1500), advanceInline: true }, at),
        ),
    ];
    const apart = await fanOut(store, 30);
    const together = await fanOut(store, 30);
    const strip = (t: TaskInstanceRecord) => ({ ...t, runId: '', dagId: '' });

    takeCapacity();
    sent.length = 0;
    let one: TaskInstanceRecord[] = apart.map(() => ({}) as TaskInstanceRecord);
    for (const step of steps) {
      const next: TaskInstanceRecord[] = [];
      for (const [i, k] of apart.entries()) next.push(await step(k, one[i] as TaskInstanceRecord));
      one = next;
    }
    const oneUnits = takeCapacity();
    expect(sent).toEqual(Array(90).fill('UpdateItem'));

    sent.length = 0;
    let all: TaskInstanceRecord[] = together.map(() => ({}) as TaskInstanceRecord);
    for (const step of steps) {
      all = await Promise.all(together.map((k, i) => step(k, all[i] as TaskInstanceRecord)));
    }
    const allUnits = takeCapacity();
    // 25 statements a request (BatchExecuteStatement's most), then 5; nothing one at a time.
    expect(sent).toEqual(Array(6).fill('BatchExecuteStatement'));

    // The same records, and the same write units as DynamoDB bills the single updates.
    expect(all.map(strip)).toEqual(one.map(strip));
    expect(all.every((t) => t.status === 'success' && t.log?.length === 1500)).toBe(true);
    expect(await store.getTaskInstance(together[7] as TaskKey)).toEqual(all[7]);
    expect(allUnits.write).toBe(oneUnits.write);
    expect(allUnits.indexWrite).toBe(oneUnits.indexWrite);
    expect(allUnits.indexWrite).toBeGreaterThan(0);
    expect(Object.keys(allUnits.writesByKind)).toEqual(['BatchExecuteStatement TI']);
  });

  it('sends a success and its continuation’s tentative claim in one request, and a refused success’s claim is withdrawn', async () => {
    const { store, sent } = await recordingStore();
    const at = new Date(1000);
    const [a, b, c, d] = (await fanOut(store, 4)) as [TaskKey, TaskKey, TaskKey, TaskKey];
    const claimed = async (k: TaskKey) =>
      store.transitionTask(
        k,
        claimTask(
          (await store.recordUpstreamOutcome(k, 'root', 'success', 0, { queueAt: at })).task,
          `lease-${k.taskId}`,
          60,
          at,
        ),
      );
    const tentative = (k: TaskKey, token: string) =>
      store.recordUpstreamOutcome(k, 'root', 'success', 0, {
        queueAt: at,
        claim: {
          leaseToken: token,
          leaseExpiresAt: new Date(61_000).toISOString(),
          tentative: 1,
        },
      });
    // As app/tasks.ts sends them: in one turn, neither waiting for the other.
    const running = await claimed(a);
    sent.length = 0;
    const [done, next] = await Promise.all([
      store.transitionTask(a, finishTask(running, { ok: true, advanceInline: true }, at)),
      tentative(b, 'lease-b'),
    ]);
    expect(sent).toEqual(['BatchExecuteStatement']);
    expect(done.status).toBe('success');
    expect(next.task).toMatchObject({ status: 'running', leaseToken: 'lease-b', tentative: 1 });
    expect(await store.getTaskInstance(b)).toEqual(next.task);
    // A success refused (its lease was taken back first, so it expects a lease the task no longer
    // has): the claim that went with it landed all the same, and its withdrawal puts the task
    // back as it was.
    const stale = await claimed(c);
    const pending = (await store.getTaskInstance(d)) as TaskInstanceRecord;
    sent.length = 0;
    const [refused, landed] = await Promise.allSettled([
      store.transitionTask(
        c,
        finishTask({ ...stale, leaseToken: 'lost' }, { ok: true, advanceInline: true }, at),
      ),
      tentative(d, 'lease-d'),
    ]);
    expect(sent).toEqual(['BatchExecuteStatement']);
    expect(refused.status).toBe('rejected');
    expect(landed).toMatchObject({ status: 'fulfilled', value: { task: { tentative: 1 } } });
    expect(await store.settleTentative(d, 'lease-d', 'withdraw', at)).toEqual(pending);
  });

  it('sends an update PartiQL refuses on its own, as UpdateItem', async () => {
    const { store, table, sent } = await recordingStore();
    const [a, b] = (await fanOut(store, 2)) as [TaskKey, TaskKey];
    // b's item lacks the counter its count adds to: PartiQL's `+` refuses a missing operand,
    // where UpdateItem's ADD starts it at 0.
    await localClients().dynamodb.send(
      new UpdateCommand({
        TableName: table,
        Key: tableKeys.task(b.dagId, b.runId, b.taskId),
        UpdateExpression: 'REMOVE cSuccess',
      }),
    );
    sent.length = 0;
    const at = new Date(1000);
    const [qa, qb] = await Promise.all(
      [a, b].map((k) => store.recordUpstreamOutcome(k, 'root', 'success', 0, { queueAt: at })),
    );
    expect(sent).toEqual(['BatchExecuteStatement', 'UpdateItem']);
    for (const q of [qa, qb]) {
      expect(q).toMatchObject({ counted: true, task: { status: 'queued', attempt: 1 } });
      expect(q?.task.counts.success).toBe(1);
    }
    expect((await store.getTaskInstance(b))?.counts.success).toBe(1);
  });

  it('answers each update for itself: a refused one, a missing item, two to one item', async () => {
    const { store, sent } = await recordingStore();
    const at = new Date(1000);
    const keys = await fanOut(store, 4);
    const queued = await Promise.all(
      keys.map(
        async (k) =>
          (await store.recordUpstreamOutcome(k, 'root', 'success', 0, { queueAt: at })).task,
      ),
    );
    sent.length = 0;
    const [a, b, c, d] = keys as [TaskKey, TaskKey, TaskKey, TaskKey];
    const claim = (k: TaskKey, ti: TaskInstanceRecord, token: string) =>
      store.transitionTask(k, claimTask(ti, token, 60, at));
    const results = await Promise.allSettled([
      claim(a, queued[0] as TaskInstanceRecord, 'first'),
      // Expects an attempt the task is not at: refused, with the task as it is.
      claim(b, { ...(queued[1] as TaskInstanceRecord), attempt: 5 }, 'stale'),
      claim(c, queued[2] as TaskInstanceRecord, 'c'),
      claim({ ...d, taskId: 'nowhere' }, queued[3] as TaskInstanceRecord, 'none'),
      // A second claim of a's attempt, in the same turn: exactly one of the two wins.
      claim(a, queued[0] as TaskInstanceRecord, 'second'),
    ]);
    // The four items in one request; the second write to a on its own.
    expect(sent.sort()).toEqual(['BatchExecuteStatement', 'UpdateItem']);
    expect(results[2]).toMatchObject({
      status: 'fulfilled',
      value: { status: 'running', leaseToken: 'c' },
    });
    const refused = results[1] as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(ConflictError);
    expect((refused.reason as ConflictError).current).toMatchObject({
      status: 'queued',
      attempt: 1,
    });
    expect((results[3] as PromiseRejectedResult).reason).toBeInstanceOf(NotFoundError);
    const aWins = [results[0], results[4]].filter((r) => r?.status === 'fulfilled');
    expect(aWins).toHaveLength(1);
    const winner = (aWins[0] as PromiseFulfilledResult<TaskInstanceRecord>).value.leaseToken;
    expect((await store.getTaskInstance(a))?.leaseToken).toBe(winner);
    expect((await store.getTaskInstance(b))?.status).toBe('queued');
  });
});
