import type { Deps } from '../../app/deps.ts';
import { branch } from '../../operators/branch.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry } from '../../operators/registry.ts';
import { MemoryBlobStore } from './blobs.ts';
import { MemoryDispatcher } from './dispatcher.ts';
import { MemoryScheduleRegistry } from './schedules.ts';
import { MemoryStateStore } from './store.ts';
import { MemoryRetryTimers } from './timers.ts';

/** A clock that moves only when told: time is a parameter of every app service. */
export class ManualClock {
  #ms: number;

  constructor(start: Date) {
    this.#ms = start.getTime();
  }

  readonly now = (): Date => new Date(this.#ms);

  advance(seconds: number): Date {
    this.#ms += seconds * 1000;
    return this.now();
  }
}

export interface MemoryDepsOptions {
  /** @default a MemoryStateStore */
  readonly store?: MemoryStateStore;
  /** @default `noop` and `branch` (the others call AWS) */
  readonly operators?: OperatorRegistry;
  /** @default the wall clock */
  readonly clock?: () => Date;
  /** @default Math.random */
  readonly random?: () => number;
  /** @default UUID-shaped ids from a counter, so that a test's ids are the same every time */
  readonly newId?: () => string;
}

/** Deps whose ports are the in-memory ones, typed as such so that a test can drive them. */
export interface MemoryDeps extends Deps {
  readonly store: MemoryStateStore;
  readonly dispatcher: MemoryDispatcher;
  readonly blobs: MemoryBlobStore;
  readonly schedules: MemoryScheduleRegistry;
  readonly timers: MemoryRetryTimers;
}

export function memoryDeps(opts: MemoryDepsOptions = {}): MemoryDeps {
  let ids = 0;
  return {
    store: opts.store ?? new MemoryStateStore(),
    dispatcher: new MemoryDispatcher(),
    blobs: new MemoryBlobStore(),
    schedules: new MemoryScheduleRegistry(),
    timers: new MemoryRetryTimers(),
    operators: opts.operators ?? new OperatorRegistry().register(noop).register(branch),
    clock: opts.clock ?? (() => new Date()),
    random: opts.random ?? Math.random,
    newId:
      opts.newId ?? (() => `${(++ids).toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`),
  };
}
