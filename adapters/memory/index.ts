/** The ports in memory: for unit and property tests of the application layer, no AWS needed. */
export { MemoryBlobStore } from './blobs.ts';
export { ManualClock, type MemoryDeps, type MemoryDepsOptions, memoryDeps } from './deps.ts';
export { MemoryDispatcher } from './dispatcher.ts';
export { MemoryScheduleRegistry } from './schedules.ts';
export { MemoryStateStore } from './store.ts';
export { MemoryRetryTimers } from './timers.ts';
