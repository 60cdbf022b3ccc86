import { MemoryBlobStore } from '../../adapters/memory/blobs.ts';
import { MemoryDispatcher } from '../../adapters/memory/dispatcher.ts';
import { MemoryScheduleRegistry } from '../../adapters/memory/schedules.ts';
import {
  blobStoreContract,
  dispatcherContract,
  scheduleRegistryContract,
} from '../contract/ports.contract.ts';

/** The smaller in-memory ports hold to the contracts of the AWS ones. */
blobStoreContract('in memory', async () => new MemoryBlobStore());

dispatcherContract('in memory', async () => {
  const dispatcher = new MemoryDispatcher();
  return { dispatcher, received: async () => dispatcher.takeAll() };
});

scheduleRegistryContract('in memory', async () => new MemoryScheduleRegistry());
