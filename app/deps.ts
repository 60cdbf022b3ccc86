import type {
  BlobStore,
  EventPublisher,
  RetryTimers,
  ScheduleRegistry,
  StateStore,
  TaskDispatcher,
} from '../core/ports.ts';
import type { OperatorRegistry } from '../operators/registry.ts';

/**
 * Everything the application services use from outside: the ports, the operators, and the clock
 * and randomness (parameters, so that tests control them).
 */
export interface Deps {
  readonly store: StateStore;
  readonly dispatcher: TaskDispatcher;
  readonly blobs: BlobStore;
  readonly schedules: ScheduleRegistry;
  readonly timers: RetryTimers;
  readonly operators: OperatorRegistry;
  readonly clock: () => Date;
  readonly random: () => number;
  readonly newId: () => string;
  /** Counts a metric (core/metric-names.ts); the handlers pass Powertools Metrics. */
  readonly metrics?: { addMetric(name: string, unit: 'Count', value: number): unknown };
  /**
   * Whether DAGs may inject faults (core/faults.ts): only in a deployment synthesized with the
   * emulator-only switch. Off when absent.
   */
  readonly faultsEnabled?: boolean;
  /**
   * Whether this deployment has Fargate workers for `executor: "fargate"` tasks; without them
   * such DAGs are refused at registration.
   */
  readonly fargate?: boolean;
  /** Where run events go (core/events.ts); none are published when absent. */
  readonly events?: EventPublisher;
}
