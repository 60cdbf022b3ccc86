import { MemoryStateStore } from '../../adapters/memory/store.ts';
import { stateStoreContract } from '../contract/state-store.contract.ts';

/** The in-memory store holds to the same contract as the DynamoDB one, in milliseconds. */
stateStoreContract('in memory', async () => new MemoryStateStore(), {
  holdCreationLease: async (store, run, token, until) => {
    (store as MemoryStateStore).holdCreationLease(run.dagId, run.runId, token, until);
  },
});
