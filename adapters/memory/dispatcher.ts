import type { TaskDispatcher, TaskMessage } from '../../core/ports.ts';

/**
 * A task queue in memory. It delivers nothing by itself: a test takes each message and runs the
 * worker on it, and can duplicate or drop messages to play the queue's failures (SQS delivers at
 * least once, and a message can be lost between the state write and the send).
 */
export class MemoryDispatcher implements TaskDispatcher {
  readonly #waiting: TaskMessage[] = [];
  readonly #sent: TaskMessage[] = [];

  async dispatch(messages: readonly TaskMessage[]): Promise<void> {
    for (const m of messages) {
      this.#waiting.push({ ...m });
      this.#sent.push({ ...m });
    }
  }

  /** Every message ever dispatched, in order, duplicates included. */
  get sent(): TaskMessage[] {
    return this.#sent.map((m) => ({ ...m }));
  }

  /** The messages waiting to be delivered, oldest first. */
  get waiting(): TaskMessage[] {
    return this.#waiting.map((m) => ({ ...m }));
  }

  /** Removes the waiting message at `index` (the oldest by default) to deliver it. */
  take(index = 0): TaskMessage | undefined {
    return this.#waiting.splice(index, 1)[0];
  }

  /** Every waiting message, oldest first; none waits afterwards. */
  takeAll(): TaskMessage[] {
    return this.#waiting.splice(0);
  }

  /** Delivers the message at `index` twice: a copy waits at the end of the queue. */
  duplicate(index = 0): boolean {
    const m = this.#waiting[index];
    if (m) this.#waiting.push({ ...m });
    return m !== undefined;
  }

  /** Loses the message at `index`, as a send that never happened. */
  drop(index = 0): TaskMessage | undefined {
    return this.take(index);
  }
}
