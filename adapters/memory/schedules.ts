import { NotFoundError } from '../../core/errors.ts';
import type { ScheduleRegistry, ScheduleSpec } from '../../core/ports.ts';

/** The schedule registry in memory: one schedule per DAG, as EventBridge Scheduler keeps them. */
export class MemoryScheduleRegistry implements ScheduleRegistry {
  readonly #schedules = new Map<string, ScheduleSpec>();

  async put(spec: ScheduleSpec): Promise<void> {
    this.#schedules.set(spec.dagId, { ...spec });
  }

  async get(dagId: string): Promise<ScheduleSpec | undefined> {
    const s = this.#schedules.get(dagId);
    return s ? { ...s } : undefined;
  }

  async setEnabled(dagId: string, enabled: boolean): Promise<void> {
    const s = this.#schedules.get(dagId);
    if (!s) throw new NotFoundError(`no schedule for DAG ${dagId}`);
    this.#schedules.set(dagId, { ...s, enabled });
  }

  async delete(dagId: string): Promise<void> {
    this.#schedules.delete(dagId);
  }
}
