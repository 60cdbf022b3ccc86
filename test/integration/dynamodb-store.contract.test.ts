import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { DynamoStateStore } from '../../adapters/aws/dynamodb.ts';
import { tableKeys } from '../../adapters/aws/table.ts';
import type { StateStore } from '../../core/ports.ts';
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
