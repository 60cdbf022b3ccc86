import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { clientConfig } from '../../adapters/aws/clients.ts';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import type { StateStore } from '../../core/ports.ts';
import { manualRunId } from '../../core/state/index.ts';
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

  it('counts 40 outcomes into one join in 3 writes, and 40 ends into one shard in 3', async () => {
    const { store, updates } = await countingStore();
    const ups = Array.from({ length: 40 }, (_, i) => `u${i}`);
    const dagId = `dag-${randomUUID().slice(0, 8)}`;
    const { run } = await store.createRun({
      dagId,
      runId: manualRunId(randomUUID()),
      dagVersion: 1,
      kind: 'manual',
      logicalDate: new Date(0),
      conf: {},
      tasks: [
        ...ups.map((taskId) => ({ taskId, upstreamCount: 0 })),
        { taskId: 'join', upstreamCount: 40 },
      ],
      at: new Date(0),
    });
    const join = { dagId, runId: run.runId, taskId: 'join' };
    // The first goes at once; the others wait for it, then go 25 (COALESCE_MAX) and 14.
    expect(
      await updates(() =>
        Promise.all(ups.map((u) => store.recordUpstreamOutcome(join, u, 'success', 0))),
      ),
    ).toBe(3);
    expect((await store.getTaskInstance(join))?.counts.success).toBe(40);
    expect(
      await updates(() =>
        Promise.all(
          ups.map((taskId) =>
            store.recordTaskFinished({ dagId, runId: run.runId, taskId }, true, 41, 0),
          ),
        ),
      ),
    ).toBe(3);
    // One at a time, each is its own write.
    const last = { dagId, runId: run.runId, taskId: 'join' };
    expect(await updates(() => store.recordTaskFinished(last, true, 41, 0))).toBe(1);
  });
});
